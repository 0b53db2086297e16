"""Two `digest serve` processes on one PostgreSQL: each reader confirms on one server while the
one-click unsubscribe of their first digest arrives on the other, 1,000 readers at once. Before one
lock order about 1 pair in 90 deadlocked; the loser was answered 503, and when it was the one-click
the reader stayed subscribed."""

from __future__ import annotations

import concurrent.futures

import httpx
import psycopg
from mailkit import write_content
from servekit import csrf_of, start_server

from digest.subscribers.store import open_store

PAIRS = 1_000
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_concurrent_confirm_and_one_click_on_two_servers_answer_no_error_and_lose_no_unsubscribe(
        postgres_dsn, tmp_path):
    store = open_store(postgres_dsn)
    keys = store.keyring()
    readers = []  # (confirm token, unsubscribe token)
    for i in range(PAIRS):
        subscriber, confirmation = store.request_confirmation(f"pair{i}@example.org", (), 600, 3600)
        readers.append((keys.sign_expiring("confirm", confirmation.id, confirmation.expires),
                        keys.sign("unsubscribe", subscriber.id)))
    content = write_content(tmp_path)
    confirming, unsubscribing = (start_server(tmp_path, content, postgres_dsn) for _ in range(2))
    try:
        with httpx.Client(base_url=unsubscribing.url, timeout=30) as click_client:
            def confirm(token: str) -> int:  # a browser of its own: the page's CSRF token is bound to its cookie
                with httpx.Client(base_url=confirming.url, timeout=30) as browser:
                    csrf = csrf_of(browser.get(f"confirm/{token}").text)
                    return browser.post(f"confirm/{token}", data={"csrf": csrf}).status_code

            def click(token: str) -> int:
                return click_client.post(f"unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                                         headers=FORM).status_code

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                confirms = [pool.submit(confirm, c) for c, _ in readers]
                clicks = [pool.submit(click, u) for _, u in readers]
                confirmed = [f.result() for f in confirms]
                clicked = [f.result() for f in clicks]
    finally:
        confirming.stop()
        unsubscribing.stop()
    assert clicked == [200] * PAIRS  # every one-click took effect
    assert not [s for s in confirmed if s >= 500] and set(confirmed) <= {200, 409}  # 409: after the click
    assert store.count("unsubscribed") == PAIRS and store.count("confirmed") == 0
    for server in (confirming, unsubscribing):
        assert "Traceback" not in server.log_text() and "deadlock" not in server.log_text()
    store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as con:  # the servers left no connection behind
        left = con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()").fetchone()[0]
    assert left == 0
