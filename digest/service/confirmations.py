"""The double opt-in email and its sender: durable, exactly once, resumed after a crash.

    request_confirmation (store) ──one transaction──▶ confirmation + its outbox row (pending)
    ConfirmationSender (a thread per `digest serve` process; several processes share one store)
        claim_outbox ─▶ build the message ─▶ begin_outbox just before the final '.' ─▶ sent
                                               │ temporary failure ─▶ pending again, later
                                               │ permanent refusal, or too many tries ─▶ the
                                               │     confirmation withdrawn: asking again sends one
                                               └ connection lost after '.' ─▶ ambiguous (not resent)

A server killed at any moment leaves the sign-up's email in the store: the next sender (after a
restart, or another server) sends it; one killed between the final '.' and the server's reply
leaves it 'sending', which the next claim marks 'ambiguous' (maybe delivered; never resent
blindly, as in the digest's own ledger).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from digest.content.model import SEOUL
from digest.errors import DigestError, StoreError
from digest.mail.deliver import Outcome, SmtpTransport, write_file_once
from digest.mail.message import CRLF, MailSettings, base64_lines, fold_address, header_bytes, subject_line
from digest.subscribers.store import OutboxMail, Subscriber, SubscriberStore, keyed_hash
from digest.templates import environment

log = logging.getLogger("digest.service.confirmations")

POLL = 1.0  # seconds between looks at the outbox when nothing woke the sender
MAX_ATTEMPTS = 6  # tries of one email (temporary failures, lost connections) before it is withdrawn


def confirmation_message(mail: MailSettings, address: str, confirm_url: str, already: bool,
                         lifetime_hours: int, now: dt.datetime | None = None) -> bytes:
    """The double opt-in email, text and HTML, built like the digest's messages (and DKIM-signed
    when a key is configured)."""
    env = environment()
    context = {"url": confirm_url, "already": already, "hours": lifetime_hours, "list_name": mail.list_name,
               "site_url": mail.site_url}
    text = env.get_template("serve/confirm_email.txt").render(**context).replace("\n", "\r\n")
    html = env.get_template("serve/confirm_email.html").render(**context).replace("\n", "\r\n")
    boundary = "=_confirm_" + secrets.token_hex(8)
    subject = f"[{mail.list_name}] " + ("주제 변경을 확인해 주세요" if already else "구독을 확인해 주세요")
    now = now or dt.datetime.now(SEOUL).replace(microsecond=0)  # as the digest's own Date
    headers = [
        (b"From", fold_address("From", mail.sender_name, mail.sender).encode()),
        (b"To", f"To: {address}\r\n".encode()),
        (b"Subject", subject_line(subject)),
        (b"Date", header_bytes("Date", email.utils.format_datetime(now))),
        (b"Message-ID", f"Message-ID: <confirm.{secrets.token_hex(10)}@{mail.domain}>\r\n".encode()),
        (b"Auto-Submitted", b"Auto-Submitted: auto-generated\r\n"),
        (b"MIME-Version", b"MIME-Version: 1.0\r\n"),
        (b"Content-Type", f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode()),
    ]
    b = boundary.encode()
    body = b"".join([
        b"--" + b + CRLF, b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
        base64_lines(text.encode()),
        b"--" + b + CRLF, b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
        base64_lines(html.encode()), b"--" + b + b"--" + CRLF])
    head = b"".join(line for _, line in headers)
    if mail.signer is not None:
        head = mail.signer.sign(headers, body) + head
    return head + CRLF + body


class FileTransport:
    """The default channel: outbox/confirmations/<time>-<keyed hash>.eml, a file an operator opens."""

    def __init__(self, folder: Path, secret: bytes):
        self.folder, self.secret = folder, secret

    def deliver(self, sender: str, recipient: Subscriber, message: bytes, commit) -> Outcome:
        self.folder.mkdir(parents=True, exist_ok=True)
        who = keyed_hash(self.secret, recipient.address)
        path = self.folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}-{who}.eml"
        return write_file_once(path, message, commit, "claimed by another sender")

    def close(self) -> None:
        pass


@dataclass
class ConfirmationSender:
    """Drains the store's outbox on one thread: woken by each new sign-up, and every POLL seconds
    for emails another process (or a dead one) left."""

    store: SubscriberStore
    mail: MailSettings  # with the service's base URL
    base_url: str
    secret: bytes  # the store's log key: the hashes in logs and file names (links use its keyring)
    lifetime_hours: int
    transport_factory: object  # () -> a transport with deliver(sender, recipient, message, commit)
    envelope_from: str = ""
    retry_base: float = 5.0  # seconds before the first retry of a temporary failure; doubling
    lease: float = 60.0  # seconds a claimed email stays this sender's; a dead sender's claim lapses after it
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="confirm-mail", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                mail = self.store.claim_outbox(self.name, self.lease)
            except StoreError as exc:  # the store is down: the emails wait in it
                log.error("confirmation outbox unreadable: %s", exc)
                mail = None
            if mail is None:
                self._wake.wait(POLL)
                self._wake.clear()
                continue
            self.send(mail)

    def send(self, mail: OutboxMail) -> None:
        """One claimed email, through one connection; its outcome recorded in the store."""
        who = keyed_hash(self.secret, mail.address)
        # the current link-signing key, read for each email: a rotation reaches the links at once
        token = self.store.keyring().sign_expiring("confirm", mail.confirmation.id, mail.confirmation.expires)
        message = confirmation_message(self.mail, mail.address, f"{self.base_url}confirm/{token}", mail.already,
                                       self.lifetime_hours)
        transport = self.transport_factory()
        try:
            outcome = transport.deliver(self.envelope_from or self.mail.sender, Subscriber(0, mail.address),
                                        message, lambda: self.store.begin_outbox(mail.id, self.name))
        except (OSError, DigestError) as exc:  # the relay refuses us: the email waits for a retry
            outcome = Outcome("temporary", type(exc).__name__ if "@" in str(exc) else str(exc)[:200])
        finally:
            transport.close()
        self._record(mail, outcome, who)

    def _record(self, mail: OutboxMail, outcome: Outcome, who: str) -> None:
        reply = outcome.reply.split("\n")[0][:120] if "@" not in outcome.reply else ""
        log.info("confirmation for %s: %s %s", who, outcome.kind, reply)
        if outcome.kind in ("sent", "ambiguous"):
            self.store.finish_outbox(mail.id, outcome.kind, reply)
        elif outcome.kind == "withdrawn":  # another sender holds it now
            return
        elif outcome.kind == "permanent" or mail.attempts + 1 >= MAX_ATTEMPTS:
            self.store.withdraw_confirmation(mail.confirmation.id)  # asking again sends a new one at once
            log.info("confirmation for %s withdrawn: the next subscribe request sends a new one", who)
        else:  # temporary, or lost before the final '.': surely not delivered, so sent again later
            self.store.finish_outbox(mail.id, "pending", reply, retry_in=min(300, self.retry_base * 2 ** mail.attempts))


def transport_factory(mail_channel: str, outbox: Path, secret: bytes, smtp=None):
    """How a sender reaches the reader: SMTP (``digest serve --mail smtp``) or files in outbox/."""
    if mail_channel == "smtp":
        # no reconnecting here: an unreachable relay makes the email wait for its retry (retry_base),
        # not the sender thread (and its claim's lease) for DIGEST_SMTP_RECONNECT_FOR
        once = dataclasses.replace(smtp, reconnect_for=0) if smtp is not None else None
        return lambda: SmtpTransport(once)
    return lambda: FileTransport(outbox / "confirmations", secret)
