"""Load and faults, bounded and on loopback only (issue 8's acceptance).

    - 50 concurrent clients make 5,000 requests of the whole life of 1,000 addresses (subscribe,
      subscribe again, open the confirm link, confirm, open the unsubscribe page, one-click
      unsubscribe, and once more): every accepted change is in the store, none twice.
    - `kill -9` of the server while clients subscribe and confirm, then a restart on the same
      store: it passes an integrity check, every confirmation a client saw succeed is there, the
      store's rows agree with each other, and the interrupted clients finish.

The clients read each confirmation's id from the store (the mail would say the same) and sign
the link with the store's key, as `digest send` and the service do.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import threading
import time

import httpx
import pytest
from mailkit import write_content
from servekit import SITE_ORIGIN, start_server

from digest.subscribers.store import open_store, sign_expiring, sign_token

CLIENTS = 50
ADDRESSES = 1000
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Life:
    """One address's trip through the service; counts what the server accepted."""

    def __init__(self, store_path: str, secret: bytes):
        self.db = sqlite3.connect(store_path, check_same_thread=False, timeout=30)
        self.lock = threading.Lock()
        self.secret = secret
        self.requests = 0
        self.resumed = False  # after a kill: a confirmation may have been used by the attempt that died
        self.accepted: dict[str, set[str]] = {"confirmed": set(), "unsubscribed": set()}

    def confirmation(self, address: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT c.id, c.expires_at FROM confirmations c JOIN subscribers s ON "
                                  "s.id = c.subscriber_id WHERE s.address_key = ? ORDER BY c.id DESC LIMIT 1",
                                  (address.lower(),)).fetchone()
        return sign_expiring(self.secret, "confirm", *row) if row else None

    def subscriber_id(self, address: str) -> int:
        with self.lock:
            return self.db.execute("SELECT id FROM subscribers WHERE address_key=?", (address.lower(),)).fetchone()[0]

    async def call(self, client: httpx.AsyncClient, method: str, url: str, ok=(200,), **kwargs) -> httpx.Response:
        self.requests += 1
        response = await client.request(method, url, **kwargs)
        assert response.status_code in ok, (method, url, response.status_code, response.text[-300:])
        return response

    async def run(self, client: httpx.AsyncClient, address: str, unsubscribe: bool) -> None:
        site = {"Origin": SITE_ORIGIN}
        await self.call(client, "POST", "subscribe", data={"email": address}, headers=site)
        await self.call(client, "POST", "subscribe", data={"email": address, "topic": "tools"}, headers=site)
        token = await self._token(address)
        page = await self.call(client, "GET", f"confirm/{token}")
        form = re.search(r'name="csrf" value="([^"]+)"', page.text)
        if form is None:  # confirmed before the kill (its reply lost): the link's page says so, no button
            assert self.resumed and "이미 확인된 구독입니다" in page.text, page.text[-300:]
        else:
            await self.call(client, "POST", f"confirm/{token}", (200, 409) if self.resumed else (200,),
                            data={"csrf": form[1]})
        self.accepted["confirmed"].add(address)
        if unsubscribe:
            url = f"unsubscribe/{sign_token(self.secret, 'unsubscribe', self.subscriber_id(address))}"
            await self.call(client, "GET", url)
            for _ in range(2):
                await self.call(client, "POST", url, content=b"List-Unsubscribe=One-Click", headers=FORM)
            self.accepted["unsubscribed"].add(address)

    async def _token(self, address: str) -> str:
        for _ in range(200):
            if token := self.confirmation(address):
                return token
            await asyncio.sleep(0.01)
        raise AssertionError("no confirmation recorded")


async def drive(url: str, life: Life, addresses: list[str], clients: int, stop: asyncio.Event | None = None):
    """``clients`` workers take addresses off one queue; those a failure interrupted are returned."""
    queue: asyncio.Queue = asyncio.Queue()
    for i, address in enumerate(addresses):
        queue.put_nowait((address, i % 2 == 0))
    interrupted: list[str] = []

    async def worker():  # one client: its own connection and cookie, like one browser
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1), timeout=30) as client:
            while not queue.empty() and not (stop and stop.is_set()):
                address, unsubscribe = queue.get_nowait()
                try:
                    await life.run(client, address, unsubscribe)
                except (httpx.TransportError, AssertionError):
                    interrupted.append(address)
                    if stop is None:
                        raise
    await asyncio.gather(*(worker() for _ in range(clients)))
    return interrupted + [address for address, _ in queue._queue]  # noqa: SLF001 - the ones never started


@pytest.fixture
def server(tmp_path):
    store = str(tmp_path / "var" / "subscribers.sqlite3")
    served = start_server(tmp_path, write_content(tmp_path), store, DIGEST_SERVE_ADDRESS_LIMIT="10/3600")
    yield served
    served.stop()


def test_fifty_clients_five_thousand_requests_every_change_once(server):
    store = open_store(server.store)
    life = Life(server.store, store.secret())
    addresses = [f"load{i}@example.org" for i in range(ADDRESSES)]
    started = time.monotonic()
    assert asyncio.run(drive(server.url, life, addresses, CLIENTS)) == []
    elapsed = time.monotonic() - started
    assert life.requests >= 5000
    assert store.count() == ADDRESSES  # nobody twice
    assert {s.address for s in store.subscribers("unsubscribed")} == life.accepted["unsubscribed"]
    assert {s.address for s in store.subscribers("confirmed")} == life.accepted["confirmed"] - \
        life.accepted["unsubscribed"]
    assert all(s.topics == () for s in store.subscribers("confirmed"))  # the first request's link was used
    with sqlite3.connect(server.store) as db:  # one confirmation per address: the second came within the window
        assert db.execute("SELECT count(*), count(DISTINCT subscriber_id) FROM confirmations").fetchone() == (
            ADDRESSES, ADDRESSES)
    time.sleep(0.2)
    log = server.log_text()
    assert len(re.findall(r"unsubscribed subscriber #\d+ \(one-click\)", log)) == ADDRESSES // 2  # once each
    assert len(re.findall(r"^digest serve: confirmed ", log, re.M)) == ADDRESSES
    print(f"\n{life.requests} requests from {CLIENTS} clients in {elapsed:.1f}s ({life.requests / elapsed:.0f}/s)")
    store.close()


def test_kill_9_mid_load_loses_no_confirmed_subscriber(server, tmp_path):
    store = open_store(server.store)
    life = Life(server.store, store.secret())
    addresses = [f"kill{i}@example.org" for i in range(300)]

    async def load_then_kill():
        stop = asyncio.Event()

        async def killer():
            while len(life.accepted["confirmed"]) < 60:
                await asyncio.sleep(0.01)
            os.kill(server.process.pid, signal.SIGKILL)
            await asyncio.sleep(0.5)
            stop.set()
        kill = asyncio.create_task(killer())
        left = await drive(server.url, life, addresses, 20, stop)
        await kill
        return left

    left = asyncio.run(load_then_kill())
    assert server.process.wait(timeout=10) == -signal.SIGKILL and left
    seen = set(life.accepted["confirmed"])
    with sqlite3.connect(server.store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        confirmed = {a for (a,) in db.execute("SELECT address FROM subscribers WHERE status='confirmed'")}
        unsubscribed = {a for (a,) in db.execute("SELECT address FROM subscribers WHERE status='unsubscribed'")}
        assert seen - unsubscribed <= confirmed  # every confirmation a client saw succeed is there
        orphans = db.execute("SELECT count(*) FROM subscribers s WHERE s.status != 'pending' AND NOT EXISTS "
                             "(SELECT 1 FROM confirmations c WHERE c.subscriber_id = s.id AND c.used_at IS NOT NULL)")
        assert orphans.fetchone()[0] == 0  # nobody confirmed without a used link
        assert db.execute("SELECT count(*) FROM confirmations c LEFT JOIN subscribers s ON s.id = c.subscriber_id "
                          "WHERE s.id IS NULL").fetchone()[0] == 0

    restarted = start_server(server.cwd, server.cwd / "content", server.store,
                             port=int(server.url.rsplit(":", 1)[1].strip("/")))
    try:
        rest = [a for a in addresses if a not in seen]
        life.resumed = True
        assert asyncio.run(drive(restarted.url, life, rest, 20)) == []  # the interrupted finish after restart
        assert {s.address for s in store.subscribers("confirmed")} | {
            s.address for s in store.subscribers("unsubscribed")} == set(addresses)
    finally:
        restarted.stop()
    store.close()
