"""Rate limits of the service: token buckets, in memory or shared through the store.

    TokenBucket    one process: at most ``count`` at once, refilled at count per ``seconds``;
                   O(1) per hit, at most ``max_keys`` keys (the least recently seen go first)
    SharedBucket   the same rule kept in the store (PostgreSQL): it holds across every process
                   of the deployment, which per-process limits would multiply
    limiter(...)   the shared one where the store is shared by several processes, else in memory

A token bucket has no window edge: a burst at the end of one minute and another at the start of
the next cannot pass twice the limit (over any time T at most count + T x rate get through).
Keys are client IPs and keyed hashes of addresses, never addresses.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from digest.subscribers.store import SubscriberStore


class TokenBucket:
    """Per process. Used from the event loop only, so it needs no lock."""

    blocking = False  # hit() does no I/O: call it on the event loop

    def __init__(self, count: int, seconds: float, max_keys: int = 100_000):
        self.capacity, self.rate, self.max_keys = float(count), count / seconds, max_keys
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, when)

    def hit(self, key: str, now: float | None = None) -> float:
        """0 when allowed (and counted), else the seconds until the key may try again."""
        now = time.monotonic() if now is None else now
        tokens, then = self.buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + max(0.0, now - then) * self.rate)
        taken = tokens >= 1
        self.buckets[key] = (tokens - 1 if taken else tokens, now)  # the newest at the end
        if len(self.buckets) > self.max_keys:  # a flood of new keys: forget the one idle longest
            self.buckets.popitem(last=False)
        return 0.0 if taken else (1 - tokens) / self.rate


class SharedBucket:
    """Kept in the store under ``name:key``: every process of the deployment counts into one bucket."""

    blocking = True  # hit() asks the database: call it on a worker thread

    def __init__(self, store: SubscriberStore, name: str, count: int, seconds: float):
        self.store, self.name, self.capacity, self.rate = store, name, float(count), count / seconds

    def hit(self, key: str) -> float:
        return self.store.take_token(f"{self.name}:{key}", self.capacity, self.rate)


def limiter(store: SubscriberStore, name: str, count: int, seconds: float) -> TokenBucket | SharedBucket:
    if store.shared:
        return SharedBucket(store, name, count, seconds)
    return TokenBucket(count, seconds)
