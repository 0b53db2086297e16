"""The subscriber store on both backends: SQLite (a file, WAL) and PostgreSQL (Debian's, started by
the fixture in tests/conftest.py): one interface, the same answers."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from digest.errors import AddressInvalid, SendInProgress, StoreError, UsageError
from digest.subscribers.store import (
    MIGRATIONS,
    PostgresStore,
    SqliteStore,
    migration_statements,
    normalize_address,
    open_store,
    sign_expiring,
    sign_token,
    verify_expiring,
    verify_token,
)


@pytest.fixture
def store(store_location):
    opened = open_store(store_location)
    yield opened
    opened.close()


def test_open_store_picks_the_backend_from_the_location(store, store_location):
    assert isinstance(store, PostgresStore if store_location.startswith("postgresql://") else SqliteStore)
    assert len(store.secret()) == 32
    with pytest.raises(UsageError, match="postgresql://"):
        open_store("mysql://x/y")


def test_a_libpq_key_value_connection_string_opens_postgresql(postgres_dsn):
    # postgresql://postgres@127.0.0.1:PORT/NAME written as libpq's key=value pairs
    host_port, name = postgres_dsn.split("@", 1)[1].split("/")
    host, port = host_port.split(":")
    opened = open_store(f"host={host} port={port} dbname={name} user=postgres")
    assert isinstance(opened, PostgresStore) and opened.count() == 0
    opened.close()


def test_subscribers_are_added_found_listed_and_removed(store):
    one, created = store.add("One@Example.org", ("backprop", "tools"))
    two, _ = store.add("two@한국.kr", status="pending")
    assert created and one.address == "One@example.org" and two.address == "two@xn--3e0b707e.kr"
    found = store.find("one@EXAMPLE.org")
    assert found.id == one.id and found.topics == ("backprop", "tools") and found.created
    assert store.get(two.id).status == "pending" and store.get(10_000) is None
    assert [s.id for s in store.subscribers()] == [one.id, two.id]
    assert [s.id for s in store.subscribers("pending")] == [two.id]
    assert store.find("nobody@example.org") is None
    with pytest.raises(AddressInvalid):
        store.find("one@example.org\r\nBcc: x@example.org")
    store.queue("2016-W28", "outbox")
    assert store.remove(one.id) and not store.remove(one.id)
    assert store.count() == 1 and store.find("one@example.org") is None
    assert store.deliveries("2016-W28", "outbox") == []


def test_the_store_reopens_with_its_secret_and_schema(store_location):
    first = open_store(store_location)
    first.add("a@example.org")
    secret = first.secret()
    first.close()
    again = open_store(store_location)  # migrations are not run twice
    assert again.secret() == secret and again.count() == 1
    again.close()


def test_double_opt_in_confirms_once_within_the_lifetime(store):
    subscriber, confirmation = store.request_confirmation("reader@example.org", ("backprop",), 600, 3600)
    assert subscriber.status == "pending" and confirmation.subscriber_id == subscriber.id
    assert confirmation.expires >= time.time() + 3590
    again, none = store.request_confirmation("reader@example.org", ("tools",), 600, 3600)
    assert none is None and again.id == subscriber.id  # one confirmation per window
    outcome, confirmed = store.confirm(confirmation.id)
    assert outcome == "confirmed" and confirmed.status == "confirmed" and confirmed.topics == ("backprop",)
    assert store.confirm(confirmation.id) == ("used", None)
    assert store.confirm(987654) == ("unknown", None)
    _, expired = store.request_confirmation("late@example.org", (), 0, 0)
    assert store.confirm(expired.id) == ("expired", None)
    assert store.find("late@example.org").status == "pending"


def test_a_confirmed_reader_stays_confirmed_until_a_new_link_is_used(store):
    store.add("reader@example.org", ("backprop",))
    subscriber, confirmation = store.request_confirmation("reader@example.org", ("tools",), 0, 3600)
    assert subscriber.status == "confirmed" and subscriber.topics == ("backprop",)
    _, second = store.request_confirmation("reader@example.org", (), 0, 3600)
    assert store.confirm(confirmation.id)[1].topics == ("tools",)
    assert store.confirm(second.id) == ("used", None)  # one confirmation spends the others


def test_unsubscribing_voids_open_links_and_counts_once(store):
    subscriber, confirmation = store.request_confirmation("reader@example.org", (), 0, 3600)
    assert store.unsubscribe(subscriber.id) and not store.unsubscribe(subscriber.id)
    assert store.confirm(confirmation.id) == ("used", None)
    assert store.get(subscriber.id).status == "unsubscribed"
    assert not store.set_topics(subscriber.id, ("tools",))
    again, fresh = store.request_confirmation("reader@example.org", ("tools",), 0, 3600)
    assert again.status == "unsubscribed"  # asking changes nothing: only the mailed link does
    assert store.confirm(fresh.id)[0] == "confirmed"
    assert store.set_topics(subscriber.id, ("backprop", "tools")) and store.get(subscriber.id).topics == (
        "backprop", "tools")


def test_concurrent_requests_for_one_address_make_one_subscriber_and_one_confirmation(store_location):
    stores = [open_store(store_location) for _ in range(4)]
    made, errors = [], []

    def ask(s):
        try:
            for _ in range(5):
                made.append(s.request_confirmation("same@example.org", (), 600, 3600)[1])
        except StoreError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len([c for c in made if c is not None]) == 1
    assert stores[0].count() == 1
    for s in stores:
        s.close()


def test_the_ledger_works_the_same_on_both_backends(store):
    a, _ = store.add("a@example.org")
    b, _ = store.add("b@example.org", ("tools",))
    store.add("c@example.org", status="pending")
    assert store.queue("W", "smtp") == 2 and store.queue("W", "smtp") == 0
    pending = store.pending("W", "smtp", 0, 10)
    assert [s.id for s in pending] == [a.id, b.id] and pending[1].topics == ("tools",)
    assert store.begin_send("W", "smtp", a.id) and not store.begin_send("W", "smtp", a.id)
    store.finish("W", "smtp", a.id, "sent", "250 ok")
    store.unsubscribe(b.id)
    assert not store.begin_send("W", "smtp", b.id)
    store.queue("W", "smtp")
    assert store.counts("W", "smtp")["sent"] == 1 and store.counts("W", "smtp")["skipped"] == 1
    assert [d.state for d in store.deliveries("W", "smtp")] == ["sent", "skipped"]


def test_one_sender_at_a_time_per_issue_and_channel(store_location):
    first, second = open_store(store_location), open_store(store_location)
    with first.claim("W", "smtp"):
        with pytest.raises(SendInProgress), second.claim("W", "smtp"):
            pass
        with second.claim("W", "outbox"):
            pass
    with second.claim("W", "smtp"):
        pass
    first.close()
    second.close()


def test_a_version_1_sqlite_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    con.executescript(";".join(migration_statements(0, "sqlite")) + ";PRAGMA user_version=1;")
    con.execute("INSERT INTO meta VALUES ('secret', ?)", ("ab" * 32,))
    con.execute("INSERT INTO subscribers VALUES (1, 'a@example.org', 'a@example.org', 'confirmed', '', 'x', 'x')")
    con.commit()
    con.close()
    store = SqliteStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.secret() == bytes.fromhex("ab" * 32) and store.get(1).address == "a@example.org"
    assert store.request_confirmation("a@example.org", (), 0, 60)[1] is not None
    store.close()


def test_a_removed_subscribers_id_and_links_never_pass_to_the_next_one(store):
    alice, _ = store.add("alice@example.org")
    link = sign_token(store.secret(), "unsubscribe", alice.id)  # in every email alice got
    _, carols = store.request_confirmation("carol@example.org", (), 0, 3600)
    assert store.remove(alice.id) and store.remove(store.find("carol@example.org").id)
    bob, _ = store.add("bob@example.org")
    _, daves = store.request_confirmation("dave@example.org", (), 0, 3600)
    assert bob.id != alice.id and store.get(verify_token(store.secret(), "unsubscribe", link)) is None
    assert daves.id != carols.id and store.confirm(carols.id) == ("unknown", None)  # carol's link confirms nobody
    assert store.get(bob.id).status == "confirmed" and store.find("dave@example.org").status == "pending"


def test_a_version_2_sqlite_store_keeps_every_row_through_the_id_upgrade(tmp_path):
    path = tmp_path / "v2.sqlite3"
    con = sqlite3.connect(path)
    con.executescript(";".join(migration_statements(0, "sqlite") + migration_statements(1, "sqlite"))
                      + ";PRAGMA user_version=2;")
    con.execute("INSERT INTO meta VALUES ('secret', ?)", ("cd" * 32,))
    con.execute("INSERT INTO subscribers VALUES (7, 'a@example.org', 'a@example.org', 'confirmed', '', 'x', 'x')")
    con.execute("INSERT INTO subscriber_topics VALUES (7, 'backprop')")
    con.execute("INSERT INTO confirmations VALUES (3, 7, 'backprop', 1, 99999999999, NULL)")
    con.execute("INSERT INTO deliveries VALUES ('2016-W28', 'outbox', 7, 'sent', 1, '', 'x')")
    con.commit()
    con.close()
    store = SqliteStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.get(7).topics == ("backprop",) and store.counts("2016-W28", "outbox")["sent"] == 1
    assert store.confirm(3)[0] == "confirmed"
    assert store.remove(7) and store.add("b@example.org")[0].id == 8  # the removed largest id stays retired
    store.close()


def test_the_sqlite_store_is_readable_by_its_owner_only(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite3")
    store.add("a@example.org")
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {
        "s.sqlite3": 0o600, "s.sqlite3-wal": 0o600, "s.sqlite3-shm": 0o600}
    store.close()


def test_a_store_from_a_newer_digest_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    SqliteStore(path).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer digest"):
        SqliteStore(path)


def test_an_unreachable_postgresql_is_one_clear_error_without_the_password():
    with pytest.raises(StoreError, match=r"cannot connect .*postgresql://u:\*\*\*@127\.0\.0\.1:1/x"):
        open_store("postgresql://u:secret@127.0.0.1:1/x")


def test_expiring_tokens_refuse_forged_tampered_and_expired():
    secret = b"k" * 32
    token = sign_expiring(secret, "confirm", 42, int(time.time()) + 60)
    assert verify_expiring(secret, "confirm", token) == (42, "")
    assert verify_expiring(secret, "unsubscribe", token) == (None, "forged")
    assert verify_expiring(b"x" * 32, "confirm", token) == (None, "forged")
    ident, expires, mac = token.split(".")
    later = sign_expiring(secret, "confirm", 42, int(expires, 16) + 10**6).split(".")[1]
    assert verify_expiring(secret, "confirm", f"{ident}.{later}.{mac}") == (None, "forged")
    assert verify_expiring(secret, "confirm", f"2b.{expires}.{mac}") == (None, "forged")
    assert verify_expiring(secret, "confirm", token, now=time.time() + 120) == (42, "expired")
    for junk in ("", "a.b", "x.y.z", "1.2.3.4", "'; DROP TABLE subscribers;--", "1." * 100):
        assert verify_expiring(secret, "confirm", junk)[0] is None


@pytest.mark.parametrize("address", ["a@exаmple.com", "ａ@example.com", "a\u200b@example.org", "Name <a@b.org>",
                                     "a@example.org\r\nBcc: b@example.org", "x" * 250 + "@example.org",
                                     "x'); DROP TABLE subscribers;--@example.org", "Ünï@example.org"])
def test_addresses_with_confusable_invisible_or_injected_text_are_refused(address):
    with pytest.raises(AddressInvalid):
        normalize_address(address)


def test_idn_domains_are_stored_as_punycode():
    assert normalize_address("reader@한국.kr") == "reader@xn--3e0b707e.kr"
    assert normalize_address("x@münchen.de") == "x@xn--mnchen-3ya.de"


def test_unconfirmed_web_sign_ups_are_erased_a_week_after_their_link_expired(store):
    _, stale = store.request_confirmation("typed-by-someone@example.org", (), 0, 3600)
    store.request_confirmation("still-deciding@example.org", (), 0, 3600)
    store.add("imported@example.org", status="pending")  # the admin's pending rows are the admin's
    store.add("reader@example.org")
    with store._tx() as execute:  # the first link expired eight days ago
        execute("UPDATE confirmations SET expires_at=? WHERE id=?", (int(time.time()) - 8 * 86400, stale.id))
    assert store.purge_unconfirmed() == 1
    assert store.find("typed-by-someone@example.org") is None and store.confirm(stale.id) == ("unknown", None)
    assert {s.address for s in store.subscribers()} == {
        "still-deciding@example.org", "imported@example.org", "reader@example.org"}
    assert store.purge_unconfirmed() == 0
