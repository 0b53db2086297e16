"""Subscribers and the delivery ledger: one interface, SQLite (WAL) by default.

    SubscriberStore          the interface composing, sending and the subscription service use
    SqlStore                 the SQL both backends run; ``MIGRATIONS`` written once for both
    SqliteStore              the embedded default: one file, WAL
    PostgresStore            a DSN, for deployments on several machines (psycopg)
    open_store(location)     a file path, sqlite:///path or postgresql://...
    inspect_store(location)  backend and schema version, read without creating or migrating
    sign_token / verify_token              unsubscribe and preferences links (no expiry)
    sign_expiring / verify_expiring        confirmation links: expire, and the store spends them once
    Keyring                                the store's link-signing keys: sign with the current one,
                                           verify with it and the retired ones still kept

Keys, and what each one keys (none of them is DIGEST_SECRET, which keys only the service's CSRF
form tokens, see digest.service.app):

    signing_keys table     every link in mail and on pages: unsubscribe, preferences (no expiry),
                           confirm (expires). `digest subscribers rotate-key` makes a new current
                           key; links signed before verify for --keep-days more at most (default
                           KEEP_RETIRED_DAYS, 365: one-click links in old mail keep working, as
                           bulk senders' rules expect; a key retired earlier keeps its earlier end),
                           then are refused; 0 refuses them all at once (the store or a key leaked).
    meta 'secret'          the log key: ``keyed_hash`` in logs, reports and file names, and
                           Message-IDs; never rotated, so a reader's hash stays the same. It was the
                           signing key before keys could be rotated and is the first signing key.
    meta 'suppression_key' suppressions' address hashes; never rotated (they must match forever).

Subscriber states: pending (asked, not confirmed: gets nothing) → confirmed → unsubscribed.

Consent: only the reader undoes an unsubscribe, by using a confirmation link that was mailed to
the address. Every unsubscribe writes a suppression record (a keyed hash of the address, the
reason, the date) that outlives the subscriber's row: ``purge_unconfirmed`` and ``remove`` erase
rows, never suppressions. ``add`` and ``add_many`` (the operator's commands) skip a suppressed
address and say how many and why; a form post for one (anyone can type any address) sends it a
confirmation at most and changes nothing else; ``confirm`` lifts the suppression.

Delivery states, one row per (issue, channel, subscriber):

    pending ──► sending ──► sent
       │           └──────► ambiguous  the process died after the message's final '.', before
       │                               the server's reply: maybe delivered, never resent without
       │                               --resend-ambiguous
       ├──► failed                     a permanent (5xx) reply, kept with the row
       └──► skipped                    unsubscribed since queued, or no note on the chosen topics

``sending`` is written (and committed) just before the final '.' of a message goes out, so a
crash at any other moment leaves the row ``pending`` and the next run sends it: nobody twice,
nobody skipped. Once the '.' is written the row's reply becomes ``DOT_WRITTEN`` (still
``sending``), so an ambiguous row says when its sender stopped: its reply starts with
``AMBIGUOUS_BEFORE`` (before the final '.': the server cannot have accepted the message) or
``AMBIGUOUS_AFTER`` (after it, before the reply: it may have); ``resend_ambiguous`` takes either.

Feedback (``record_feedback``): hard and soft bounces, complaints and unsubscribes, each
attributed to one issue, for the issue's rates (``issue_rates``) and the complaint brake of
`digest send`; ``webhook_messages`` remembers the provider notifications already taken (replays).

Addresses never leave this module except as ``Subscriber.address`` for the
message itself; logs and reports use ``keyed_hash``.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import dataclasses
import datetime as dt
import fcntl
import functools
import hashlib
import hmac
import os
import random
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import email_validator

from digest.errors import AddressInvalid, SendInProgress, StoreError, UsageError

DEFAULT_LOCATION = "var/subscribers.sqlite3"
STATUSES = ("pending", "confirmed", "unsubscribed")
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complained")
STATES = ("pending", "sending", "sent", "failed", "ambiguous", "skipped")
FEEDBACK_KINDS = ("hard_bounce", "soft_bounce", "complaint", "unsubscribe")
# what an ambiguous row's reply starts with: when its sender stopped (``resend_ambiguous`` picks by it)
AMBIGUOUS_BEFORE = "before the final '.'"
AMBIGUOUS_AFTER = "after the final '.'"
AMBIGUOUS_WHEN = {"before-end": AMBIGUOUS_BEFORE, "after-end": AMBIGUOUS_AFTER}
DOT_WRITTEN = "the final '.' was written; waiting for the server's reply"
MAX_ADDRESS = 254


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    address: str  # normalized; ASCII (IDN domains as punycode)
    topics: tuple[str, ...] = ()  # tag ids; empty means every topic
    status: str = "confirmed"
    created: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    subscriber_id: int
    address: str
    state: str
    attempts: int
    reply: str
    updated: str


def normalize_address(text: str) -> str:
    """The address as stored and sent, or AddressInvalid (display names, CR/LF, bad syntax, a domain
    that mixes look-alike scripts or changes under NFKC)."""
    if not isinstance(text, str) or any(c in text for c in "\r\n\0<>,;\"") or len(text) > MAX_ADDRESS:
        raise AddressInvalid("not a bare address: no display name, brackets, quotes, commas or line breaks")
    text = text.strip()
    if unicodedata.normalize("NFKC", text) != text or any(unicodedata.category(c) in ("Cf", "Cc", "Zs")
                                                          for c in text):
        raise AddressInvalid("the address has full-width, invisible or compatibility characters; type it plainly")
    try:
        found = email_validator.validate_email(text, check_deliverability=False,
                                               allow_smtputf8=False, allow_display_name=False)
    except email_validator.EmailNotValidError as exc:
        raise AddressInvalid(str(exc)) from None
    for label in found.domain.split("."):
        if len(_scripts(label) & CONFUSABLE_SCRIPTS) > 1:
            raise AddressInvalid("the domain mixes letters of look-alike scripts (Latin, Cyrillic, Greek)")
    return found.ascii_email or found.normalized


PURGE_AFTER_DAYS = 7  # an unconfirmed web sign-up is erased this long after its last link expired
CONFUSABLE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"})


def _scripts(label: str) -> set[str]:
    """The scripts of a domain label's letters, by Unicode name ('LATIN', 'HANGUL', ...)."""
    return {unicodedata.name(c, "?").split()[0] for c in label if c.isalpha()}


def keyed_hash(secret: bytes, address: str) -> str:
    """What logs and reports show instead of an address: stable per store, not reversible."""
    return hmac.new(secret, b"log:" + address.lower().encode(), hashlib.sha256).hexdigest()[:12]


def suppression_hash(key: bytes, address: str) -> str:
    """How a suppression names an address: an HMAC, so the list holds no address in clear."""
    return hmac.new(key, b"suppress:" + address.lower().encode(), hashlib.sha256).hexdigest()


def sign_token(secret: bytes, purpose: str, subscriber_id: int) -> str:
    """An HMAC-signed, URL-safe token naming a subscriber for one purpose (unsubscribe, preferences)."""
    body = f"{subscriber_id:x}"
    mac = hmac.new(secret, f"{purpose}:{body}".encode(), hashlib.sha256).digest()[:16]
    return body + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify_token(secret: bytes, purpose: str, token: str) -> int | None:
    """The subscriber id a token names, or None if forged, tampered or for another purpose."""
    if not token.isascii():
        return None
    body, _, _ = token.partition(".")
    try:
        subscriber_id = int(body, 16)
    except ValueError:
        return None
    return subscriber_id if hmac.compare_digest(sign_token(secret, purpose, subscriber_id), token) else None


def sign_expiring(secret: bytes, purpose: str, ident: int, expires: int) -> str:
    """An HMAC-signed token naming ``ident`` for one purpose until ``expires`` (Unix seconds)."""
    body = f"{ident:x}.{expires:x}"
    mac = hmac.new(secret, f"{purpose}:{body}".encode(), hashlib.sha256).digest()[:16]
    return body + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify_expiring(secret: bytes, purpose: str, token: str, now: float | None = None) -> tuple[int | None, str]:
    """(ident, '') for a good token; (None, 'forged') or (ident, 'expired') otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 80 or not token.isascii():
        return None, "forged"
    try:
        ident, expires = int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None, "forged"
    if not hmac.compare_digest(sign_expiring(secret, purpose, ident, expires), token):
        return None, "forged"
    return (ident, "expired") if expires <= (now if now is not None else time.time()) else (ident, "")


KEEP_RETIRED_DAYS = 365  # how long a retired link-signing key still verifies links, by default


@dataclass(frozen=True, slots=True)
class Keyring:
    """The link-signing keys: ``current`` signs every new link; it and each ``retired`` key (still
    within its days) verify one. A link carries no key id: verifying tries each key, a handful."""

    current: bytes = dataclasses.field(repr=False)
    retired: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)
    ids: tuple[int, ...] = ()  # of the keys above, newest first (for reports)

    def sign(self, purpose: str, subscriber_id: int) -> str:
        return sign_token(self.current, purpose, subscriber_id)

    def sign_expiring(self, purpose: str, ident: int, expires: int) -> str:
        return sign_expiring(self.current, purpose, ident, expires)

    def verify(self, purpose: str, token: str) -> int | None:
        for key in (self.current, *self.retired):
            if (found := verify_token(key, purpose, token)) is not None:
                return found
        return None

    def verify_expiring(self, purpose: str, token: str, now: float | None = None) -> tuple[int | None, str]:
        for key in (self.current, *self.retired):
            found = verify_expiring(key, purpose, token, now)
            if found[0] is not None:
                return found
        return None, "forged"


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``rotate_signing_key`` did: the new key's id, the retired one's, until when the retired
    one verifies links (None: refused at once), how many retired keys verify now, how many were erased."""

    new_id: int
    retired_id: int | None  # None: the store had no current key (its keyring refused to sign)
    verify_until: int | None
    verifying: int
    erased: int


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


@dataclass(frozen=True, slots=True)
class Confirmation:
    """One double opt-in request: the link in its email confirms ``topics`` once, before ``expires``."""

    id: int
    subscriber_id: int
    expires: int  # Unix seconds


CONFIRM_OUTCOMES = ("confirmed", "used", "expired", "unknown")


@dataclass(frozen=True, slots=True)
class OutboxMail:
    """A confirmation email waiting in the store's outbox, as a sender claimed it."""

    id: int
    confirmation: Confirmation
    address: str
    already: bool  # a confirmed reader asking for other topics: the mail confirms a change
    attempts: int


class SubscriberStore(abc.ABC):
    """What every backend provides. Each method is one short transaction; all are thread-safe.

    ``SqlStore`` holds the SQL both backends run (portable SQL with ``?`` placeholders); the
    backends differ in connections, transactions, migrations bookkeeping and ``claim``: a file
    lock for SQLite, ``pg_try_advisory_lock`` held by a connection for PostgreSQL, which the
    kernel or the server releases when a sender dies.
    """

    # --- subscribers ---
    @abc.abstractmethod
    def add(self, address: str, topics: Iterable[str] = (), status: str = "confirmed",
            source: str = "admin") -> tuple[Subscriber | None, bool]:
        """Insert or update one subscriber (address normalized first); (subscriber as stored, created).
        A suppressed address is left as it is (the subscriber returned says so), or not added (None)."""

    @abc.abstractmethod
    def suppression(self, address: str) -> str | None:
        """Why an address is suppressed (one of SUPPRESSION_REASONS), or None."""

    @abc.abstractmethod
    def suppression_counts(self) -> dict[str, int]:
        """How many addresses are suppressed, by reason (never which)."""

    @abc.abstractmethod
    def apply_bounce(self, message_key: str, outcome: str, subscriber_id: int | None = None,
                     soft_limit: int = 3, soft_days: float = 30, now: float | None = None,
                     issue: str | None = None) -> str:
        """Apply one mailbox message once (``message_key``: a hash of its bytes), in one transaction,
        counted for ``issue`` (the VERP token's; None: the latest issue sent to them) in its rates:
        'bounced' or 'complained' suppress the subscriber at once (no longer confirmed: the send
        skips them), 'unsubscribed' unsubscribes them, 'soft' records a soft bounce and suppresses
        ('bounced') at the ``soft_limit``-th within ``soft_days``; any other outcome is only recorded.
        Returns what changed: 'suppressed', 'unsubscribed', 'counted N', 'already suppressed',
        'recorded', or 'already applied' for a message applied before."""

    @abc.abstractmethod
    def add_many(self, rows: Iterable[tuple[str, tuple[str, ...], str]], source: str) -> AddOutcome:
        """(address, topics, status) rows, already normalized, in one transaction: how many were created
        and updated, and how many skipped by reason (suppressed addresses, left as they are)."""

    @abc.abstractmethod
    def set_status(self, subscriber_id: int, status: str) -> bool:
        """Confirm or unsubscribe; takes effect before the next message is sent."""

    @abc.abstractmethod
    def count(self, status: str | None = None) -> int: ...

    @abc.abstractmethod
    def secret(self) -> bytes:
        """The log key (meta 'secret'): the keyed hashes in logs, reports, file names and Message-IDs.
        It signs no link (``keyring`` does) and is never rotated, so a reader's hash stays the same."""

    @abc.abstractmethod
    def keyring(self, now: float | None = None) -> Keyring:
        """The link-signing keys: the current one, and the retired ones still verifying links."""

    @abc.abstractmethod
    def rotate_signing_key(self, keep_days: float, now: float | None = None) -> Rotation:
        """A new current link-signing key. Every link signed before verifies for ``keep_days`` more
        at most (a retired key keeps an earlier end; 0: refused at once); keys past their end are erased."""

    @abc.abstractmethod
    def get(self, subscriber_id: int) -> Subscriber | None: ...

    @abc.abstractmethod
    def find(self, address: str) -> Subscriber | None:
        """The subscriber of an address (normalized first; AddressInvalid if it cannot be one)."""

    @abc.abstractmethod
    def subscribers(self, status: str | None = None) -> list[Subscriber]:
        """Every subscriber (of one status), by id, with ``created``."""

    @abc.abstractmethod
    def remove(self, subscriber_id: int) -> bool:
        """Erase a subscriber with their topics, confirmations and ledger rows."""

    @abc.abstractmethod
    def unsubscribe(self, subscriber_id: int) -> bool:
        """Unsubscribe and void open confirmation links; True only if this call changed the status."""

    @abc.abstractmethod
    def set_topics(self, subscriber_id: int, topics: Iterable[str]) -> bool:
        """Replace the topics of a pending or confirmed subscriber; False if none such."""

    # --- double opt-in ---
    @abc.abstractmethod
    def request_confirmation(self, address: str, topics: Iterable[str], window: float,
                             lifetime: float) -> tuple[Subscriber, Confirmation | None]:
        """Record a subscribe request: a new address becomes pending (a known one keeps its status). A
        new confirmation unless one was made within ``window`` seconds, with its email queued in the
        outbox in the same transaction."""

    @abc.abstractmethod
    def claim_outbox(self, sender: str, lease: float) -> OutboxMail | None:
        """The oldest confirmation email due, reserved for ``sender`` for ``lease`` seconds (None:
        nothing due). Rows a dead sender left 'sending' are marked 'ambiguous' first."""

    @abc.abstractmethod
    def begin_outbox(self, mail_id: int, sender: str) -> bool:
        """pending → sending, just before the message's final '.', if ``sender`` still holds it."""

    @abc.abstractmethod
    def finish_outbox(self, mail_id: int, state: str, reply: str = "", retry_in: float | None = None) -> None:
        """sent or ambiguous; 'pending' with ``retry_in`` seconds for a temporary failure."""

    @abc.abstractmethod
    def outbox_counts(self) -> dict[str, int]: ...

    # --- rate limits ---
    shared = False  # whether several processes on several machines share this store (PostgreSQL)

    @abc.abstractmethod
    def take_token(self, key: str, capacity: float, rate: float) -> float:
        """Take one token of ``key``'s bucket (``capacity`` tokens, refilled at ``rate`` per second):
        0 when taken, else the seconds until one is there."""

    @abc.abstractmethod
    def withdraw_confirmation(self, confirmation_id: int) -> bool:
        """Forget an unused confirmation whose email never went out, so that asking again within
        the window sends a new one (whether it was withdrawn)."""

    @abc.abstractmethod
    def confirm(self, confirmation_id: int) -> tuple[str, Subscriber | None]:
        """Use a confirmation once: (one of CONFIRM_OUTCOMES, the subscriber when confirmed)."""

    @abc.abstractmethod
    def purge_unconfirmed(self, days: float = PURGE_AFTER_DAYS) -> int:
        """Erase the sign-ups from the web form nobody confirmed, ``days`` after their last link
        expired (how many): an address someone typed is kept only as long as its link can be used."""

    @abc.abstractmethod
    def confirmation_status(self, confirmation_id: int) -> tuple[str, Subscriber | None]:
        """What a confirmation link would do, changing nothing: ("open", "used", "expired" or
        "unknown", the subscriber it is for)."""

    # --- delivery ledger ---
    @abc.abstractmethod
    def claim(self, issue: str, channel: str) -> contextlib.AbstractContextManager:
        """Exclusive right to send one issue on one channel; raises SendInProgress if held."""

    @abc.abstractmethod
    def queue(self, issue: str, channel: str) -> int:
        """Add a pending row for every confirmed subscriber not yet in the ledger (how many), and
        skip the pending rows of those who unsubscribed since."""

    @abc.abstractmethod
    def resend_ambiguous(self, issue: str, channel: str, when: str | None = None) -> int:
        """Ambiguous rows back to pending (how many): all, or only 'before-end' / 'after-end' ones
        (AMBIGUOUS_WHEN: stopped before the final '.' was written, or after it)."""

    @abc.abstractmethod
    def channels(self, issue: str) -> list[str]:
        """The channels ``issue`` has ledger rows on (was sent, or began to be), by name."""

    @abc.abstractmethod
    def previous_issue(self, issue: str, channel: str) -> str | None:
        """The latest issue before ``issue`` (by name: ISO weeks sort) sent to anyone on ``channel``."""

    # --- feedback ---
    @abc.abstractmethod
    def record_feedback(self, subscriber_id: int, issue: str | None, kind: str, source: str = "") -> bool:
        """Attribute one reader's feedback to ``issue`` (None: the latest issue sent to them on any
        channel) for its rates; True when new (each kind counts once per reader and issue).

        ``kind`` is one of FEEDBACK_KINDS. 'hard_bounce' and 'complaint' also unsubscribe the reader,
        void their open confirmation links and suppress the address with reason 'bounced' /
        'complained' (a complaint overrides an earlier reason; a bounce overrides 'unsubscribed'), all
        in one transaction, whether or not an issue was found; 'soft_bounce' only counts (what N soft
        bounces mean is the bounce processor's rule); 'unsubscribe' is recorded by ``unsubscribe``.
        Callers: the SES webhook of `digest serve`, `digest bounces`."""

    @abc.abstractmethod
    def issue_rates(self, issue: str, channel: str) -> IssueRates:
        """What came back from ``issue`` sent on ``channel``: sent, bounces, complaints, unsubscribes."""

    @abc.abstractmethod
    def take_webhook_message(self, message_id: str, keep: float) -> bool:
        """Remember a provider notification's id for ``keep`` seconds; False when already taken (a replay)."""

    @abc.abstractmethod
    def release_webhook_message(self, message_id: str) -> None:
        """Forget a notification taken but not processed (the store failed), so its retry is taken."""

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


# Schema versions, written once for both backends: {id} is the primary key column and
# {rowid} the table option that differ between SQLite and PostgreSQL.
MIGRATIONS = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE subscribers (
        id {id},
        address TEXT NOT NULL,
        address_key TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed')),
        source TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        changed TEXT NOT NULL
    );
    CREATE TABLE subscriber_topics (
        subscriber_id {ref} NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (subscriber_id, tag)
    ) {rowid};
    CREATE TABLE deliveries (
        issue TEXT NOT NULL,
        channel TEXT NOT NULL,
        subscriber_id {ref} NOT NULL REFERENCES subscribers(id),
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'ambiguous', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        reply TEXT NOT NULL DEFAULT '',
        updated TEXT NOT NULL,
        PRIMARY KEY (issue, channel, subscriber_id)
    ) {rowid};
    CREATE INDEX deliveries_by_state ON deliveries (issue, channel, state, subscriber_id);
    """,
    """
    CREATE TABLE confirmations (
        id {id},
        subscriber_id {ref} NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
        topics TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    CREATE INDEX confirmations_by_subscriber ON confirmations (subscriber_id, created_at);
    """,
)
MIGRATIONS += (
    # Ids are never reused. Tokens in sent emails (unsubscribe, preferences, confirm) name an id:
    # SQLite without AUTOINCREMENT gives a new row the largest id + 1, so after the newest
    # subscriber was removed, the next one got their id and their old links worked on the newcomer.
    # PostgreSQL's identity never reuses one. SQLite rebuilds both tables (foreign keys off, see
    # SqliteStore._migrate); AUTOINCREMENT starts above the largest id the table holds.
    {"postgresql": "", "sqlite": """
    CREATE TABLE subscribers_autoincrement (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address TEXT NOT NULL,
        address_key TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed')),
        source TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        changed TEXT NOT NULL
    );
    INSERT INTO subscribers_autoincrement SELECT id, address, address_key, status, source, created, changed
        FROM subscribers;
    DROP TABLE subscribers;
    ALTER TABLE subscribers_autoincrement RENAME TO subscribers;
    CREATE TABLE confirmations_autoincrement (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subscriber_id INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
        topics TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    INSERT INTO confirmations_autoincrement SELECT id, subscriber_id, topics, created_at, expires_at, used_at
        FROM confirmations;
    DROP TABLE confirmations;
    ALTER TABLE confirmations_autoincrement RENAME TO confirmations;
    CREATE INDEX confirmations_by_subscriber ON confirmations (subscriber_id, created_at);
    """},
)
MIGRATIONS += (
    # Suppressions: addresses that must not be signed up again except by their reader. Keyed by an
    # HMAC of the address under a key of its own (meta 'suppression_key', never rotated, so that
    # rotating the link-signing key keeps every suppression); rows of the subscribers table that
    # are unsubscribed when this runs get theirs in SqlStore._backfill_suppressions.
    """
    CREATE TABLE suppressions (
        address_hash TEXT PRIMARY KEY,
        reason TEXT NOT NULL CHECK (reason IN ('unsubscribed', 'bounced', 'complained')),
        since TEXT NOT NULL
    )
    """,
)
SUPPRESSIONS_MIGRATION = len(MIGRATIONS)  # the schema version from which suppressions exist
MIGRATIONS += (
    # Link-signing keys, apart from the log key (meta 'secret'), so that the operator can rotate
    # them (`digest subscribers rotate-key`) without changing the keyed hashes in logs. The current
    # key has retired NULL (one at most: the unique index); a retired key verifies links until
    # verify_until (Unix seconds), then is ignored and deleted at the next rotation. The first key
    # is the store's old secret, copied by SqlStore._seed_signing_key, so every link already mailed
    # keeps working.
    """
    CREATE TABLE signing_keys (
        id {id},
        key TEXT NOT NULL,
        created BIGINT NOT NULL,
        retired BIGINT,
        verify_until BIGINT
    );
    CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired IS NULL)) WHERE retired IS NULL
    """,
)
SIGNING_KEYS_MIGRATION = len(MIGRATIONS)  # the schema version from which signing keys exist
MIGRATIONS += (
    # The confirmation outbox: each confirmation's email, written in the transaction that records the
    # sign-up, so a server killed before sending leaves it for the next one (the delivery ledger's
    # states: 'sending' is written just before the message's final '.', so a row left 'sending' by a
    # dead sender may have been delivered and is marked 'ambiguous', never resent blindly).
    """
    CREATE TABLE outbox (
        id {id},
        confirmation_id {ref} NOT NULL REFERENCES confirmations(id) ON DELETE CASCADE,
        already INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'ambiguous')),
        attempts INTEGER NOT NULL DEFAULT 0,
        reply TEXT NOT NULL DEFAULT '',
        next_at BIGINT NOT NULL,
        claimed_by TEXT NOT NULL DEFAULT '',
        claimed_until BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_by_state ON outbox (state, next_at)
    """,
)
OUTBOX_STATES = ("pending", "sending", "sent", "ambiguous")
MIGRATIONS += (
    # Token buckets of the service's rate limits, shared by every process (digest.service.limits);
    # keys are client IPs and keyed hashes, never addresses; full buckets are deleted now and then.
    """
    CREATE TABLE rate_limits (
        key TEXT PRIMARY KEY,
        tokens {float} NOT NULL,
        updated {float} NOT NULL
    )
    """,
)

MIGRATIONS += (
    # Feedback per issue (bounces, complaints, unsubscribes: SubscriberStore.record_feedback), for the
    # rates `digest send --status` shows and the complaint brake; no foreign key, so an erased reader
    # still counts in the rates of the issues they had. And the ids of the provider notifications
    # (SES through SNS) already taken, so a replayed one is refused; kept as long as a notification
    # is fresh enough to be accepted at all.
    """
    CREATE TABLE feedback (
        issue TEXT NOT NULL,
        subscriber_id {ref} NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe')),
        source TEXT NOT NULL DEFAULT '',
        at TEXT NOT NULL,
        PRIMARY KEY (issue, kind, subscriber_id)
    ) {rowid};
    CREATE TABLE webhook_messages (
        message_id TEXT PRIMARY KEY,
        received BIGINT NOT NULL
    )
    """,
)


BOUNCE_FEEDBACK = {"bounced": "hard_bounce", "soft": "soft_bounce", "complained": "complaint",
                   "unsubscribed": "unsubscribe"}  # apply_bounce's outcomes as record_feedback's kinds


@dataclass(frozen=True, slots=True)
class IssueRates:
    """What came back from one issue: readers sent, and feedback attributed to it (``record_feedback``)."""

    issue: str
    sent: int
    hard_bounced: int
    soft_bounced: int
    complained: int
    unsubscribed: int

    @property
    def complaint_rate(self) -> float:
        """Complaints per message sent (0 when nothing was sent)."""
        return self.complained / self.sent if self.sent else 0.0


MIGRATIONS += (
    # `digest bounces` (digest.mail.bounces): each soft bounce of a subscriber, counted over a window
    # of days before it suppresses them; and every mailbox message already applied, by a hash of its
    # bytes, so a run that stops between applying a message and moving it never applies it twice.
    """
    CREATE TABLE soft_bounces (
        subscriber_id {ref} NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
        message_key TEXT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (subscriber_id, message_key)
    ) {rowid};
    CREATE TABLE bounce_messages (
        message_key TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        at BIGINT NOT NULL
    )
    """,
)

MIGRATIONS += (
    # Each reader's deliveries, newest first: an unsubscribe or a bounce is counted for the latest
    # issue the reader had (SqlStore._latest_issue), which without it read the whole ledger.
    "CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id, updated)",
)


@dataclass(frozen=True, slots=True)
class AddOutcome:
    """What ``add_many`` did: rows created and updated, and the rows skipped, by reason."""

    created: int = 0
    updated: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


DIALECTS = {
    "sqlite": {"id": "INTEGER PRIMARY KEY", "ref": "INTEGER", "rowid": "WITHOUT ROWID", "float": "REAL"},
    "postgresql": {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "ref": "BIGINT", "rowid": "",
                   "float": "DOUBLE PRECISION"},
}


def migration_statements(number: int, dialect: str) -> list[str]:
    """The statements of migration ``number`` (0-based) for one backend."""
    text = MIGRATIONS[number]
    text = text[dialect] if isinstance(text, dict) else text.format(**DIALECTS[dialect])
    return [statement.strip() for statement in text.split(";") if statement.strip()]


POOL_SIZE = 4  # PostgreSQL connections per process: 10 servers fit in the default max_connections
POOL_WAIT = 5.0  # seconds a request waits for a free connection before it is answered 503
RETRIES = 6  # times a transaction that PostgreSQL rolled back (deadlock, serialization) runs again


def pool_size_setting(env=None) -> int:
    """DIGEST_STORE_POOL: PostgreSQL connections per process (`digest serve`, `digest send`)."""
    raw = (env if env is not None else os.environ).get("DIGEST_STORE_POOL", "")
    if not raw.strip():
        return POOL_SIZE
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 100:
        raise UsageError(f"DIGEST_STORE_POOL is '{raw}': give a number of connections from 1 to 100")
    return int(raw)


class _Retry(Exception):
    """PostgreSQL rolled a transaction back (deadlock, serialization failure): run it again."""


def retried(method):
    """A store method that is one transaction, run again (briefly backing off, with jitter) while
    PostgreSQL rolls it back for a deadlock or a serialization failure: the caller never sees one."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        reason = None
        for attempt in range(RETRIES):
            try:
                return method(self, *args, **kwargs)
            except _Retry as exc:
                reason = exc
                time.sleep(random.uniform(0, 0.002 * 2 ** attempt))
        raise StoreError(f"the PostgreSQL store rolled {method.__name__} back {RETRIES} times: {reason}")
    return run


class _Rows:
    """A statement's rows and rowcount, read before its connection goes back to the pool."""

    def __init__(self, cursor):
        self.rowcount = cursor.rowcount
        self._rows = cursor.fetchall() if cursor.description else []

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


def _topics_text(topics: Iterable[str]) -> str:
    return " ".join(sorted(set(topics)))


class SqlStore(SubscriberStore):
    """The SQL both backends run. Subclasses provide ``_execute`` (one autocommitted statement),
    ``_tx`` (a transaction yielding an ``execute`` function), ``concat`` and ``claim``."""

    concat = "group_concat(tag, ' ')"
    dialect = "sqlite"

    @abc.abstractmethod
    def _execute(self, sql: str, args: tuple = ()): ...

    @abc.abstractmethod
    def _tx(self) -> contextlib.AbstractContextManager: ...

    def _one(self, sql: str, args: tuple = ()):
        return self._execute(sql, args).fetchone()

    def _init_connections(self) -> None:
        """One connection per thread, all remembered so ``close`` can end them."""
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()

    def _apply_migrations(self, execute, version: int, where: str) -> int:
        """Run the migrations after ``version``; the new version."""
        if version > len(MIGRATIONS):
            raise StoreError(f"{where} was written by a newer digest (schema {version}); upgrade digest")
        for number in range(version, len(MIGRATIONS)):
            for statement in migration_statements(number, self.dialect):
                execute(statement)
        for key in ("secret", "suppression_key"):
            if execute("SELECT 1 FROM meta WHERE key=?", (key,)).fetchone() is None:
                execute("INSERT INTO meta VALUES (?, ?)", (key, secrets.token_hex(32)))
        if version < SUPPRESSIONS_MIGRATION:
            self._backfill_suppressions(execute)
        self._seed_signing_key(execute)
        return len(MIGRATIONS)

    @staticmethod
    def _seed_signing_key(execute) -> None:
        """The first link-signing key is the store's secret, which signed every link until keys
        could be rotated: links already in readers' mailboxes keep working."""
        if execute("SELECT 1 FROM signing_keys WHERE retired IS NULL").fetchone() is None:
            execute("INSERT INTO signing_keys (key, created) SELECT value, ? FROM meta WHERE key='secret'",
                    (int(time.time()),))

    def _backfill_suppressions(self, execute) -> None:
        """Every address unsubscribed before suppressions existed is suppressed from now on."""
        key = bytes.fromhex(execute("SELECT value FROM meta WHERE key='suppression_key'").fetchone()[0])
        for address, changed in execute("SELECT address, changed FROM subscribers WHERE status='unsubscribed'"
                                        ).fetchall():
            execute("INSERT INTO suppressions VALUES (?, 'unsubscribed', ?) ON CONFLICT DO NOTHING",
                    (suppression_hash(key, address), changed))

    # --- suppressions ---
    def _suppression_key(self, execute) -> bytes:
        key = getattr(self, "_suppression_key_bytes", None)
        if key is None:
            row = execute("SELECT value FROM meta WHERE key='suppression_key'").fetchone()
            key = self._suppression_key_bytes = bytes.fromhex(row[0])
        return key

    def _suppressed(self, execute, address: str) -> str | None:
        """Why ``address`` is suppressed (one of SUPPRESSION_REASONS), or None."""
        row = execute("SELECT reason FROM suppressions WHERE address_hash=?",
                      (suppression_hash(self._suppression_key(execute), address),)).fetchone()
        return row[0] if row else None

    def _suppress(self, execute, subscriber_id: int, reason: str, address: str | None = None) -> None:
        """Suppress the subscriber's address (``address`` when the caller has read it already)."""
        if address is None:
            row = execute("SELECT address FROM subscribers WHERE id=?", (subscriber_id,)).fetchone()
            address = row[0] if row else None
        if address is not None:
            execute("INSERT INTO suppressions VALUES (?, ?, ?) ON CONFLICT (address_hash) DO UPDATE SET "
                    "reason=excluded.reason, since=excluded.since",
                    (suppression_hash(self._suppression_key(execute), address), reason, _now()))

    @retried
    def suppression(self, address):
        with self._tx() as execute:
            return self._suppressed(execute, normalize_address(address))

    def suppression_counts(self) -> dict[str, int]:
        found = dict(self._execute("SELECT reason, count(*) FROM suppressions GROUP BY reason").fetchall())
        return {reason: found.get(reason, 0) for reason in SUPPRESSION_REASONS}

    @retried
    def apply_bounce(self, message_key, outcome, subscriber_id=None, soft_limit=3, soft_days=30, now=None,
                     issue=None):
        now = int(time.time() if now is None else now)
        with self._tx() as execute:
            if execute("INSERT INTO bounce_messages VALUES (?, ?, ?) ON CONFLICT (message_key) DO NOTHING "
                       "RETURNING message_key", (message_key, outcome, now)).fetchone() is None:
                return "already applied"
            if subscriber_id is None or outcome not in ("bounced", "complained", "unsubscribed", "soft"):
                return "recorded"
            self._lock_subscriber(execute, subscriber_id)
            row = execute("SELECT address, status FROM subscribers WHERE id=?", (subscriber_id,)).fetchone()
            if row is None:
                return "recorded"
            # what `digest send --status` and the complaint brake count for the issue
            self._add_feedback(execute, subscriber_id, issue or self._latest_issue(execute, subscriber_id),
                               BOUNCE_FEEDBACK[outcome], "bounces")
            if outcome == "soft":
                execute("INSERT INTO soft_bounces VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                        (subscriber_id, message_key, now))
                count = execute("SELECT count(*) FROM soft_bounces WHERE subscriber_id=? AND at > ?",
                                (subscriber_id, now - int(soft_days * 86400))).fetchone()[0]
                if count < soft_limit:
                    return f"counted {count} of {soft_limit}"
                outcome = "bounced"
            already = self._suppressed(execute, row[0])
            if row[1] == "unsubscribed" and already in (outcome, "bounced", "complained"):
                return "already suppressed"
            execute("UPDATE subscribers SET status='unsubscribed', changed=? WHERE id=?", (_now(), subscriber_id))
            execute("UPDATE confirmations SET used_at=? WHERE subscriber_id=? AND used_at IS NULL",
                    (now, subscriber_id))
            if already not in ("bounced", "complained") or outcome == "complained":
                self._suppress(execute, subscriber_id, outcome)  # a complaint outranks the rest
            return "unsubscribed" if outcome == "unsubscribed" else "suppressed"

    # --- keys ---
    def secret(self) -> bytes:
        secret = getattr(self, "_secret", None)
        if secret is None:
            secret = self._secret = bytes.fromhex(self._one("SELECT value FROM meta WHERE key='secret'")[0])
        return secret

    def keyring(self, now: float | None = None) -> Keyring:
        now = time.time() if now is None else now
        rows = self._execute("SELECT id, key, retired FROM signing_keys WHERE retired IS NULL OR verify_until > ? "
                             "ORDER BY id DESC", (int(now),)).fetchall()
        current = [bytes.fromhex(key) for _, key, retired in rows if retired is None]
        if len(current) != 1:
            raise StoreError("the subscriber store has no current link-signing key; run "
                             "`digest subscribers rotate-key` to make one")
        return Keyring(current[0], tuple(bytes.fromhex(key) for _, key, retired in rows if retired is not None),
                       ids=tuple(i for i, _, _ in rows))

    def rotate_signing_key(self, keep_days: float, now: float | None = None) -> Rotation:
        if keep_days < 0:
            raise UsageError("--keep-days cannot be negative; 0 refuses links signed before the rotation at once")
        now = int(time.time() if now is None else now)
        until = now + int(keep_days * 86400)
        with self._tx() as execute:
            # a concurrent rotation retired the same key first: this UPDATE then finds no current row
            retired = execute("UPDATE signing_keys SET retired=?, verify_until=? WHERE retired IS NULL RETURNING id",
                              (now, until)).fetchall()
            if not retired and execute("SELECT 1 FROM signing_keys WHERE retired IS NULL").fetchone():
                raise StoreError("another key rotation finished meanwhile; nothing was changed by this one "
                                 "(run it again only to rotate twice)")
            # one rule for every link signed before: valid at most keep_days more (0: a leaked store
            # leaked every key, so none may verify)
            execute("UPDATE signing_keys SET verify_until=? WHERE retired IS NOT NULL AND verify_until > ?",
                    (until, until))
            erased = execute("DELETE FROM signing_keys WHERE retired IS NOT NULL AND verify_until <= ?",
                             (now,)).rowcount
            new_id = execute("INSERT INTO signing_keys (key, created) VALUES (?, ?) RETURNING id",
                             (secrets.token_hex(32), now)).fetchone()[0]
            verifying = execute("SELECT count(*) FROM signing_keys WHERE retired IS NOT NULL").fetchone()[0]
        return Rotation(new_id, retired[0][0] if retired else None, until if until > now else None, verifying,
                        erased)

    # --- subscribers ---
    @retried
    def add(self, address, topics=(), status="confirmed", source="admin"):
        address = normalize_address(address)
        with self._tx() as execute:
            subscriber_id, outcome = self._upsert(execute, address, tuple(topics), status, source)
        return (self.get(subscriber_id) if subscriber_id is not None else None), outcome == "created"

    @retried
    def add_many(self, rows, source):
        created = updated = 0
        skipped: dict[str, int] = {}
        with self._tx() as execute:
            for address, topics, status in rows:
                outcome = self._upsert(execute, address, topics, status, source)[1]
                if outcome == "created":
                    created += 1
                elif outcome == "updated":
                    updated += 1
                else:
                    skipped[outcome] = skipped.get(outcome, 0) + 1
        return AddOutcome(created, updated, skipped)

    @staticmethod
    def _insert(execute, address: str, status: str, source: str) -> int | None:
        """The new subscriber's id, or None when the address is already there."""
        now = _now()
        row = execute("INSERT INTO subscribers (address, address_key, status, source, created, changed) "
                      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (address_key) DO NOTHING RETURNING id",
                      (address, address.lower(), status, source, now, now)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _replace_topics(execute, subscriber_id: int, topics: Iterable[str]) -> None:
        execute("DELETE FROM subscriber_topics WHERE subscriber_id=?", (subscriber_id,))
        for tag in sorted(set(topics)):
            execute("INSERT INTO subscriber_topics VALUES (?, ?) ON CONFLICT DO NOTHING", (subscriber_id, tag))

    def _upsert(self, execute, address: str, topics: tuple[str, ...], status: str,
                source: str) -> tuple[int | None, str]:
        """(id, "created" | "updated" | a suppression reason): a suppressed address (one that
        unsubscribed, bounced or complained) is left as it is, or not added at all; an operator's
        list must not sign a reader up again, the reader can, through the form's confirmation."""
        if status not in STATUSES:
            raise UsageError(f"unknown subscriber status '{status}'; one of: {', '.join(STATUSES)}")
        reason = self._suppressed(execute, address)
        if reason is not None and status != "unsubscribed":
            row = execute("SELECT id FROM subscribers WHERE address_key=?", (address.lower(),)).fetchone()
            return (row[0] if row else None), reason
        subscriber_id = self._insert(execute, address, status, source)
        if subscriber_id is not None:
            self._replace_topics(execute, subscriber_id, topics)
            return subscriber_id, "created"
        # the row lock of this UPDATE orders concurrent changes of one subscriber
        row = execute("UPDATE subscribers SET status=?, changed=? WHERE address_key=? "
                      "AND (status <> 'unsubscribed' OR ? = 'unsubscribed') RETURNING id",
                      (status, _now(), address.lower(), status)).fetchone()
        if row is None:  # unsubscribed before suppressions existed, and never backfilled
            return execute("SELECT id FROM subscribers WHERE address_key=?", (address.lower(),)).fetchone()[0], \
                "unsubscribed"
        if status == "unsubscribed":
            self._suppress(execute, row[0], "unsubscribed")
        self._replace_topics(execute, row[0], topics)
        return row[0], "updated"

    @retried
    def set_status(self, subscriber_id, status):
        if status not in STATUSES:
            raise UsageError(f"unknown subscriber status '{status}'")
        if status == "unsubscribed":
            return self.unsubscribe(subscriber_id) or self.get(subscriber_id) is not None
        with self._tx() as execute:
            row = execute("SELECT address FROM subscribers WHERE id=?", (subscriber_id,)).fetchone()
            if row is None or self._suppressed(execute, row[0]) is not None:
                return False  # only the reader's own confirmation lifts a suppression
            return execute("UPDATE subscribers SET status=?, changed=? WHERE id=?",
                           (status, _now(), subscriber_id)).rowcount == 1

    def count(self, status=None):
        if status is None:
            return self._one("SELECT count(*) FROM subscribers")[0]
        return self._one("SELECT count(*) FROM subscribers WHERE status=?", (status,))[0]

    def _select(self, where: str, args: tuple) -> list[Subscriber]:
        rows = self._execute(
            f"SELECT s.id, s.address, s.status, s.created, (SELECT {self.concat} FROM subscriber_topics t "
            f"WHERE t.subscriber_id = s.id) FROM subscribers s WHERE {where} ORDER BY s.id", args).fetchall()
        return [Subscriber(i, a, tuple(sorted((t or "").split())), s, c) for i, a, s, c, t in rows]

    def get(self, subscriber_id):
        found = self._select("s.id=?", (subscriber_id,))
        return found[0] if found else None

    def find(self, address):
        found = self._select("s.address_key=?", (normalize_address(address).lower(),))
        return found[0] if found else None

    def subscribers(self, status=None):
        if status is None:
            return self._select("1=1", ())
        return self._select("s.status=?", (status,))

    @retried
    def remove(self, subscriber_id):
        with self._tx() as execute:
            return self._erase(execute, subscriber_id)

    @staticmethod
    def _lock_subscriber(execute, subscriber_id: int) -> None:
        """Take the subscriber's row lock first, in every transaction that changes a subscriber and
        their confirmations: one lock order everywhere, so confirm and unsubscribe never deadlock."""
        execute("UPDATE subscribers SET changed=changed WHERE id=?", (subscriber_id,))

    @classmethod
    def _erase(cls, execute, subscriber_id: int) -> bool:
        cls._lock_subscriber(execute, subscriber_id)
        execute("DELETE FROM deliveries WHERE subscriber_id=?", (subscriber_id,))
        execute("DELETE FROM confirmations WHERE subscriber_id=?", (subscriber_id,))
        execute("DELETE FROM subscriber_topics WHERE subscriber_id=?", (subscriber_id,))
        return execute("DELETE FROM subscribers WHERE id=?", (subscriber_id,)).rowcount == 1

    @retried
    def purge_unconfirmed(self, days=PURGE_AFTER_DAYS):
        cutoff = int(time.time()) - int(days * 86400)
        with self._tx() as execute:
            stale = [row[0] for row in execute(
                "SELECT s.id FROM subscribers s WHERE s.status='pending' AND s.source='serve' AND NOT EXISTS "
                "(SELECT 1 FROM confirmations c WHERE c.subscriber_id = s.id AND c.expires_at > ?)", (cutoff,))]
            for subscriber_id in stale:
                self._erase(execute, subscriber_id)
        return len(stale)

    @retried
    def unsubscribe(self, subscriber_id):
        with self._tx() as execute:
            row = execute("UPDATE subscribers SET status='unsubscribed', changed=? "
                          "WHERE id=? AND status != 'unsubscribed' RETURNING address",
                          (_now(), subscriber_id)).fetchone()
            execute("UPDATE confirmations SET used_at=? WHERE subscriber_id=? AND used_at IS NULL",
                    (int(time.time()), subscriber_id))
            if row is not None:
                self._suppress(execute, subscriber_id, "unsubscribed", address=row[0])
                # counted for the latest issue they had: the one they left from, by whichever link
                self._add_feedback(execute, subscriber_id, self._latest_issue(execute, subscriber_id),
                                   "unsubscribe", "unsubscribe")
        return row is not None

    @retried
    def set_topics(self, subscriber_id, topics):
        with self._tx() as execute:
            found = execute("UPDATE subscribers SET changed=? WHERE id=? AND status != 'unsubscribed' RETURNING id",
                            (_now(), subscriber_id)).fetchone()
            if found:
                self._replace_topics(execute, subscriber_id, topics)
        return found is not None

    # --- double opt-in ---
    @retried
    def request_confirmation(self, address, topics, window, lifetime):
        address, now = normalize_address(address), int(time.time())
        with self._tx() as execute:
            subscriber_id = self._insert(execute, address, "pending", "serve")
            if subscriber_id is None:  # known: its status stays; only the mailed link can change it
                subscriber_id = execute("SELECT id FROM subscribers WHERE address_key=?",
                                        (address.lower(),)).fetchone()[0]
            last = execute("SELECT max(created_at) FROM confirmations WHERE subscriber_id=?",
                           (subscriber_id,)).fetchone()[0]
            confirmation = None
            if last is None or now - last >= window:
                expires = now + int(lifetime)
                row = execute("INSERT INTO confirmations (subscriber_id, topics, created_at, expires_at) "
                              "VALUES (?, ?, ?, ?) RETURNING id",
                              (subscriber_id, _topics_text(topics), now, expires)).fetchone()
                confirmation = Confirmation(row[0], subscriber_id, expires)
                already = execute("SELECT status FROM subscribers WHERE id=?", (subscriber_id,)).fetchone()[0]
                execute("INSERT INTO outbox (confirmation_id, already, state, next_at) VALUES (?, ?, 'pending', ?)",
                        (confirmation.id, int(already == "confirmed"), now))
        return self.get(subscriber_id), confirmation

    skip_locked = ""  # PostgreSQL: senders of several servers claim different rows without waiting

    @retried
    def claim_outbox(self, sender, lease):
        now = int(time.time())
        with self._tx() as execute:
            execute("UPDATE outbox SET state='ambiguous', reply=? WHERE state='sending' AND claimed_until < ?",
                    ("its sender stopped after the final '.', before the server's reply", now))
            row = execute(
                "UPDATE outbox SET claimed_by=?, claimed_until=? WHERE id = (SELECT id FROM outbox "
                f"WHERE state='pending' AND next_at <= ? AND claimed_until < ? ORDER BY id LIMIT 1{self.skip_locked}) "
                "RETURNING id, confirmation_id, already, attempts", (sender, now + int(lease), now, now)).fetchone()
            if row is None:
                return None
            mail_id, confirmation_id, already, attempts = row
            subscriber_id, expires, address = execute(
                "SELECT c.subscriber_id, c.expires_at, s.address FROM confirmations c "
                "JOIN subscribers s ON s.id = c.subscriber_id WHERE c.id=?", (confirmation_id,)).fetchone()
        return OutboxMail(mail_id, Confirmation(confirmation_id, subscriber_id, expires), address, bool(already),
                          attempts)

    @retried
    def begin_outbox(self, mail_id, sender):
        return self._execute("UPDATE outbox SET state='sending' WHERE id=? AND claimed_by=? "
                             "AND state='pending' AND claimed_until >= ?",
                             (mail_id, sender, int(time.time()))).rowcount == 1

    @retried
    def finish_outbox(self, mail_id, state, reply="", retry_in=None):
        if state not in OUTBOX_STATES or (state == "pending") != (retry_in is not None):
            raise UsageError(f"an outbox mail ends 'sent' or 'ambiguous', or goes back to 'pending' with a "
                             f"retry time, not '{state}'")
        self._execute("UPDATE outbox SET state=?, reply=?, next_at=?, attempts=attempts+?, claimed_by='', "
                      "claimed_until=0 WHERE id=?",
                      (state, reply[:300], int(time.time() + (retry_in or 0)), int(state == "pending"), mail_id))

    def outbox_counts(self):
        found = dict(self._execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
        return {state: found.get(state, 0) for state in OUTBOX_STATES}

    for_update = ""  # PostgreSQL: the bucket's row is locked from the read to the write

    @retried
    def take_token(self, key, capacity, rate):
        now = time.time()
        with self._tx() as execute:
            execute("INSERT INTO rate_limits VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING", (key, capacity, now))
            tokens, then = execute(f"SELECT tokens, updated FROM rate_limits WHERE key=?{self.for_update}",
                                   (key,)).fetchone()
            tokens = min(capacity, tokens + max(0.0, now - then) * rate)
            taken = tokens >= 1
            execute("UPDATE rate_limits SET tokens=?, updated=? WHERE key=?", (tokens - 1 if taken else tokens, now,
                                                                                key))
            if random.random() < 0.001:  # buckets refilled to the brim are the same as none: bound the table
                kind = key.split(":", 1)[0] + ":%"  # this limit's buckets only: others refill at their own rate
                execute("DELETE FROM rate_limits WHERE key LIKE ? AND updated < ?", (kind, now - capacity / rate))
        return 0.0 if taken else (1 - tokens) / rate

    @retried
    def withdraw_confirmation(self, confirmation_id):
        return self._execute("DELETE FROM confirmations WHERE id=? AND used_at IS NULL",
                             (confirmation_id,)).rowcount == 1

    def confirmation_status(self, confirmation_id):
        row = self._one("SELECT subscriber_id, used_at, expires_at FROM confirmations WHERE id=?", (confirmation_id,))
        if row is None:
            return "unknown", None
        subscriber_id, used_at, expires_at = row
        state = "used" if used_at is not None else "expired" if expires_at <= int(time.time()) else "open"
        return state, self.get(subscriber_id)

    @retried
    def confirm(self, confirmation_id):
        now = int(time.time())
        with self._tx() as execute:
            owner = execute("SELECT subscriber_id FROM confirmations WHERE id=?", (confirmation_id,)).fetchone()
            if owner is not None:  # the subscriber's lock before the confirmation's, as unsubscribe takes them
                self._lock_subscriber(execute, owner[0])
            row = execute("UPDATE confirmations SET used_at=? WHERE id=? AND used_at IS NULL AND expires_at > ? "
                          "RETURNING subscriber_id, topics", (now, confirmation_id, now)).fetchone()
            if row is None:
                found = execute("SELECT used_at FROM confirmations WHERE id=?", (confirmation_id,)).fetchone()
                return ("unknown" if found is None else "used" if found[0] is not None else "expired"), None
            subscriber_id, topics = row
            address = execute("UPDATE subscribers SET status='confirmed', changed=? WHERE id=? RETURNING address",
                              (_now(), subscriber_id)).fetchone()[0]
            # the reader opened a link mailed to the address: their own consent lifts the suppression
            execute("DELETE FROM suppressions WHERE address_hash=?",
                    (suppression_hash(self._suppression_key(execute), address),))
            self._replace_topics(execute, subscriber_id, topics.split())
            execute("UPDATE confirmations SET used_at=? WHERE subscriber_id=? AND used_at IS NULL",
                    (now, subscriber_id))  # the other links of this subscriber are spent too
        return "confirmed", self.get(subscriber_id)

    # --- ledger ---
    @retried
    def queue(self, issue, channel):
        with self._tx() as execute:
            cur = execute(
                "INSERT INTO deliveries (issue, channel, subscriber_id, state, updated) "
                "SELECT ?, ?, id, 'pending', ? FROM subscribers WHERE status='confirmed' ON CONFLICT DO NOTHING",
                (issue, channel, _now()))
            added = cur.rowcount
            execute("UPDATE deliveries SET state='skipped', reply='no longer subscribed', updated=? "
                    "WHERE issue=? AND channel=? AND state='pending' AND subscriber_id IN "
                    "(SELECT id FROM subscribers WHERE status != 'confirmed')", (_now(), issue, channel))
        return added

    @retried
    def resend_ambiguous(self, issue, channel, when=None):
        query, args = ("UPDATE deliveries SET state='pending', updated=? WHERE issue=? AND channel=? "
                       "AND state='ambiguous'"), (_now(), issue, channel)
        if when is not None:
            if when not in AMBIGUOUS_WHEN:
                raise UsageError(f"resend which ambiguous recipients? '{when}': one of {', '.join(AMBIGUOUS_WHEN)}")
            prefix = AMBIGUOUS_WHEN[when]
            query, args = query + " AND substr(reply, 1, ?) = ?", args + (len(prefix), prefix)
        return self._execute(query, args).rowcount

    def channels(self, issue):
        return [row[0] for row in self._execute("SELECT DISTINCT channel FROM deliveries WHERE issue=? "
                                                "ORDER BY channel", (issue,))]

    def previous_issue(self, issue, channel):
        row = self._one("SELECT max(issue) FROM deliveries WHERE channel=? AND issue < ? AND state='sent'",
                        (channel, issue))
        return row[0] if row else None

    # --- feedback ---
    @staticmethod
    def _latest_issue(execute, subscriber_id: int) -> str | None:
        row = execute("SELECT issue FROM deliveries WHERE subscriber_id=? AND state='sent' "
                      "ORDER BY updated DESC, issue DESC LIMIT 1", (subscriber_id,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _add_feedback(execute, subscriber_id: int, issue: str | None, kind: str, source: str) -> bool:
        if issue is None:
            return False
        return execute("INSERT INTO feedback (issue, subscriber_id, kind, source, at) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT DO NOTHING", (issue, subscriber_id, kind, source[:100], _now())).rowcount == 1

    @retried
    def record_feedback(self, subscriber_id, issue, kind, source=""):
        if kind not in FEEDBACK_KINDS:
            raise UsageError(f"unknown feedback '{kind}'; one of: {', '.join(FEEDBACK_KINDS)}")
        with self._tx() as execute:
            if kind in ("hard_bounce", "complaint"):
                self._lock_subscriber(execute, subscriber_id)
                execute("UPDATE subscribers SET status='unsubscribed', changed=? WHERE id=? AND status != "
                        "'unsubscribed'", (_now(), subscriber_id))
                execute("UPDATE confirmations SET used_at=? WHERE subscriber_id=? AND used_at IS NULL",
                        (int(time.time()), subscriber_id))
                reason = "complained" if kind == "complaint" else "bounced"
                row = execute("SELECT address FROM subscribers WHERE id=?", (subscriber_id,)).fetchone()
                if row is not None and (reason == "complained" or self._suppressed(execute, row[0]) != "complained"):
                    self._suppress(execute, subscriber_id, reason)
            if issue is None:
                issue = self._latest_issue(execute, subscriber_id)
            return self._add_feedback(execute, subscriber_id, issue, kind, source)

    def issue_rates(self, issue, channel):
        sent = self._one("SELECT count(*) FROM deliveries WHERE issue=? AND channel=? AND state='sent'",
                         (issue, channel))[0]
        found = dict(self._execute("SELECT kind, count(*) FROM feedback WHERE issue=? GROUP BY kind",
                                   (issue,)).fetchall())
        return IssueRates(issue, sent, found.get("hard_bounce", 0), found.get("soft_bounce", 0),
                          found.get("complaint", 0), found.get("unsubscribe", 0))

    @retried
    def take_webhook_message(self, message_id, keep):
        now = int(time.time())
        with self._tx() as execute:
            if random.random() < 0.01:  # ids past the freshness window cannot be accepted again anyway
                execute("DELETE FROM webhook_messages WHERE received < ?", (now - int(keep),))
            return execute("INSERT INTO webhook_messages VALUES (?, ?) ON CONFLICT DO NOTHING",
                           (message_id[:200], now)).rowcount == 1

    @retried
    def release_webhook_message(self, message_id):
        self._execute("DELETE FROM webhook_messages WHERE message_id=?", (message_id[:200],))

    def pending(self, issue, channel, after, limit):
        rows = self._execute(
            f"SELECT s.id, s.address, s.status, (SELECT {self.concat} FROM subscriber_topics t "
            "WHERE t.subscriber_id = s.id) FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
            "WHERE d.issue=? AND d.channel=? AND d.state='pending' AND d.subscriber_id > ? AND s.status='confirmed' "
            "ORDER BY d.subscriber_id LIMIT ?", (issue, channel, after, limit)).fetchall()
        return [Subscriber(i, a, tuple(sorted((t or "").split())), s) for i, a, s, t in rows]

    @retried
    def begin_send(self, issue, channel, subscriber_id):
        return self._execute(
            "UPDATE deliveries SET state='sending', reply='', attempts=attempts+1, updated=? "
            "WHERE issue=? AND channel=? AND subscriber_id=? AND state='pending' "
            "AND EXISTS (SELECT 1 FROM subscribers WHERE id=? AND status='confirmed')",
            (_now(), issue, channel, subscriber_id, subscriber_id)).rowcount == 1

    @retried
    def finish(self, issue, channel, subscriber_id, state, reply="", attempts=0):
        if state not in STATES:
            raise UsageError(f"unknown delivery state '{state}'")
        self._execute("UPDATE deliveries SET state=?, reply=?, attempts=attempts+?, updated=? "
                      "WHERE issue=? AND channel=? AND subscriber_id=?",
                      (state, reply[:500], attempts, _now(), issue, channel, subscriber_id))

    def counts(self, issue, channel):
        found = dict(self._execute("SELECT state, count(*) FROM deliveries WHERE issue=? AND channel=? "
                                   "GROUP BY state", (issue, channel)).fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def deliveries(self, issue, channel, state=None):
        query = ("SELECT d.subscriber_id, s.address, d.state, d.attempts, d.reply, d.updated FROM deliveries d "
                 "JOIN subscribers s ON s.id = d.subscriber_id WHERE d.issue=? AND d.channel=?")
        args: tuple = (issue, channel)
        if state is not None:
            query += " AND d.state=?"
            args += (state,)
        return [Delivery(*row) for row in self._execute(query + " ORDER BY d.subscriber_id", args)]


class SqliteStore(SqlStore):
    """One SQLite file in WAL mode; a connection per thread.

    synchronous=NORMAL: every commit survives the process being killed (the WAL is in the OS
    before COMMIT returns); ``durable=True`` (synchronous=FULL) also survives power loss, at
    ~0.4 ms per commit.
    """

    def __init__(self, path: str | Path, durable: bool = False):
        self.path = Path(path)
        self.durable = durable
        self._init_connections()
        self._writer = threading.RLock()  # one writing thread at a time in this process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Every address and the key that signs every link: readable by its owner only (SQLite
        # gives its -wal and -shm files the database's permissions).
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
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

    def _execute(self, sql, args=()):
        con = self.db
        try:
            if sql.startswith(("UPDATE", "INSERT", "DELETE")):
                with self._writer:
                    return con.execute(sql, args)
            return con.execute(sql, args)
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, file gone
            raise StoreError(f"the subscriber store {self.path} failed: {exc}") from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator:
        """A write transaction. Threads of this process take turns on a lock first: SQLite's own
        busy handler sleeps up to 100 ms between tries, which made the slowest 1 % of requests
        under load wait that long; other processes still meet the busy timeout."""
        con = self.db
        with self._writer:
            self._begin(con)
            try:
                yield con.execute
            except BaseException as exc:
                con.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreError(f"the subscriber store {self.path} failed: {exc}") from None
                raise
            con.execute("COMMIT")

    def _begin(self, con: sqlite3.Connection) -> None:
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the subscriber store {self.path} failed: {exc}") from None

    def _migrate(self) -> None:
        # A migration that rebuilds a table drops it: with foreign keys on, that would delete the
        # rows referring to it. The pragma only takes effect outside a transaction.
        self.db.execute("PRAGMA foreign_keys=OFF")
        try:
            with self._tx() as execute:
                version = execute("PRAGMA user_version").fetchone()[0]
                if version < len(MIGRATIONS):
                    execute(f"PRAGMA user_version={self._apply_migrations(execute, version, str(self.path))}")
                elif version > len(MIGRATIONS):
                    self._apply_migrations(execute, version, str(self.path))  # raises: a newer schema
                broken = execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(f"{self.path}: rows refer to missing subscribers after the upgrade "
                                     f"({len(broken)}); nothing was changed")
        finally:
            self.db.execute("PRAGMA foreign_keys=ON")

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


class PostgresStore(SqlStore):
    """PostgreSQL (a DSN) for deployments on several machines: a connection per thread, autocommit
    outside transactions; migrations serialized by an advisory lock, so several servers may start
    at once; ``claim`` holds ``pg_try_advisory_lock`` on its own connection, which the server
    releases when the sender's connection dies.
    """

    concat = "string_agg(tag, ' ')"
    dialect = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"
    shared = True
    MIGRATION_LOCK = 0x64696765  # 'dige'

    def __init__(self, dsn: str, pool_size: int | None = None, pool_wait: float | None = None):
        from psycopg_pool import ConnectionPool

        self.dsn = dsn
        self.pool_size = pool_size or pool_size_setting()
        self._sql: dict[str, str] = {}
        self._connect().close()  # an unreachable server: one clear error now, not a pool timing out later
        # At most pool_size connections per process, whatever the number of threads: a request waits
        # up to pool_wait seconds for one, so several servers fit in the server's max_connections.
        self._pool = ConnectionPool(dsn, min_size=1, max_size=self.pool_size, timeout=pool_wait or POOL_WAIT,
                                    open=False, kwargs={"autocommit": True, "connect_timeout": 10},
                                    name="digest-store")
        self._pool.open()
        self._migrate()

    def _connect(self):
        import psycopg

        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"cannot connect to the PostgreSQL store at {_redact_dsn(self.dsn)}: {reason}") from None

    def close(self) -> None:
        self._pool.close()

    def _convert(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = sql.replace("?", "%s")
        return converted

    def _execute(self, sql, args=()):
        with self._connection() as con:
            return _Rows(con.execute(self._convert(sql), args))

    @contextlib.contextmanager
    def _tx(self) -> Iterator:
        with self._connection() as con, con.transaction():
            yield lambda sql, args=(): con.execute(self._convert(sql), args)

    @contextlib.contextmanager
    def _connection(self) -> Iterator:
        """A connection of the pool for one statement or transaction; PostgreSQL's failures as the
        store's: a rolled-back deadlock or serialization failure as _Retry (``retried`` runs the
        method again), a broken connection (the pool replaces it) or no free one as StoreError."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as con:
                yield con
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            raise _Retry(str(exc).strip().splitlines()[0]) from None
        except PoolTimeout:
            raise StoreError(f"no PostgreSQL connection free within {self._pool.timeout:g} s "
                             f"({self.pool_size} per process, DIGEST_STORE_POOL)") from None
        except psycopg.OperationalError as exc:  # the server went away: the pool opens a new one
            raise StoreError(f"the PostgreSQL store failed: {str(exc).strip()[:200]}") from None

    def _migrate(self) -> None:
        with self._tx() as execute:
            execute("SELECT pg_advisory_xact_lock(?)", (self.MIGRATION_LOCK,))
            exists = execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
            version = 0
            if exists:
                row = execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                version = int(row[0]) if row else 1
            if version != len(MIGRATIONS):
                new = self._apply_migrations(execute, version, _redact_dsn(self.dsn))
                execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                        (str(new),))

    @contextlib.contextmanager
    def claim(self, issue, channel):
        con = self._connect()
        key = f"digest-send:{issue}:{channel}"
        try:
            if not con.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
                raise SendInProgress(f"another `digest send` of {issue} to {channel} is running (it holds the "
                                     "store's lock); wait for it or stop it")
            yield
        finally:
            con.close()  # ends the session: the lock goes with it


def _redact_dsn(dsn: str) -> str:
    """A DSN fit for messages: no password."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", re.sub(r"(password=)\S+", r"\1***", dsn))


# libpq's "key=value ..." connection strings (host=db port=5432 dbname=digest): PostgreSQL too
_LIBPQ_KEYWORDS = re.compile(r"\s*(host|hostaddr|port|dbname|user|password|service|sslmode|connect_timeout)\s*=")


def open_store(location: str | Path | None = None, durable: bool = False, create: bool = True) -> SubscriberStore:
    """The store at ``location`` (default: $DIGEST_STORE, else var/subscribers.sqlite3): a file path,
    sqlite:///path, or a PostgreSQL DSN (postgresql://user@host:port/db, or libpq's key=value form).
    ``create=False`` (sending, listing): a SQLite file that does not exist is an error, not an empty
    store, so a mistyped location cannot read as "no subscribers"."""
    backend, where = _location(location)
    if backend == "postgresql":
        return PostgresStore(where)
    if not create and not where.exists():
        raise StoreError(f"no subscriber store at {where}: check DIGEST_STORE (or --store, or the config's "
                         "store); `digest serve` and `digest subscribers add|import` create a new one")
    return SqliteStore(where, durable=durable)


def _location(location: str | Path | None) -> tuple[str, str | Path]:
    """("postgresql", the DSN) or ("sqlite", the file's path), from a location as open_store takes it."""
    location = str(location or os.environ.get("DIGEST_STORE") or DEFAULT_LOCATION)
    if location.startswith(("postgresql://", "postgres://")) or _LIBPQ_KEYWORDS.match(location):
        return "postgresql", location
    if location.startswith("sqlite:///"):
        location = location[len("sqlite:///"):]
    elif "://" in location:
        raise UsageError(f"unknown store location '{location.split('://')[0]}://...'; give a file path, "
                         "sqlite:///path or postgresql://...")
    path = Path(location)
    if path.is_dir():
        raise UsageError(f"the subscriber store {path} is a folder; give the store's file, "
                         f"such as {path / Path(DEFAULT_LOCATION).name}")
    return "sqlite", path


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """What ``inspect_store`` found: the backend, where (a DSN without its password), and the schema
    version (0: nothing there yet, a new store; above len(MIGRATIONS): a newer digest wrote it)."""

    backend: str
    where: str
    version: int


def inspect_store(location: str | Path | None = None) -> StoreInfo:
    """The store's backend and schema version, read without creating or migrating anything (for
    `digest serve --check`); StoreError when it cannot be reached or read."""
    backend, where = _location(location)
    if backend == "postgresql":
        return StoreInfo(backend, _redact_dsn(where), _postgres_version(where))
    if not where.exists():
        return StoreInfo(backend, str(where), 0)
    try:
        con = sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=5)
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the subscriber store {where}: {exc}") from None
    return StoreInfo(backend, str(where), version)


def _postgres_version(dsn: str) -> int:
    """The schema version as PostgresStore._migrate reads it (a meta table without 'schema': 1)."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as con:
            if not con.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]:
                return 0
            row = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            return int(row[0]) if row else 1
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StoreError(f"cannot reach the PostgreSQL store at {_redact_dsn(dsn)}: {reason}") from None
