"""Two processes on one real PostgreSQL: one confirms readers while the other unsubscribes the same
readers at the same moment (a reader who clicks the confirmation link, then one-click unsubscribe in
the digest, from two servers). Before one lock order, about 1 pair in 90 deadlocked and the loser,
sometimes the unsubscribe, was lost."""

from __future__ import annotations

import multiprocessing as mp
import time

import psycopg

from digest.subscribers.store import open_store

PAIRS = 300


def _worker(dsn: str, action: str, ids: list[int], start_at: float, results) -> None:
    store = open_store(dsn)
    errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    for ident in ids:
        try:
            store.confirm(ident) if action == "confirm" else store.unsubscribe(ident)
        except Exception as exc:  # counted, and named in the assertion below
            errors += 1
            results.put(f"{action}: {type(exc).__name__}: {exc}")
    store.close()
    results.put(errors)


def test_concurrent_confirm_and_one_click_unsubscribe_never_fail_and_never_lose_the_unsubscribe(postgres_dsn):
    store = open_store(postgres_dsn)
    pairs = []  # (confirmation id, subscriber id) of PAIRS readers with an open link each
    for i in range(PAIRS):
        subscriber, confirmation = store.request_confirmation(f"reader{i}@example.org", (), 600, 3600)
        pairs.append((confirmation.id, subscriber.id))
    context = mp.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 2
    workers = [context.Process(target=_worker, args=(postgres_dsn, "confirm", [c for c, _ in pairs], start_at,
                                                     results)),
               context.Process(target=_worker, args=(postgres_dsn, "unsubscribe", [s for _, s in pairs], start_at,
                                                     results))]
    for worker in workers:
        worker.start()
    reports = []
    while sum(isinstance(r, int) for r in reports) < 2:
        reports.append(results.get(timeout=120))
    for worker in workers:
        worker.join(timeout=30)
    assert [r for r in reports if isinstance(r, str)] == [] and sum(r for r in reports if isinstance(r, int)) == 0
    # every unsubscribe took effect: the one who confirmed first is unsubscribed by the click after it,
    # and a confirmation after the click finds its link spent
    assert store.count("unsubscribed") == PAIRS and store.count("confirmed") == 0
    store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as con:  # nothing left open behind the workers
        idle = con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()").fetchone()[0]
    assert idle == 0
