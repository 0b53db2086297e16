"""Subscribers and the delivery ledger: one interface, SQLite (WAL) by default.

    SubscriberStore          the interface composing, sending and the subscription service use
    SqliteStore              the embedded default: one file, WAL, migrations in ``MIGRATIONS``
    open_store(location)     a file path (or sqlite:///path); postgresql://... comes with the service

Delivery states, one row per (issue, channel, subscriber):

    pending ──► sending ──► sent
       │           └──────► ambiguous  the process died after the message's final '.', before
       │                               the server's reply: maybe delivered, never resent without
       │                               --resend-ambiguous
       ├──► failed                     a permanent (5xx) reply, kept with the row
       └──► skipped                    unsubscribed since queued, or no note on the chosen topics

``sending`` is written (and committed) just before the final '.' of a message goes out, so a
crash at any other moment leaves the row ``pending`` and the next run sends it: nobody twice,
nobody skipped. Addresses never leave this module except as ``Subscriber.address`` for the
message itself; logs and reports use ``keyed_hash``.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import email_validator

from .errors import AddressInvalid, SendInProgress, StoreError, UsageError

DEFAULT_LOCATION = "var/subscribers.sqlite3"
STATUSES = ("pending", "confirmed", "unsubscribed")
STATES = ("pending", "sending", "sent", "failed", "ambiguous", "skipped")
MAX_ADDRESS = 254


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    address: str  # normalized; ASCII (IDN domains as punycode)
    topics: tuple[str, ...] = ()  # tag ids; empty means every topic
    status: str = "confirmed"


@dataclass(frozen=True, slots=True)
class Delivery:
    subscriber_id: int
    address: str
    state: str
    attempts: int
    reply: str
    updated: str


def normalize_address(text: str) -> str:
    """The address as stored and sent, or AddressInvalid (display names, CR/LF, bad syntax)."""
    if not isinstance(text, str) or any(c in text for c in "\r\n\0<>,;\"") or len(text) > MAX_ADDRESS:
        raise AddressInvalid("not a bare address: no display name, brackets, quotes, commas or line breaks")
    try:
        found = email_validator.validate_email(text.strip(), check_deliverability=False,
                                               allow_smtputf8=False, allow_display_name=False)
    except email_validator.EmailNotValidError as exc:
        raise AddressInvalid(str(exc)) from None
    return found.ascii_email or found.normalized


def keyed_hash(secret: bytes, address: str) -> str:
    """What logs and reports show instead of an address: stable per store, not reversible."""
    return hmac.new(secret, b"log:" + address.lower().encode(), hashlib.sha256).hexdigest()[:12]


def sign_token(secret: bytes, purpose: str, subscriber_id: int) -> str:
    """An HMAC-signed, URL-safe token naming a subscriber for one purpose (unsubscribe, preferences)."""
    body = f"{subscriber_id:x}"
    mac = hmac.new(secret, f"{purpose}:{body}".encode(), hashlib.sha256).digest()[:16]
    return body + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify_token(secret: bytes, purpose: str, token: str) -> int | None:
    """The subscriber id a token names, or None if forged, tampered or for another purpose."""
    body, _, _ = token.partition(".")
    try:
        subscriber_id = int(body, 16)
    except ValueError:
        return None
    return subscriber_id if hmac.compare_digest(sign_token(secret, purpose, subscriber_id), token) else None


ADDRESS_COLUMNS = ("email", "address", "e-mail", "email_address")
TOPIC_COLUMNS = ("topics", "tags")


def read_csv(path: Path, known_tags: set[str], status: str) -> tuple[list[tuple[str, tuple[str, ...], str]],
                                                                     list[str]]:
    """Rows to import from a CSV file with a header row, and one problem line per refused row.

    Columns: email (or address), optional topics (tag ids separated by spaces, ';' or '|'),
    optional status. Problems name the line, never the address.
    """
    import csv

    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    rows, problems = [], []
    with handle:
        reader = csv.DictReader(handle)
        columns = {(name or "").strip().lower(): name for name in reader.fieldnames or ()}
        address_column = next((columns[c] for c in ADDRESS_COLUMNS if c in columns), None)
        if address_column is None:
            raise UsageError(f"{path}: no address column; name one of: {', '.join(ADDRESS_COLUMNS)}")
        topic_column = next((columns[c] for c in TOPIC_COLUMNS if c in columns), None)
        status_column = columns.get("status")
        line = reader.line_num + 1
        try:
            for row in reader:
                problem, parsed = _csv_row(row, address_column, topic_column, status_column, known_tags, status)
                if problem:
                    problems.append(f"{path}:{line}: {problem}")
                else:
                    rows.append(parsed)
                line = reader.line_num + 1  # a quoted field may span lines: report where a row starts
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}:{reader.line_num}: not a readable UTF-8 CSV file ({exc})") from None
    return rows, problems


def _csv_row(row: dict, address_column, topic_column, status_column, known_tags, status):
    try:
        address = normalize_address(row.get(address_column) or "")
    except AddressInvalid as exc:
        return f"address refused: {exc}", None
    topics = tuple(sorted(set((row.get(topic_column) or "").replace(";", " ").replace("|", " ").split())))
    unknown = [t for t in topics if t not in known_tags]
    if unknown:
        return f"unknown topic(s) {', '.join(unknown)[:200]}; topics are tag ids of content/tags.yml", None
    row_status = ((row.get(status_column) or "").strip().lower() if status_column else "") or status
    if row_status in ("subscribed", "enabled", "active"):
        row_status = "confirmed"
    if row_status not in STATUSES:
        return f"unknown status '{row_status[:40]}'; one of: {', '.join(STATUSES)}", None
    return "", (address, topics, row_status)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class SubscriberStore(abc.ABC):
    """What every backend provides. Each method is one short transaction; all are thread-safe.

    A PostgreSQL backend implements the same methods with the same SQL (it is portable but for
    ``INSERT OR IGNORE``: ``ON CONFLICT DO NOTHING``), and ``claim`` with
    ``pg_try_advisory_lock(hashtext(issue || channel))`` held by its connection, which the
    server releases when a sender dies, as the file lock here is released by the kernel.
    """

    # --- subscribers ---
    @abc.abstractmethod
    def add(self, address: str, topics: Iterable[str] = (), status: str = "confirmed",
            source: str = "admin") -> tuple[Subscriber, bool]:
        """Insert or update one subscriber (address normalized first); (subscriber, created)."""

    @abc.abstractmethod
    def add_many(self, rows: Iterable[tuple[str, tuple[str, ...], str]], source: str) -> tuple[int, int]:
        """(address, topics, status) rows, already normalized, in one transaction: (created, updated)."""

    @abc.abstractmethod
    def set_status(self, subscriber_id: int, status: str) -> bool:
        """Confirm or unsubscribe; takes effect before the next message is sent."""

    @abc.abstractmethod
    def count(self, status: str | None = None) -> int: ...

    @abc.abstractmethod
    def secret(self) -> bytes:
        """The store's signing key: tokens in emails and the keyed hashes in logs."""

    # --- delivery ledger ---
    @abc.abstractmethod
    def claim(self, issue: str, channel: str) -> contextlib.AbstractContextManager:
        """Exclusive right to send one issue on one channel; raises SendInProgress if held."""

    @abc.abstractmethod
    def queue(self, issue: str, channel: str) -> int:
        """Add a pending row for every confirmed subscriber not yet in the ledger (how many), and
        skip the pending rows of those who unsubscribed since."""

    @abc.abstractmethod
    def resend_ambiguous(self, issue: str, channel: str) -> int: ...

    @abc.abstractmethod
    def pending(self, issue: str, channel: str, after: int, limit: int) -> list[Subscriber]:
        """Pending rows of confirmed subscribers with id > after, by id."""

    @abc.abstractmethod
    def begin_send(self, issue: str, channel: str, subscriber_id: int) -> bool:
        """pending → sending if the subscriber is still confirmed; False means do not send."""

    @abc.abstractmethod
    def finish(self, issue: str, channel: str, subscriber_id: int, state: str, reply: str = "",
               attempts: int = 0) -> None:
        """Record the outcome (sent, failed, ambiguous, skipped, or back to pending)."""

    @abc.abstractmethod
    def counts(self, issue: str, channel: str) -> dict[str, int]: ...

    @abc.abstractmethod
    def deliveries(self, issue: str, channel: str, state: str | None = None) -> list[Delivery]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


MIGRATIONS = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE subscribers (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        address_key TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed')),
        source TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        changed TEXT NOT NULL
    );
    CREATE TABLE subscriber_topics (
        subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (subscriber_id, tag)
    ) WITHOUT ROWID;
    CREATE TABLE deliveries (
        issue TEXT NOT NULL,
        channel TEXT NOT NULL,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'ambiguous', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        reply TEXT NOT NULL DEFAULT '',
        updated TEXT NOT NULL,
        PRIMARY KEY (issue, channel, subscriber_id)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_by_state ON deliveries (issue, channel, state, subscriber_id);
    """,
)


class SqliteStore(SubscriberStore):
    """One SQLite file in WAL mode; a connection per thread.

    synchronous=NORMAL: every commit survives the process being killed (the WAL is in the OS
    before COMMIT returns); ``durable=True`` (synchronous=FULL) also survives power loss, at
    ~0.4 ms per commit.
    """

    def __init__(self, path: str | Path, durable: bool = False):
        self.path = Path(path)
        self.durable = durable
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    # --- plumbing ---
    @property
    def db(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
                con.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the subscriber store {self.path}: {exc}") from None
            self._local.con = con
            with self._lock:
                self._connections.append(con)
        return con

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = self.db
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"{self.path} was written by a newer digest (schema {version}); upgrade digest")
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute(f"PRAGMA user_version={number + 1}")
            if con.execute("SELECT 1 FROM meta WHERE key='secret'").fetchone() is None:
                con.execute("INSERT INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))

    def close(self) -> None:
        with self._lock:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()

    # --- subscribers ---
    def secret(self) -> bytes:
        return bytes.fromhex(self.db.execute("SELECT value FROM meta WHERE key='secret'").fetchone()[0])

    def add(self, address, topics=(), status="confirmed", source="admin"):
        address = normalize_address(address)
        with self._tx() as con:
            created = self._upsert(con, address, tuple(topics), status, source)
            row = con.execute("SELECT id FROM subscribers WHERE address_key=?", (address.lower(),)).fetchone()
        return Subscriber(row[0], address, tuple(sorted(set(topics))), status), created

    def add_many(self, rows, source):
        created = updated = 0
        with self._tx() as con:
            for address, topics, status in rows:
                if self._upsert(con, address, topics, status, source):
                    created += 1
                else:
                    updated += 1
        return created, updated

    @staticmethod
    def _upsert(con, address: str, topics: tuple[str, ...], status: str, source: str) -> bool:
        if status not in STATUSES:
            raise UsageError(f"unknown subscriber status '{status}'; one of: {', '.join(STATUSES)}")
        now = _now()
        row = con.execute("SELECT id FROM subscribers WHERE address_key=?", (address.lower(),)).fetchone()
        if row is None:
            cur = con.execute("INSERT INTO subscribers (address, address_key, status, source, created, changed) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (address, address.lower(), status, source, now, now))
            subscriber_id = cur.lastrowid
        else:
            subscriber_id = row[0]
            con.execute("UPDATE subscribers SET status=?, changed=? WHERE id=?", (status, now, subscriber_id))
            con.execute("DELETE FROM subscriber_topics WHERE subscriber_id=?", (subscriber_id,))
        con.executemany("INSERT OR IGNORE INTO subscriber_topics VALUES (?, ?)",
                        [(subscriber_id, tag) for tag in topics])
        return row is None

    def set_status(self, subscriber_id, status):
        if status not in STATUSES:
            raise UsageError(f"unknown subscriber status '{status}'")
        cur = self.db.execute("UPDATE subscribers SET status=?, changed=? WHERE id=?", (status, _now(), subscriber_id))
        return cur.rowcount == 1

    def count(self, status=None):
        if status is None:
            return self.db.execute("SELECT count(*) FROM subscribers").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM subscribers WHERE status=?", (status,)).fetchone()[0]

    # --- ledger ---
    @contextlib.contextmanager
    def claim(self, issue, channel):
        lock_path = self.path.with_name(f"{self.path.name}.send-{issue}-{channel}.lock")
        with open(lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise SendInProgress(f"another `digest send` of {issue} to {channel} is running "
                                     f"(pid {handle.read().strip() or '?'}); wait for it or stop it") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def queue(self, issue, channel):
        with self._tx() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO deliveries (issue, channel, subscriber_id, state, updated) "
                "SELECT ?, ?, id, 'pending', ? FROM subscribers WHERE status='confirmed'", (issue, channel, _now()))
            con.execute("UPDATE deliveries SET state='skipped', reply='no longer subscribed', updated=? "
                        "WHERE issue=? AND channel=? AND state='pending' AND subscriber_id IN "
                        "(SELECT id FROM subscribers WHERE status != 'confirmed')", (_now(), issue, channel))
        return cur.rowcount

    def resend_ambiguous(self, issue, channel):
        cur = self.db.execute("UPDATE deliveries SET state='pending', updated=? "
                              "WHERE issue=? AND channel=? AND state='ambiguous'", (_now(), issue, channel))
        return cur.rowcount

    def pending(self, issue, channel, after, limit):
        rows = self.db.execute(
            "SELECT s.id, s.address, s.status, (SELECT group_concat(tag, ' ') FROM subscriber_topics t "
            "WHERE t.subscriber_id = s.id) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE d.issue=? AND d.channel=? AND d.state='pending' AND d.subscriber_id > ? AND s.status='confirmed' "
            "ORDER BY d.subscriber_id LIMIT ?", (issue, channel, after, limit)).fetchall()
        return [Subscriber(i, a, tuple(sorted((t or "").split())), s) for i, a, s, t in rows]

    def begin_send(self, issue, channel, subscriber_id):
        cur = self.db.execute(
            "UPDATE deliveries SET state='sending', attempts=attempts+1, updated=? "
            "WHERE issue=? AND channel=? AND subscriber_id=? AND state='pending' "
            "AND EXISTS (SELECT 1 FROM subscribers WHERE id=? AND status='confirmed')",
            (_now(), issue, channel, subscriber_id, subscriber_id))
        return cur.rowcount == 1

    def finish(self, issue, channel, subscriber_id, state, reply="", attempts=0):
        if state not in STATES:
            raise UsageError(f"unknown delivery state '{state}'")
        self.db.execute("UPDATE deliveries SET state=?, reply=?, attempts=attempts+?, updated=? "
                        "WHERE issue=? AND channel=? AND subscriber_id=?",
                        (state, reply[:500], attempts, _now(), issue, channel, subscriber_id))

    def counts(self, issue, channel):
        found = dict(self.db.execute("SELECT state, count(*) FROM deliveries WHERE issue=? AND channel=? "
                                     "GROUP BY state", (issue, channel)).fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def deliveries(self, issue, channel, state=None):
        query = ("SELECT d.subscriber_id, s.address, d.state, d.attempts, d.reply, d.updated FROM deliveries d "
                 "JOIN subscribers s ON s.id = d.subscriber_id WHERE d.issue=? AND d.channel=?")
        args: tuple = (issue, channel)
        if state is not None:
            query += " AND d.state=?"
            args += (state,)
        return [Delivery(*row) for row in self.db.execute(query + " ORDER BY d.subscriber_id", args)]


def open_store(location: str | Path | None = None, durable: bool = False) -> SubscriberStore:
    """The store at ``location`` (default: $DIGEST_STORE, else var/subscribers.sqlite3)."""
    location = str(location or os.environ.get("DIGEST_STORE") or DEFAULT_LOCATION)
    if location.startswith(("postgresql://", "postgres://")):
        raise UsageError("the PostgreSQL store arrives with the subscription service; use a SQLite file path "
                         "for now")
    if location.startswith("sqlite:///"):
        location = location[len("sqlite:///"):]
    elif "://" in location:
        raise UsageError(f"unknown store location '{location.split('://')[0]}://...'; give a file path")
    return SqliteStore(location, durable=durable)
