"""The store's side of `digest bounces` on both backends: each mailbox message applied once; a
bounce or complaint suppresses (no longer confirmed, not re-added by the operator, skipped by the
send); soft bounces count within their window; the reader's own confirmation lifts it."""

from __future__ import annotations

import time

import pytest

from digest.subscribers.store import open_store


@pytest.fixture
def store(store_location):
    store = open_store(store_location)
    yield store
    store.close()


def test_a_hard_bounce_suppresses_once_and_survives_the_operators_import(store):
    reader = store.add("reader@example.org")[0]
    assert store.apply_bounce("m1", "bounced", reader.id) == "suppressed"
    assert store.apply_bounce("m1", "bounced", reader.id) == "already applied"
    assert store.apply_bounce("m2", "bounced", reader.id) == "already suppressed"
    assert store.get(reader.id).status == "unsubscribed" and store.suppression("reader@example.org") == "bounced"
    assert store.queue("2016-W28", "smtp") == 0  # the send has nobody to queue
    outcome = store.add_many([("reader@example.org", (), "confirmed")], source="import:list.csv")
    assert outcome.skipped == {"bounced": 1} and store.get(reader.id).status == "unsubscribed"


def test_a_complaint_outranks_an_unsubscribe_and_a_bounce(store):
    reader = store.add("reader@example.org")[0]
    assert store.apply_bounce("u", "unsubscribed", reader.id) == "unsubscribed"
    assert store.apply_bounce("c", "complained", reader.id) == "suppressed"
    assert store.apply_bounce("b", "bounced", reader.id) == "already suppressed"
    assert store.suppression_counts() == {"unsubscribed": 0, "bounced": 0, "complained": 1}


def test_soft_bounces_count_within_the_window_then_suppress(store):
    reader = store.add("reader@example.org")[0]
    now = time.time()
    assert store.apply_bounce("s0", "soft", reader.id, 3, 30, now=now - 40 * 86400) == "counted 1 of 3"
    assert store.apply_bounce("s1", "soft", reader.id, 3, 30, now=now) == "counted 1 of 3"  # s0 is too old
    assert store.apply_bounce("s2", "soft", reader.id, 3, 30, now=now) == "counted 2 of 3"
    assert store.get(reader.id).status == "confirmed"
    assert store.apply_bounce("s3", "soft", reader.id, 3, 30, now=now) == "suppressed"
    assert store.suppression("reader@example.org") == "bounced"


def test_what_applies_to_nobody_is_only_recorded(store):
    reader = store.add("reader@example.org")[0]
    assert store.apply_bounce("f", "forged", None) == "recorded"
    assert store.apply_bounce("a", "autoreply", reader.id) == "recorded"
    assert store.apply_bounce("f", "forged", None) == "already applied"
    assert store.get(reader.id).status == "confirmed" and sum(store.suppression_counts().values()) == 0


def test_the_readers_own_confirmation_lifts_a_bounce(store):
    reader = store.add("reader@example.org")[0]
    store.apply_bounce("m1", "bounced", reader.id)
    _, confirmation = store.request_confirmation("reader@example.org", (), 600, 3600)
    assert store.confirm(confirmation.id)[0] == "confirmed"
    assert store.suppression("reader@example.org") is None and store.get(reader.id).status == "confirmed"


def test_what_digest_bounces_applies_counts_in_the_rates_of_the_issue_it_names(store_location):
    store = open_store(store_location)
    readers = [store.add(f"r{i}@example.org")[0] for i in range(4)]
    store.queue("2016-W28", "smtp")
    for reader in readers:
        assert store.begin_send("2016-W28", "smtp", reader.id)
        store.finish("2016-W28", "smtp", reader.id, "sent")
    store.apply_bounce("m1", "bounced", readers[0].id, issue="2016-W28")
    store.apply_bounce("m2", "complained", readers[1].id)  # no token: the latest issue they were sent
    store.apply_bounce("m3", "soft", readers[2].id, issue="2016-W28")
    store.apply_bounce("m3", "soft", readers[2].id, issue="2016-W28")  # the same message again: counted once
    store.apply_bounce("m4", "unsubscribed", readers[3].id, issue="2016-W28")
    rates = store.issue_rates("2016-W28", "smtp")
    assert (rates.sent, rates.hard_bounced, rates.soft_bounced, rates.complained, rates.unsubscribed) == (4, 1, 1, 1, 1)
    assert rates.complaint_rate == 0.25
    store.close()
