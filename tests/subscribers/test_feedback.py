"""Feedback per issue, ambiguous subsets and webhook replays in the store, on SQLite and PostgreSQL (#27)."""

from __future__ import annotations

import sqlite3

import pytest

from digest.errors import UsageError
from digest.subscribers.store import (
    AMBIGUOUS_AFTER,
    AMBIGUOUS_BEFORE,
    MIGRATIONS,
    migration_statements,
    open_store,
)

WEEK, PREVIOUS = "2016-W28", "2016-W26"


@pytest.fixture
def store(store_location):
    opened = open_store(store_location)
    yield opened
    opened.close()


def sent(store, issue, channel, ids):
    store.queue(issue, channel)
    for subscriber_id in ids:
        assert store.begin_send(issue, channel, subscriber_id)
        store.finish(issue, channel, subscriber_id, "sent", "250 ok")


def test_feedback_counts_once_per_reader_and_issue_and_suppresses_what_it_should(store):
    ids = [store.add(f"r{i}@example.org")[0].id for i in range(8)]
    sent(store, PREVIOUS, "smtp", ids)
    sent(store, WEEK, "smtp", ids[:6])
    assert store.channels(WEEK) == ["smtp"] and store.channels("2016-W01") == []
    assert store.previous_issue(WEEK, "smtp") == PREVIOUS and store.previous_issue(PREVIOUS, "smtp") is None
    assert store.record_feedback(ids[0], WEEK, "complaint", "test")
    assert not store.record_feedback(ids[0], WEEK, "complaint", "test")
    assert store.record_feedback(ids[1], None, "hard_bounce")  # the latest issue sent to them: WEEK
    assert store.record_feedback(ids[6], None, "soft_bounce")  # not sent WEEK: PREVIOUS
    assert store.record_feedback(ids[2], None, "soft_bounce")
    assert store.unsubscribe(ids[3])
    assert not store.record_feedback(999_999, None, "complaint")  # nobody: nothing attributed, nothing breaks
    with pytest.raises(UsageError):
        store.record_feedback(ids[4], WEEK, "spam")
    week = store.issue_rates(WEEK, "smtp")
    assert (week.sent, week.hard_bounced, week.soft_bounced, week.complained, week.unsubscribed) == (6, 1, 1, 1, 1)
    assert abs(week.complaint_rate - 1 / 6) < 1e-12
    previous = store.issue_rates(PREVIOUS, "smtp")
    assert (previous.sent, previous.soft_bounced, previous.complained) == (8, 1, 0)
    assert store.suppression_counts() == {"unsubscribed": 1, "bounced": 1, "complained": 1}
    assert [s.status for s in store.subscribers()][:4] == ["unsubscribed", "unsubscribed", "confirmed", "unsubscribed"]
    assert store.queue("2016-W29", "smtp") == 5  # the complainer and the bounced address get no more mail


def test_resend_ambiguous_takes_one_kind_by_when_the_sender_stopped(store):
    ids = [store.add(f"a{i}@example.org")[0].id for i in range(5)]
    store.queue(WEEK, "smtp")
    for subscriber_id, reply in zip(ids, [f"{AMBIGUOUS_BEFORE}: x", f"{AMBIGUOUS_BEFORE}: y", f"{AMBIGUOUS_AFTER}: z",
                                          "the sender stopped after the end of the message", "sent"], strict=True):
        store.begin_send(WEEK, "smtp", subscriber_id)
        store.finish(WEEK, "smtp", subscriber_id, "sent" if reply == "sent" else "ambiguous", reply)
    assert store.resend_ambiguous(WEEK, "smtp", "after-end") == 1
    assert store.resend_ambiguous(WEEK, "smtp", "before-end") == 2
    assert store.counts(WEEK, "smtp")["ambiguous"] == 1  # the older digest's reason: only 'all' takes it
    assert store.resend_ambiguous(WEEK, "smtp") == 1
    with pytest.raises(UsageError):
        store.resend_ambiguous(WEEK, "smtp", "sometime")


def test_a_webhook_message_is_taken_once_and_can_be_released(store):
    assert store.take_webhook_message("m-1", 3600)
    assert not store.take_webhook_message("m-1", 3600)
    store.release_webhook_message("m-1")
    assert store.take_webhook_message("m-1", 3600)


def test_a_store_of_the_previous_schema_upgrades_with_its_ledger_kept(tmp_path):
    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    statements = [s for n in range(len(MIGRATIONS) - 1) for s in migration_statements(n, "sqlite")]
    con.executescript(";".join(statements) + f";PRAGMA user_version={len(MIGRATIONS) - 1};")
    con.close()
    store = open_store(path)
    subscriber = store.add("old@example.org")[0]
    sent(store, WEEK, "smtp", [subscriber.id])
    assert store.record_feedback(subscriber.id, None, "complaint")
    assert store.issue_rates(WEEK, "smtp").complained == 1
    store.close()
