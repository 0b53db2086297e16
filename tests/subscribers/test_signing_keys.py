"""Link-signing keys on both backends (#23 defect 8): a store from before keys could rotate keeps
its links, `rotate_signing_key` signs new links with a new key, links signed before verify for the
kept days and then are refused (0: at once), and neither the log key (keyed hashes) nor the
suppressions change."""

from __future__ import annotations

import sqlite3
import threading
import time

import psycopg
import pytest

from digest.errors import StoreError
from digest.subscribers.store import (
    SIGNING_KEYS_MIGRATION,
    keyed_hash,
    migration_statements,
    open_store,
    sign_expiring,
    sign_token,
    verify_token,
)

DAY = 86400
OLD_SECRET = "ab" * 32


@pytest.fixture
def store(store_location):
    opened = open_store(store_location)
    yield opened
    opened.close()


def _old_schema(store_location: str) -> None:
    """The store as the release before signing keys wrote it: schema SIGNING_KEYS_MIGRATION - 1,
    one subscriber, and the secret that signed every link."""
    dialect = "postgresql" if store_location.startswith("postgresql") else "sqlite"
    statements = [s for n in range(SIGNING_KEYS_MIGRATION - 1) for s in migration_statements(n, dialect)]
    rows = [("INSERT INTO meta VALUES ('secret', %s)", (OLD_SECRET,)),
            ("INSERT INTO meta VALUES ('suppression_key', %s)", ("cd" * 32,)),
            ("INSERT INTO subscribers (id, address, address_key, status, source, created, changed) "
             "VALUES (7, 'a@example.org', 'a@example.org', 'confirmed', '', 'x', 'x')", ())]
    if dialect == "sqlite":
        con = sqlite3.connect(store_location)
        con.executescript(";".join(statements) + f";PRAGMA user_version={SIGNING_KEYS_MIGRATION - 1};")
        for sql, args in rows:
            con.execute(sql.replace("%s", "?"), args)
        con.commit()
        con.close()
        return
    with psycopg.connect(store_location, autocommit=True) as con:
        for statement in statements:
            con.execute(statement)
        for sql, args in [*rows, ("INSERT INTO meta VALUES ('schema', %s)", (str(SIGNING_KEYS_MIGRATION - 1),))]:
            con.execute(sql, args)


def test_links_mailed_before_keys_could_rotate_keep_working_after_the_upgrade(store_location, tmp_path):
    if not store_location.startswith("postgresql"):
        (tmp_path / "var").mkdir(exist_ok=True)
    _old_schema(store_location)
    link = sign_token(bytes.fromhex(OLD_SECRET), "unsubscribe", 7)  # in every email subscriber 7 got
    store = open_store(store_location)
    try:
        keys = store.keyring()
        assert keys.current == bytes.fromhex(OLD_SECRET) and keys.retired == ()
        assert keys.verify("unsubscribe", link) == 7
        assert store.secret() == bytes.fromhex(OLD_SECRET)  # the log key: hashes in old logs still match
    finally:
        store.close()


def test_after_a_rotation_new_links_use_the_new_key_and_old_ones_work_for_the_kept_days(store):
    subscriber, _ = store.add("reader@example.org")
    before, log_key = store.keyring(), store.secret()
    hashed = keyed_hash(log_key, subscriber.address)
    unsubscribe = before.sign("unsubscribe", subscriber.id)
    expires = int(time.time()) + 3600
    confirm = before.sign_expiring("confirm", 42, expires)
    now = time.time()

    done = store.rotate_signing_key(30, now=now)
    after = store.keyring(now=now)
    assert done.verify_until == int(now) + 30 * DAY and done.verifying == 1 and done.erased == 0
    assert after.current != before.current and after.retired == (before.current,)
    fresh = after.sign("unsubscribe", subscriber.id)
    assert fresh != unsubscribe and verify_token(after.current, "unsubscribe", fresh) == subscriber.id
    assert verify_token(before.current, "unsubscribe", fresh) is None  # signed with the new key only
    assert after.verify("unsubscribe", unsubscribe) == subscriber.id  # old mail's one-click link
    assert after.verify("unsubscribe", fresh) == subscriber.id
    assert after.verify_expiring("confirm", confirm) == (42, "")  # an open confirmation link
    assert after.verify("preferences", unsubscribe) is None  # still bound to its purpose
    assert store.secret() == log_key and keyed_hash(store.secret(), subscriber.address) == hashed

    later = store.keyring(now=now + 31 * DAY)  # past the kept days: refused
    assert later.verify("unsubscribe", unsubscribe) is None and later.verify("unsubscribe", fresh) == subscriber.id
    assert later.verify_expiring("confirm", confirm) == (None, "forged")
    again = store.rotate_signing_key(30, now=now + 31 * DAY)  # the expired key is erased, not kept
    assert again.erased == 1 and again.verifying == 1


def test_keep_days_0_refuses_every_link_signed_before_at_once(store):
    subscriber, _ = store.add("reader@example.org")
    first = store.keyring().sign("unsubscribe", subscriber.id)
    store.rotate_signing_key(365)
    second = store.keyring().sign("preferences", subscriber.id)
    assert store.keyring().verify("unsubscribe", first) == subscriber.id
    done = store.rotate_signing_key(0)  # the store leaked: no key before this one may verify
    keys = store.keyring()
    assert done.verify_until is None and done.verifying == 0 and done.erased == 2 and keys.retired == ()
    assert keys.verify("unsubscribe", first) is None and keys.verify("preferences", second) is None
    assert keys.verify("unsubscribe", keys.sign("unsubscribe", subscriber.id)) == subscriber.id


def test_a_shorter_rotation_shortens_the_keys_retired_before(store):
    now = time.time()
    store.rotate_signing_key(365, now=now)
    store.rotate_signing_key(10, now=now + 1)
    assert len(store.keyring(now=now + 9 * DAY).retired) == 2
    assert store.keyring(now=now + 11 * DAY).retired == ()  # the 365 days gave way to the newer rule


def test_suppressions_outlive_a_rotation(store):
    subscriber, _ = store.add("gone@example.org")
    store.unsubscribe(subscriber.id)
    store.rotate_signing_key(0)
    assert store.suppression("gone@example.org") == "unsubscribed"
    assert store.add("gone@example.org")[0].status == "unsubscribed"


def test_rotations_at_once_leave_exactly_one_current_key(store_location):
    stores = [open_store(store_location) for _ in range(4)]
    start, failures = threading.Barrier(len(stores)), []

    def rotate(one):
        start.wait()
        try:
            one.rotate_signing_key(30)
        except StoreError as exc:  # PostgreSQL: the loser's UPDATE found the key retired already
            failures.append(str(exc))

    threads = [threading.Thread(target=rotate, args=(one,)) for one in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        keys = stores[0].keyring()
        assert len(keys.retired) == len(stores) - len(failures)  # each success retired one key
        assert all("another key rotation finished meanwhile" in f for f in failures)
        token = keys.sign("unsubscribe", 1)
        assert all(one.keyring().current == keys.current for one in stores) and keys.verify("unsubscribe", token) == 1
    finally:
        for one in stores:
            one.close()


def test_a_confirmation_link_expires_whatever_key_signed_it(store):
    keys = store.keyring()
    store.rotate_signing_key(30)
    token = sign_expiring(keys.current, "confirm", 5, int(time.time()) - 1)
    assert store.keyring().verify_expiring("confirm", token) == (5, "expired")


def test_stores_opening_an_old_store_at_once_migrate_it_once(store_location, tmp_path):
    """Servers started together on an old store (an upgrade): one migrates, under PostgreSQL's
    advisory lock or SQLite's write lock; the others wait, then find nothing to do. One current
    key, the old secret: nobody seeded a second."""
    if not store_location.startswith("postgresql"):
        (tmp_path / "var").mkdir(exist_ok=True)
    _old_schema(store_location)
    start, opened, errors = threading.Barrier(4), [], []

    def open_one():
        start.wait()
        try:
            opened.append(open_store(store_location))
        except StoreError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == [] and len(opened) == 4
        assert all(one.keyring().current == bytes.fromhex(OLD_SECRET) for one in opened)
        assert opened[0]._one("SELECT count(*) FROM signing_keys")[0] == 1
        assert opened[1].get(7).address == "a@example.org"
    finally:
        for one in opened:
            one.close()


def test_a_store_left_without_a_current_key_says_so_and_rotate_key_mends_it(store):
    store.rotate_signing_key(30)
    with store._tx() as execute:  # as a hand-edited database might be
        execute("DELETE FROM signing_keys WHERE retired IS NULL")
    with pytest.raises(StoreError, match="no current link-signing key; run `digest subscribers rotate-key`"):
        store.keyring()
    done = store.rotate_signing_key(30)
    assert done.retired_id is None and len(store.keyring().retired) == 1


def test_rotate_key_from_the_command_line_says_what_it_did(store_location, capsys):
    from digest.cli import main

    open_store(store_location).close()
    assert main(["subscribers", "rotate-key", "--store", store_location, "--keep-days", "-1"]) == 2
    assert "--keep-days cannot be negative" in capsys.readouterr().err
    assert main(["subscribers", "rotate-key", "--store", store_location, "--keep-days", "7"]) == 0
    out = capsys.readouterr().out
    assert "new link-signing key #2" in out and "key #1 retired: links signed before now keep working until" in out
    assert "(7 days)" in out and "keyed hashes in logs are unchanged" in out
    assert main(["subscribers", "rotate-key", "--store", store_location, "--keep-days", "0"]) == 0
    assert "key #2 and every key before it revoked" in capsys.readouterr().out
