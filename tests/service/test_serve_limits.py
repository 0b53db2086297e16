"""Rate limits that hold: bounded memory at any number of keys, no doubling at a window's edge, and
on PostgreSQL one limit across every server (each process counting alone let two servers take 60
form posts from one IP where the limit was 30)."""

from __future__ import annotations

import concurrent.futures

import httpx
from mailkit import write_content
from servekit import csrf_of, start_server

from digest.service.limits import TokenBucket
from digest.subscribers.store import open_store


def test_a_flood_of_new_keys_keeps_the_memory_bound_and_the_active_keys_limited():
    bucket = TokenBucket(3, 60, max_keys=1_000)
    for _ in range(3):
        assert bucket.hit("the-abuser", now=0.0) == 0.0
    for n in range(200_000):  # each new key costs the same; the oldest idle ones are forgotten
        bucket.hit(f"passer-by-{n}", now=1.0)
        if n % 500 == 0:
            assert bucket.hit("the-abuser", now=1.0) > 0  # seen recently: never the one forgotten
    assert len(bucket.buckets) == 1_000


def test_a_burst_at_the_edge_of_a_minute_passes_the_limit_once_not_twice():
    bucket = TokenBucket(30, 60)
    before_the_edge = sum(bucket.hit("ip", now=59.9) == 0 for _ in range(30))
    after_the_edge = sum(bucket.hit("ip", now=60.1) == 0 for _ in range(30))  # fixed windows reset here
    assert (before_the_edge, after_the_edge) == (30, 0)
    assert bucket.hit("ip", now=62.2) == 0 and bucket.hit("ip", now=62.2) > 0  # refilled at 30 a minute


def test_a_wait_is_how_long_until_the_next_token():
    bucket = TokenBucket(5, 3600)
    assert [bucket.hit("a", now=0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.hit("a", now=0.0) == 720.0 and bucket.hit("a", now=720.0) == 0.0


def test_two_servers_on_one_postgresql_share_one_limit_per_ip(postgres_dsn, tmp_path):
    content = write_content(tmp_path)
    limit = {"DIGEST_SERVE_IP_LIMIT": "30/3600", "DIGEST_SERVE_ADDRESS_LIMIT": "1000/60"}  # no refill mid-test
    servers = [start_server(tmp_path, content, postgres_dsn, **limit) for _ in range(2)]
    try:
        def post(n: int) -> int:
            server = servers[n % 2]
            with httpx.Client(base_url=server.url, timeout=20) as client:
                csrf = csrf_of(client.get("subscribe").text)
                return client.post("subscribe", data={"email": f"r{n}@example.org", "csrf": csrf}).status_code

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(post, range(60)))
    finally:
        for server in servers:
            server.stop()
    assert (statuses.count(200), statuses.count(429)) == (30, 30)
    store = open_store(postgres_dsn)
    assert store.count("pending") == 30  # the refused posts changed nothing
    store.close()
