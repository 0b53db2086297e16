"""Stage: deliver — one issue to every confirmed subscriber, exactly once, through the ledger.

    send(...)          claim the issue, settle what a dead run left, queue, send with workers,
                       pause when permanent failures pass the threshold, report
    OutboxTransport    one .eml per recipient in outbox/<week>/mail/ (the embedded default)
    SmtpTransport      any SMTP relay: implicit TLS or STARTTLS, login; one connection per worker,
                       reconnected with exponential backoff and jitter for ``reconnect_for`` seconds
    SmtpSettings, SendSettings   environment or config file, never git
    status_lines(...)  what was sent to whom, per state; addresses only when asked

Per message the ledger row goes pending → sending → sent. 'sending' is committed after the
message's content and before its final '.', the only moment after which the server may have
accepted it; a run that dies then leaves the row 'sending', which the next run reports as
ambiguous and does not resend (``--resend-ambiguous`` does). Everything before that point is
retried, so nobody is skipped; nothing after it is retried, so nobody gets two copies.

An ambiguous recipient's reason says when the sender stopped: before the final '.' was written
(the server cannot have accepted the message: resending duplicates nobody) or after it, before
the reply (it may have: resending may send a second copy); ``--resend-ambiguous before-end`` or
``after-end`` takes one kind. The '.' being written is recorded in the row (still 'sending')
between writing it and reading the reply, so a killed run's rows say it too.

Before a new issue starts on a channel, the previous issue's complaint rate is checked: at or
over ``COMPLAINT_STOP`` (0.3 %, the bulk-sender limit of Gmail and Yahoo) the send is refused
(``ignore_complaints`` overrides), at ``COMPLAINT_WARN`` (0.1 %, Gmail's advice) it warns.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import re
import smtplib
import socket
import ssl
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from digest.errors import AddressInvalid, ComplaintRateTooHigh, DeliveryError, MailSettingsError, SendPaused
from digest.files import beside
from digest.mail.message import MessageTemplate, password_setting, setting
from digest.subscribers.store import (
    AMBIGUOUS_AFTER,
    AMBIGUOUS_BEFORE,
    DOT_WRITTEN,
    IssueRates,
    Subscriber,
    SubscriberStore,
    keyed_hash,
)

# a stopped run's rows left 'sending', as the next run settles them (by whether the '.' was recorded written)
STOPPED_BEFORE_END = (f"{AMBIGUOUS_BEFORE}: the sender stopped before it recorded the '.' as written; the server "
                      "almost surely did not accept the message")
STOPPED_AFTER_END = (f"{AMBIGUOUS_AFTER}: the sender stopped after writing it, before the server's reply; the "
                     "server may have accepted the message")
COMPLAINT_STOP = 0.003  # at or over this share of the previous issue's messages: refuse to start the next
COMPLAINT_WARN = 0.001
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "starttls"  # starttls | tls (implicit, port 465) | none (loopback tests only)
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 30.0
    envelope_from: str = ""  # bounce address; default: the From address
    reconnect_for: float = 60.0  # seconds one connection keeps reconnecting (backoff, jitter) before pausing


@dataclass(frozen=True)
class SendSettings:
    rate: float = 0.0  # messages per second over all connections; 0: as fast as the server takes them
    concurrency: int = 1  # SMTP connections
    retries: int = 3  # extra attempts after a 4xx reply or a dropped connection
    backoff: float = 5.0  # seconds before the first retry; doubles each time
    bounce_threshold: float = 0.05  # pause when permanent failures pass this share ...
    bounce_window: int = 200  # ... of the first this many recipients
    progress_every: float = 2.0  # seconds between progress lines


def _number(value, what: str, cast=float):
    try:
        number = cast(value)
    except (TypeError, ValueError):
        raise MailSettingsError(f"{what} must be a number, not '{value}'") from None
    if number < 0:
        raise MailSettingsError(f"{what} must not be negative")
    return number


def smtp_settings(env: dict, config: dict) -> SmtpSettings:
    host = setting(env, config, "smtp", "host")
    if not host:
        raise MailSettingsError("no SMTP server configured: set DIGEST_SMTP_HOST (and DIGEST_SMTP_PORT, "
                                "DIGEST_SMTP_SECURITY, DIGEST_SMTP_USERNAME, DIGEST_SMTP_PASSWORD), or "
                                "[smtp] host in the config file; or send to the outbox")
    security = setting(env, config, "smtp", "security", "starttls")
    if security not in ("starttls", "tls", "none"):
        raise MailSettingsError(f"DIGEST_SMTP_SECURITY is '{security}'; use starttls, tls or none")
    port = _number(setting(env, config, "smtp", "port", {"tls": 465, "starttls": 587}.get(security, 25)),
                   "DIGEST_SMTP_PORT", int)
    password = password_setting(env, config, "smtp")
    username = setting(env, config, "smtp", "username", "")
    if password and not username:  # we log in only with a username: the password would be ignored
        what = "DIGEST_SMTP_PASSWORD" if env.get("DIGEST_SMTP_PASSWORD") else "the SMTP password file"
        raise MailSettingsError(f"{what} is set but DIGEST_SMTP_USERNAME is not, so we would never log in; "
                                "set DIGEST_SMTP_USERNAME (or [smtp] username in the config file)")
    return SmtpSettings(host=host, port=port, security=security, username=username, password=password,
                        timeout=_number(setting(env, config, "smtp", "timeout", 30), "DIGEST_SMTP_TIMEOUT"),
                        envelope_from=setting(env, config, "smtp", "envelope_from", ""),
                        reconnect_for=_number(setting(env, config, "smtp", "reconnect_for", 60),
                                              "DIGEST_SMTP_RECONNECT_FOR"))


def send_settings(env: dict, config: dict) -> SendSettings:
    d = SendSettings()
    return SendSettings(
        rate=_number(setting(env, config, "send", "rate", d.rate), "send rate"),
        concurrency=max(1, _number(setting(env, config, "send", "concurrency", d.concurrency), "concurrency", int)),
        retries=_number(setting(env, config, "send", "retries", d.retries), "retries", int),
        backoff=_number(setting(env, config, "send", "backoff", d.backoff), "backoff"),
        bounce_threshold=_number(setting(env, config, "send", "bounce_threshold", d.bounce_threshold),
                                 "bounce_threshold"),
        bounce_window=_number(setting(env, config, "send", "bounce_window", d.bounce_window), "bounce_window", int),
        progress_every=_number(setting(env, config, "send", "progress_every", d.progress_every), "progress_every"))


# --- transports ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # sent | temporary | permanent | lost (before the point of no return) | ambiguous | withdrawn
    reply: str = ""


def redact(reply: str, address: str = "") -> str:
    """A server reply fit for the ledger and logs: one line, no address in it."""
    text = " ".join(reply.split())
    if "@" not in text:  # the common case: "250 2.0.0 queued"
        return text[:300]
    if address:
        text = re.sub(re.escape(address), "recipient", text, flags=re.IGNORECASE)
    return _ADDRESS.sub("address", text)[:300]


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {text}"


def classify(code: int, message: bytes | str) -> Outcome:
    kind = "permanent" if 500 <= code < 600 else "temporary"
    return Outcome(kind, _reply(code, message))


# OpenSSL's reasons when the peer answers a TLS handshake in plain text (an SMTP banner, say)
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST",
                      "PACKET_LENGTH_TOO_LONG"})
_RELAY_DENIED = re.compile(r"\brelay(ing)?\b.*\b(denied|not permitted|not allowed)|unable to relay", re.IGNORECASE)


def sender_problem(command: str, code: int, reply: str) -> str:
    """What the operator must fix when ``reply`` refuses us rather than the recipient, else ''.

    Such a refusal would come back for every recipient: failing them would mark the whole list
    permanently failed (and `send` never sends to 'failed' again) for a setting of ours.
    """
    if code < 500:
        return ""  # temporary: the recipient is retried and stays pending
    if code == 530 and "TLS" in reply.upper():
        return "it wants TLS first: set DIGEST_SMTP_SECURITY=starttls (or tls, on its implicit-TLS port)"
    if code == 530:
        return "it wants us to log in first: set DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD"
    if command == "mail":
        return ("check the envelope sender (bounces+...@DIGEST_BOUNCE_DOMAIN when that is set, else "
                "DIGEST_SMTP_ENVELOPE_FROM, else DIGEST_FROM's address) and that DIGEST_SMTP_USERNAME may send from it")
    if command == "rcpt" and _RELAY_DENIED.search(reply):
        return "it does not relay for us: set DIGEST_SMTP_USERNAME and DIGEST_SMTP_PASSWORD, or use your relay"
    return ""


def dot_stuffed(message: bytes) -> bytes:
    """RFC 5321 4.5.2: a line starting with '.' gets another; our base64 bodies have none."""
    if message.startswith(b".") or b"\n." in message:
        message = re.sub(rb"(?m)^\.", b"..", message)
    return message


def _sleep(seconds: float) -> bool:
    """Wait; True when the run was told to stop meanwhile (the worker replaces this)."""
    time.sleep(seconds)
    return False


class SmtpTransport:
    """One SMTP connection, opened on first use and again after it drops.

    A relay that cannot be reached (refused, reset, timed out: a restart, a blip) is tried again
    with exponential backoff and jitter (``BACKOFF_FIRST`` doubling up to ``BACKOFF_MAX``, each
    wait drawn from its upper half) for ``SmtpSettings.reconnect_for`` seconds from the first
    failure, before DeliveryError pauses the send. The failures count per connection, not per
    recipient: nobody's retries are spent while the relay is away, nobody is marked anything.
    """

    BACKOFF_FIRST = 0.2
    BACKOFF_MAX = 8.0

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None
        self.connect_failures = 0  # in a row, of this connection (0 once it is open)
        self.reconnects = 0  # connections opened again after a failure, over the transport's life
        self.sleep: Callable[[float], bool] = _sleep  # the run's: returns True when it is stopping
        self.rng = random.Random()

    def _connection(self) -> smtplib.SMTP:
        """The open connection, or a new one; DeliveryError when the server stays unreachable."""
        if self.smtp is not None:
            return self.smtp
        began = time.monotonic()
        while True:
            try:
                self.smtp = self._connect()
            except OSError as exc:
                if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:  # waiting will not fix it
                    s = self.settings
                    raise MailSettingsError(
                        f"the SMTP server at {s.host}:{s.port} does not start TLS on connect, as "
                        "DIGEST_SMTP_SECURITY=tls expects: set DIGEST_SMTP_SECURITY=starttls for this port "
                        "(usually 587), or DIGEST_SMTP_PORT to its implicit-TLS port (usually 465)") from None
                self.connect_failures += 1
                left = self.settings.reconnect_for - (time.monotonic() - began)
                if left <= 0:
                    s = self.settings
                    raise DeliveryError(
                        f"cannot reach the SMTP server at {s.host}:{s.port} ({type(exc).__name__}: {exc}) after "
                        f"{self.connect_failures} tries over {time.monotonic() - began:.1f} s "
                        f"(DIGEST_SMTP_RECONNECT_FOR={s.reconnect_for:g}); sending paused, nothing is lost: "
                        "rerun the same command later") from None
                ceiling = min(self.BACKOFF_MAX, self.BACKOFF_FIRST * 2 ** (self.connect_failures - 1))
                if self.sleep(min(left, self.rng.uniform(ceiling / 2, ceiling))):
                    raise ConnectionError("stopped while reconnecting") from None
                continue
            if self.connect_failures:
                self.reconnects += 1
            self.connect_failures = 0
            return self.smtp

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        if s.security == "tls":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            smtp.ehlo()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise MailSettingsError(
                        f"the SMTP server at {s.host}:{s.port} offers no STARTTLS, so mail would cross the "
                        "network unencrypted: use its implicit-TLS port (DIGEST_SMTP_SECURITY=tls, usually "
                        "DIGEST_SMTP_PORT=465); DIGEST_SMTP_SECURITY=none only for a relay on this machine")
                smtp.starttls(context=context)
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password)
            # The final '.' goes out in its own small write after the ledger commit: without this,
            # Nagle's algorithm holds it until the server's delayed ACK (~40 ms a message).
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as exc:  # login only, now
            smtp.close()
            raise DeliveryError(f"the SMTP server at {s.host}:{s.port} refused our login: {redact(str(exc))}; "
                                "check DIGEST_SMTP_USERNAME, DIGEST_SMTP_PASSWORD and DIGEST_SMTP_SECURITY") from None
        except BaseException:
            smtp.close()
            raise
        return smtp

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except OSError:
                pass
            self.smtp = None

    def resolve(self, subscriber_id: int) -> str | None:
        return None  # an SMTP server cannot be asked whether it accepted a message

    def deliver(self, sender: str, recipient: Subscriber, message: bytes, commit: Callable[[], bool],
                ended: Callable[[], object] | None = None) -> Outcome:
        """Send one message; ``commit`` just before its final '.' (False: withdraw it), ``ended`` just
        after the '.' was written, before the reply is read."""
        committed = written = False
        try:
            smtp = self._connection()
            for command, argument, accepted in (("mail", sender, (250,)), ("rcpt", recipient.address, (250, 251))):
                code, text = getattr(smtp, command)(argument)
                if code not in accepted:
                    return self._refused(code, text, command)
            code, text = smtp.docmd("DATA")
            if code != 354:
                return self._refused(code, text, "data")
            smtp.send(dot_stuffed(message if message.endswith(b"\r\n") else message + b"\r\n"))
            if not commit():
                self.drop()  # withdraws the message: the server never sees its end
                return Outcome("withdrawn", "no longer subscribed")
            committed = True
            smtp.send(b".\r\n")
            written = True
            if ended is not None:
                try:
                    ended()
                except Exception:  # noqa: BLE001 - the store failed: the reply still decides, recorded after
                    pass
            code, text = smtp.getreply()
        except OSError as exc:  # smtplib's errors, resets, timeouts, TLS failures
            self.drop()
            broke = f"{type(exc).__name__} {exc}".strip()
            if written:
                return Outcome("ambiguous", f"{AMBIGUOUS_AFTER}: the connection broke before the server's reply "
                                            f"({broke}); the server may have accepted the message")
            if committed:
                return Outcome("ambiguous", f"{AMBIGUOUS_BEFORE}: the connection broke while it was written "
                                            f"({broke}); the server cannot have accepted the message")
            return Outcome("lost", f"connection lost: {broke}")
        if code == 250:
            return Outcome("sent", _reply(code, text))
        return self._refused(code, text)

    def _refused(self, code: int, text: bytes, command: str = "") -> Outcome:
        """The recipient's outcome; DeliveryError when the refusal is of us (nobody is marked failed)."""
        if problem := sender_problem(command, code, _reply(code, text)):
            self.drop()
            s = self.settings
            raise DeliveryError(f"the SMTP server at {s.host}:{s.port} refuses mail from us "
                                f"({redact(_reply(code, text))}): {problem}. Nobody was marked failed: "
                                "the same command then sends to everyone not yet sent")
        if code == 421 or code < 0:
            self.drop()
        else:
            try:
                self.smtp.rset()
            except OSError:
                self.drop()
        return classify(code, text)


def write_file_once(path: Path, message: bytes, commit: Callable[[], bool], withdrawn: str) -> Outcome:
    """A message as a file, the way SMTP sends one: written beside ``path`` first, then ``commit()``
    (the ledger's point of no return), then renamed into place; ``withdrawn`` says why when commit
    refuses (the file is never seen)."""
    try:
        tmp = beside(path, message, private=True)
    except OSError as exc:
        return Outcome("lost", f"cannot write {exc.filename}: {exc.strerror}")
    if not commit():
        tmp.unlink(missing_ok=True)
        return Outcome("withdrawn", withdrawn)
    os.replace(tmp, path)
    return Outcome("sent", f"written to {path.name}")


class OutboxTransport:
    """Writes each message to outbox/<week>/mail/<id>-<keyed hash>.eml, atomically (no address in names)."""

    def __init__(self, folder: Path, secret: bytes):
        self.folder = Path(folder)
        self.secret = secret
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, recipient: Subscriber) -> Path:
        return self.folder / f"{recipient.id:08d}-{keyed_hash(self.secret, recipient.address)}.eml"

    def resolve(self, subscriber_id: int) -> str | None:
        found = any(self.folder.glob(f"{subscriber_id:08d}-*.eml"))
        return "sent" if found else "pending"

    def deliver(self, sender: str, recipient: Subscriber, message: bytes, commit: Callable[[], bool],
                ended: Callable[[], object] | None = None) -> Outcome:
        return write_file_once(self.path(recipient), message, commit, "no longer subscribed")

    def drop(self) -> None:
        pass

    close = drop


# --- the run ---------------------------------------------------------------------------------

@dataclass(order=True)
class _Retry:
    at: float
    order: int
    recipient: Subscriber = field(compare=False)
    attempts: int = field(compare=False, default=0)


class Dispatcher:
    """Hands out pending recipients in id order, then those waiting to retry; thread-safe.

    The cursor lives only in this run: a recipient fetched but never sent stays pending in the
    ledger and the next run fetches it again (listmonk#3022 skipped such subscribers).
    """

    def __init__(self, store: SubscriberStore, issue: str, channel: str, batch: int = 500):
        self.store, self.issue, self.channel, self.batch = store, issue, channel, batch
        self.cursor, self.buffer, self.exhausted = 0, [], False
        self.retries: list[_Retry] = []
        self.in_flight = 0
        self.halted, self.why = False, ""
        self.order = itertools.count()
        self.cv = threading.Condition()

    def next(self, wait: bool = True) -> tuple[Subscriber, int] | None:
        """The next recipient and its attempts so far; None when there is none (now, if not ``wait``)."""
        with self.cv:
            while not self.halted:
                now = time.monotonic()
                if self.retries and self.retries[0].at <= now:
                    item = heapq.heappop(self.retries)
                    self.in_flight += 1
                    return item.recipient, item.attempts
                if not self.buffer and not self.exhausted:
                    self.buffer = self.store.pending(self.issue, self.channel, self.cursor, self.batch)[::-1]
                    self.exhausted = len(self.buffer) < self.batch
                    if self.buffer:
                        self.cursor = self.buffer[0].id
                if self.buffer:
                    self.in_flight += 1
                    return self.buffer.pop(), 0
                if not wait or (not self.retries and not self.in_flight):
                    return None
                self.cv.wait(timeout=(self.retries[0].at - now) if self.retries else None)
            return None

    def done(self, retry: tuple[Subscriber, int, float] | None = None) -> None:
        with self.cv:
            self.in_flight -= 1
            if retry is not None:
                recipient, attempts, delay = retry
                heapq.heappush(self.retries, _Retry(time.monotonic() + delay, next(self.order), recipient, attempts))
            self.cv.notify_all()

    def stop(self, why: str) -> None:
        with self.cv:
            self.halted, self.why = True, self.why or why
            self.cv.notify_all()

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True (at once) when the run is stopping."""
        with self.cv:
            self.cv.wait_for(lambda: self.halted, timeout=seconds)
            return self.halted

    def left_waiting(self) -> list[_Retry]:
        with self.cv:
            return list(self.retries)


class RateLimiter:
    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        if at > now:
            time.sleep(at - now)


@dataclass
class Tally:
    """This run's outcomes, and the ledger's totals it started from."""

    start: dict[str, int]
    counts: Counter = field(default_factory=Counter)
    began: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, state: str) -> None:
        with self.lock:
            self.counts[state] += 1

    def line(self, name: str) -> str:
        with self.lock:
            c = self.counts
            done = c["sent"] + c["failed"] + c["skipped"] + c["ambiguous"]
            remaining = max(0, self.start["pending"] - done - c["deferred"])
            elapsed = max(time.monotonic() - self.began, 1e-6)
            rate = done / elapsed
            eta = remaining / rate if rate else 0.0
            return (f"{name}: sent {self.start['sent'] + c['sent']} · failed {self.start['failed'] + c['failed']} · "
                    f"remaining {remaining} · {rate:.0f} msg/s · ETA {int(eta) // 60}:{int(eta) % 60:02d}")


@dataclass
class BounceGuard:
    """Pause when permanent failures pass ``threshold`` of the first ``window`` recipients."""

    threshold: float
    window: int
    decided: int
    failed: int
    ignore: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, failed: bool, total: int) -> str:
        """Why sending must pause now, or ''."""
        with self.lock:
            self.decided += 1
            self.failed += failed
            window = min(self.window, total)
            limit = self.threshold * window
            if self.ignore or not failed or self.decided > self.window or self.failed <= limit:
                return ""
            return (f"{self.failed} of the first {self.decided} recipients were refused permanently, over "
                    f"{self.threshold:.0%} of the first {window}; this protects the sender's reputation")


@dataclass
class Run:
    store: SubscriberStore
    template: MessageTemplate
    issue: str
    channel: str
    settings: SendSettings
    transport_factory: Callable[[], object]
    envelope_from: str
    secret: bytes
    log: Callable[[str], None]
    dispatcher: Dispatcher = None
    tally: Tally = None
    guard: BounceGuard = None
    limiter: RateLimiter = None
    composer: ThreadPoolExecutor = None
    total: int = 0
    LOOKAHEAD = 4  # messages composed (and signed) ahead of the one on the wire

    def worker(self) -> None:
        """Send until the dispatcher runs dry; any error stops the other workers and is re-raised.

        The next few messages are composed on the composer thread while this one waits for the
        server, so composing and signing overlap the round trips instead of adding to them.
        """
        transport = self.transport_factory()
        transport.sleep = self.dispatcher.sleep  # a reconnect's wait ends when the run stops
        ahead: deque = deque()
        clean = False
        try:
            while True:
                while len(ahead) < self.LOOKAHEAD and (item := self.dispatcher.next(wait=not ahead)):
                    ahead.append((*item, self.composer.submit(self.compose, item[0])))
                if not ahead or self.dispatcher.halted:  # paused or interrupted: send nothing more
                    break
                recipient, attempts, composed = ahead.popleft()
                retry = None
                try:
                    retry = self.one(transport, recipient, attempts, composed.result())
                finally:
                    self.dispatcher.done(retry)
            clean = True
        finally:
            for *_, composed in ahead:  # composed, never sent: they stay pending in the ledger
                composed.cancel()
                self.dispatcher.done()
            transport.close()
            if not clean:
                self.dispatcher.stop("")

    def compose(self, recipient: Subscriber) -> bytes | AddressInvalid | None:
        try:
            return self.template.message(recipient)
        except AddressInvalid as exc:
            return exc

    def one(self, transport, recipient: Subscriber, attempts: int, message: bytes | AddressInvalid | None):
        """Send to one recipient; (recipient, attempts, delay) when it must be tried again."""
        who = keyed_hash(self.secret, recipient.address)
        if isinstance(message, AddressInvalid):
            self.log(f"failed {who}: {message}")
            return self.finish(recipient, "failed", f"address refused: {message}")
        if message is None:
            return self.finish(recipient, "skipped", "no note this week is on the chosen topics")
        self.limiter.wait()
        sender = self.template.return_path(recipient.id) or self.envelope_from  # VERP when a bounce domain is set
        outcome = transport.deliver(
            sender, recipient, message,
            lambda: self.store.begin_send(self.issue, self.channel, recipient.id),
            lambda: self.store.finish(self.issue, self.channel, recipient.id, "sending", DOT_WRITTEN))
        reply = redact(outcome.reply, recipient.address)
        if outcome.kind == "sent":
            return self.finish(recipient, "sent", reply)
        if outcome.kind == "withdrawn":
            return self.finish(recipient, "skipped", reply)
        if outcome.kind == "ambiguous":
            self.log(f"ambiguous {who}: {reply}; not resent without --resend-ambiguous")
            return self.finish(recipient, "ambiguous", reply)
        if outcome.kind == "permanent":
            self.log(f"failed {who}: {reply}")
            self.finish(recipient, "failed", reply)
            if why := self.guard.record(True, self.total):
                self.dispatcher.stop(why)
            return None
        if attempts < self.settings.retries:  # temporary reply or lost connection: later, with backoff
            self.store.finish(self.issue, self.channel, recipient.id, "pending", reply)
            return recipient, attempts + 1, self.settings.backoff * 2 ** attempts
        self.log(f"deferred {who}: {reply} (after {attempts + 1} attempts); the next run tries again")
        self.store.finish(self.issue, self.channel, recipient.id, "pending", reply)
        self.tally.add("deferred")
        return None

    def finish(self, recipient: Subscriber, state: str, reply: str) -> None:
        self.store.finish(self.issue, self.channel, recipient.id, state, reply)
        self.tally.add(state)
        if state == "sent":
            self.guard.record(False, self.total)
        return None


def settle(store: SubscriberStore, issue: str, channel: str, transport) -> int:
    """Rows a dead run left 'sending': delivered, not delivered, or ambiguous when nobody can tell."""
    stuck = store.deliveries(issue, channel, "sending")
    for row in stuck:
        state = transport.resolve(row.subscriber_id) or "ambiguous"
        reason = (STOPPED_AFTER_END if row.reply == DOT_WRITTEN else STOPPED_BEFORE_END) if state == "ambiguous" else ""
        store.finish(issue, channel, row.subscriber_id, state, reason)
    return len(stuck)


def complaint_check(store: SubscriberStore, issue: str, channel: str) -> tuple[str, IssueRates | None]:
    """('stop' | 'warn' | '', the previous issue's rates) for starting ``issue`` on ``channel``."""
    previous = store.previous_issue(issue, channel)
    if previous is None:
        return "", None
    rates = store.issue_rates(previous, channel)
    # in integers (per 10,000), not floats: exactly 3 complaints in 1,000 is at the limit
    for level, limit in (("stop", COMPLAINT_STOP), ("warn", COMPLAINT_WARN)):
        if rates.sent and rates.complained * 10_000 >= round(limit * 10_000) * rates.sent:
            return level, rates
    return "", rates


def _started(counts: dict[str, int]) -> bool:
    return any(counts[state] for state in ("sending", "sent", "failed", "ambiguous"))


def send(store: SubscriberStore, template: MessageTemplate, channel: str, transport_factory: Callable[[], object],
         settings: SendSettings, envelope_from: str, resend_ambiguous: bool | str = False,
         ignore_bounces: bool = False, ignore_complaints: bool = False,
         log: Callable[[str], None] | None = None) -> dict[str, int]:
    """Send ``template``'s issue on ``channel`` to everyone not yet sent; the ledger's counts after.

    ``resend_ambiguous``: True (or 'all') sends every ambiguous recipient again, 'before-end' or
    'after-end' only those (see the module's docstring). Raises ComplaintRateTooHigh before
    anything when the issue has not started and the previous one's complaint rate is at or over
    COMPLAINT_STOP (unless ``ignore_complaints``), SendPaused when permanent failures pass the
    threshold, DeliveryError when the server refuses the sender; everything not sent stays pending.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    issue, name = template.issue, f"digest send {template.issue} → {channel}"
    secret = store.secret()
    with store.claim(issue, channel):
        if channel != "outbox" and not _started(store.counts(issue, channel)):  # the outbox reaches nobody
            level, rates = complaint_check(store, issue, channel)
            if level:
                said = (f"{rates.complained} complaint(s) for {rates.sent} message(s) of {rates.issue}, "
                        f"{rates.complaint_rate:.2%}")
                if level == "warn" or ignore_complaints:
                    log(f"{name}: warning: {said}, at or over {COMPLAINT_WARN:.1%} (Gmail asks bulk senders to "
                        f"stay under it; at {COMPLAINT_STOP:.1%} they block)"
                        + ("; starting anyway (--ignore-complaints)" if level == "stop" else ""))
                else:
                    raise ComplaintRateTooHigh(
                        f"not starting {issue}: {said}, at or over {COMPLAINT_STOP:.1%}, the rate at which Gmail, "
                        "Yahoo and Outlook block or spam-folder a bulk sender. Find out why readers complain "
                        "(an unclear sign-up, too many mails, a missing unsubscribe link), then send with "
                        "--ignore-complaints; nothing was sent")
        probe = transport_factory()
        if settled := settle(store, issue, channel, probe):
            log(f"{name}: settled {settled} message(s) a stopped run left in flight")
        if resend_ambiguous:
            when = None if resend_ambiguous in (True, "all") else resend_ambiguous
            if again := store.resend_ambiguous(issue, channel, when):
                which = "" if when is None else f" ({when})"
                log(f"{name}: {again} ambiguous recipient(s){which} will be sent again (--resend-ambiguous)")
        store.queue(issue, channel)
        start = store.counts(issue, channel)
        run = Run(store, template, issue, channel, settings, transport_factory, envelope_from, secret, log)
        run.total = sum(start.values()) - start["skipped"]
        run.dispatcher = Dispatcher(store, issue, channel)
        run.tally = Tally(start)
        run.guard = BounceGuard(settings.bounce_threshold, settings.bounce_window,
                                start["sent"] + start["failed"], start["failed"], ignore_bounces)
        run.limiter = RateLimiter(settings.rate)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="compose") as run.composer:
                _run_workers(run, name, log)
        finally:
            log(run.tally.line(name))
        counts = store.counts(issue, channel)
    if run.dispatcher.why:
        raise SendPaused(f"sending paused: {run.dispatcher.why}. Nothing more was sent; "
                         f"`digest send --status --week {issue}` shows the replies. When the list or the "
                         "sender is fixed, run the same command with --ignore-bounces to continue")
    return counts


def _run_workers(run: Run, name: str, log) -> None:
    """The workers, a progress line every few seconds; their first error is raised here."""
    with ThreadPoolExecutor(run.settings.concurrency, thread_name_prefix="send") as pool:
        futures = [pool.submit(run.worker) for _ in range(run.settings.concurrency)]
        try:
            while wait(futures, timeout=run.settings.progress_every or None)[1]:
                log(run.tally.line(name))
        except KeyboardInterrupt:  # finish the messages in flight, then stop: the ledger stays exact
            run.dispatcher.stop("interrupted")
            raise
        for future in futures:
            future.result()


# --- status ----------------------------------------------------------------------------------

STATE_NOTES = {
    "pending": "not sent yet; the same `digest send` continues",
    "sending": "in flight now, or left by a stopped run (settled by the next run)",
    "ambiguous": "maybe delivered when a sender stopped; --resend-ambiguous sends them again",
    "failed": "refused permanently by the server",
    "skipped": "unsubscribed, or no note on their topics",
}


AMBIGUOUS_EXIT = 4  # `digest send --status` while ambiguous recipients remain on a channel shown

AMBIGUOUS_KINDS = (
    ("before-end", AMBIGUOUS_BEFORE, "never accepted: the final '.' was not written (or the sender stopped "
                                     "within microseconds of it); resending duplicates nobody"),
    ("after-end", AMBIGUOUS_AFTER, "maybe accepted: the '.' was written, the reply never read; resending may "
                                   "give each of them a second copy"),
)


def ambiguous_lines(store: SubscriberStore, issue: str, channel: str) -> list[str]:
    """The ambiguous recipients of one channel by when their sender stopped, each kind's resend and risk."""
    rows = store.deliveries(issue, channel, "ambiguous")
    if not rows:
        return []
    lines = ["ambiguous, by when the sender stopped:"]
    known = 0
    for when, prefix, risk in AMBIGUOUS_KINDS:
        n = sum(1 for d in rows if d.reply.startswith(prefix))
        known += n
        if n:
            lines.append(f"  {n:>7}   {prefix}: {risk}; `--resend-ambiguous {when}`")
    if unknown := len(rows) - known:
        lines.append(f"  {unknown:>7}   not recorded (sent by an older digest): maybe accepted; resending may "
                     "duplicate; `--resend-ambiguous all`")
    return lines


def rates_line(rates: IssueRates) -> str:
    return (f"feedback: sent {rates.sent} · hard-bounced {rates.hard_bounced} · soft-bounced {rates.soft_bounced} "
            f"· complained {rates.complained} · unsubscribed {rates.unsubscribed} · complaint rate "
            f"{rates.complaint_rate:.2%} (send refuses the next issue at {COMPLAINT_STOP:.1%}, warns at "
            f"{COMPLAINT_WARN:.1%})")


def status_report(store: SubscriberStore, issue: str, channel: str | None = None,
                  addresses: bool = False) -> tuple[list[str], int]:
    """The lines of `digest send --status` and its exit code: every channel the issue was sent on
    (or only ``channel``); AMBIGUOUS_EXIT while any shown has ambiguous recipients, else 0."""
    channels = [channel] if channel else (store.channels(issue) or ["outbox"])
    lines: list[str] = []
    ambiguous = 0
    for name in channels:
        lines += status_lines(store, issue, name, addresses)
        ambiguous += store.counts(issue, name)["ambiguous"]
    if ambiguous:
        lines.append(f"{ambiguous} ambiguous recipient(s) remain: decide with --resend-ambiguous before-end|after-end|"
                     f"all (exit {AMBIGUOUS_EXIT} until none remain)")
    return lines, AMBIGUOUS_EXIT if ambiguous else 0


def status_lines(store: SubscriberStore, issue: str, channel: str, addresses: bool = False) -> list[str]:
    counts = store.counts(issue, channel)
    lines = [f"{issue} → {channel}: {sum(counts.values())} recipient(s)"]
    lines += [f"  {state:<10} {n:>7}   {STATE_NOTES.get(state, '')}".rstrip() for state, n in counts.items()]
    lines += ambiguous_lines(store, issue, channel)
    failed = store.deliveries(issue, channel, "failed")
    if failed:
        lines.append("failures by reply:")
        lines += [f"  {n:>7}   {reply}" for reply, n in Counter(d.reply for d in failed).most_common(10)]
    lines.append(rates_line(store.issue_rates(issue, channel)))
    if addresses:
        lines.append("recipients (state, attempts, updated, address, reply):")
        lines += [f"  {d.state:<10} {d.attempts:>2}  {d.updated}  {d.address}  {d.reply}".rstrip()
                  for d in store.deliveries(issue, channel)]
    return lines
