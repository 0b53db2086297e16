"""Four `digest serve` processes on one PostgreSQL that allows 40 connections, under load: each
process keeps to its pool (DIGEST_STORE_POOL), so none is refused a connection and no reader's
one-click unsubscribe is answered 503. Before the pool each worker thread held a connection of its
own (about 43 per process), and a third loaded server already met "too many clients"."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from conftest import running_postgres
from mailkit import write_content
from servekit import start_server

from digest.subscribers.store import open_store

SERVERS, CLIENTS_PER_SERVER, READERS_PER_CLIENT = 4, 20, 10
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def small_postgres():
    with running_postgres(max_connections=40) as server:
        yield server


def test_four_loaded_servers_stay_within_forty_connections_and_answer_every_one_click(small_postgres, tmp_path):
    dsn, server_log = small_postgres
    store = open_store(dsn)
    readers = [store.add(f"reader{i}@example.org")[0].id
               for i in range(SERVERS * CLIENTS_PER_SERVER * READERS_PER_CLIENT)]
    keys = store.keyring()
    tokens = [keys.sign("unsubscribe", ident) for ident in readers]
    content = write_content(tmp_path)
    servers = [start_server(tmp_path, content, dsn) for _ in range(SERVERS)]
    try:
        def client(number: int) -> list[int]:
            server = servers[number % SERVERS]
            mine = tokens[number * READERS_PER_CLIENT:(number + 1) * READERS_PER_CLIENT]
            with httpx.Client(base_url=server.url, timeout=30) as http:
                return [http.post(f"unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                                  headers=FORM).status_code for token in mine]

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(SERVERS * CLIENTS_PER_SERVER) as pool:
            statuses = [s for answers in pool.map(client, range(SERVERS * CLIENTS_PER_SERVER)) for s in answers]
        elapsed = time.monotonic() - started
    finally:
        for server in servers:
            server.stop()
    assert statuses.count(200) == len(readers), {s: statuses.count(s) for s in set(statuses)}
    assert store.count("unsubscribed") == len(readers)
    assert "too many clients" not in server_log.read_text(errors="replace")
    assert all("Traceback" not in server.log_text() for server in servers)
    store.close()
    print(f"{len(readers)} one-click unsubscribes on {SERVERS} servers in {elapsed:.1f} s")
