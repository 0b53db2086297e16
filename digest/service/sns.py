"""Amazon SES bounce and complaint notifications through SNS, for `digest serve` (#27 item 3).

    verify_sns(body, fetch, topics, max_age)   the SNS message of a POST body, its signature checked;
                                               SnsRefused (status, reason) for anything else
    ses_feedback(message)                      what an SES notification says: (kind, address, Message-ID)
    Certificates                               the SNS signing certificates, fetched once per URL
    cert_url_ok / SNS_HOST                     where a signing certificate may come from

What is checked, in order, before anything is believed (SNS's own rules, docs.aws.amazon.com/sns,
"Verifying the signatures of Amazon SNS messages"):

  - the body is one JSON object with the fields its Type signs (Notification, SubscriptionConfirmation,
    UnsubscribeConfirmation), every one a string;
  - TopicArn is one of the configured topics (DIGEST_SERVE_SES_TOPICS);
  - SignatureVersion 1 (SHA1 with RSA) or 2 (SHA256 with RSA);
  - SigningCertURL is https://sns.<region>.amazonaws.com[.cn]/....pem (no user, no other port): we
    fetch a certificate from nowhere else;
  - the certificate is within its validity, and the Signature (base64) verifies, with it, over the
    canonical string: each signed field present, in SNS's order, as "Name\\nValue\\n";
  - Timestamp is no older than ``max_age`` seconds (and not from the future beyond a small skew);
  - (in the route) MessageId was not taken before: the store remembers every id for the window.

SES's notification (the signed Message, JSON): notificationType (or eventType, for event publishing)
'Bounce' with bounce.bounceType 'Permanent' (a hard bounce) or 'Transient' / 'Undetermined' (soft),
bounce.bouncedRecipients[].emailAddress; 'Complaint' with complaint.complainedRecipients[] (a
complaintFeedbackType of 'not-spam' is no complaint); mail.commonHeaders.messageId (or
mail.headers) carries our Message-ID, which names the issue.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
OPTIONAL = frozenset({"Subject"})  # a Notification without a subject signs no Subject line
MAX_AGE = 3600.0  # seconds: SNS retries for about an hour at most by default
SKEW = 300.0  # seconds a Timestamp may be ahead of our clock
MAX_CERT = 16384  # bytes of a signing certificate


class SnsRefused(Exception):
    """A webhook POST that is not a good SNS message: ``status`` to answer, ``reason`` to log."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def sns_url_ok(url: str, pem: bool = True) -> bool:
    """Whether ``url`` is https on an SNS host (and, for a certificate, a .pem path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and parts.username is None and port in (None, 443)
            and SNS_HOST.fullmatch(parts.hostname or "") is not None
            and (not pem or parts.path.endswith(".pem")))


def cert_url_ok(url: str) -> bool:
    return sns_url_ok(url, pem=True)


@dataclass
class Certificates:
    """Signing certificates by URL, fetched (``fetch(url) -> bytes``) once and kept while valid."""

    fetch: Callable[[str], bytes]
    now: Callable[[], float] = time.time
    _certs: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, url: str):
        from cryptography import x509

        with self._lock:
            cert = self._certs.get(url)
        if cert is None:
            try:
                pem = self.fetch(url)
            except Exception as exc:  # the network, a missing file: the message cannot be checked now
                raise SnsRefused(503, f"cannot fetch the signing certificate: {type(exc).__name__}") from None
            if not isinstance(pem, bytes) or len(pem) > MAX_CERT:
                raise SnsRefused(400, "the signing certificate is not a certificate")
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise SnsRefused(400, "the signing certificate is not a PEM certificate") from None
            with self._lock:
                self._certs[url] = cert
        now = dt.datetime.fromtimestamp(self.now(), dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsRefused(400, "the signing certificate has expired or is not valid yet")
        return cert


def canonical(message: dict) -> bytes:
    """The string SNS signs: each signed field it has, in SNS's order, as 'Name\\nValue\\n'."""
    return "".join(f"{name}\n{message[name]}\n" for name in SIGNED[message["Type"]] if name in message).encode()


def _timestamp(value: str) -> float:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SnsRefused(400, "Timestamp is not an ISO 8601 time") from None


def verify_sns(body: bytes, certificates: Certificates, topics: frozenset[str], max_age: float = MAX_AGE,
               now: float | None = None) -> dict:
    """The SNS message in ``body``, every check of the module's docstring passed (but the replay's)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        message = json.loads(body)
    except (UnicodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise SnsRefused(400, "not JSON") from None
    if not isinstance(message, dict) or message.get("Type") not in SIGNED:
        raise SnsRefused(400, "not an SNS message (Type)")
    needed = [name for name in SIGNED[message["Type"]] if name not in OPTIONAL]
    fields = (*SIGNED[message["Type"]], "Signature", "SignatureVersion", "SigningCertURL")
    if any(name not in message for name in needed) or any(
            not isinstance(message.get(name, ""), str) for name in fields):
        raise SnsRefused(400, "an SNS message without its signed fields")
    if message["TopicArn"] not in topics:
        raise SnsRefused(403, "a topic that is not ours (DIGEST_SERVE_SES_TOPICS)")
    algorithm = {"1": hashes.SHA1, "2": hashes.SHA256}.get(message.get("SignatureVersion"))
    if algorithm is None:
        raise SnsRefused(400, "an unknown SignatureVersion")
    url = message.get("SigningCertURL", "")
    if not cert_url_ok(url):
        raise SnsRefused(403, "a signing certificate from a host that is not SNS's")
    try:
        signature = base64.b64decode(message.get("Signature", ""), validate=True)
    except (binascii.Error, ValueError):
        raise SnsRefused(403, "a bad signature") from None
    key = certificates.get(url).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRefused(403, "a signing certificate without an RSA key")
    try:
        key.verify(signature, canonical(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SnsRefused(403, "a bad signature") from None
    age = (time.time() if now is None else now) - _timestamp(message["Timestamp"])
    if age > max_age or age < -SKEW:
        raise SnsRefused(403, f"a stale message ({age:.0f} s old; at most {max_age:g})")
    return message


FEEDBACK = ("hard_bounce", "soft_bounce", "complaint")
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>\s]+>")


def ses_feedback(message: dict) -> list[tuple[str, str, str]]:
    """(kind, address, our Message-ID or '') for each recipient an SES notification reports."""
    try:
        notification = json.loads(message["Message"])
    except (TypeError, ValueError, RecursionError):
        return []
    if not isinstance(notification, dict):
        return []
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") if isinstance(notification.get("mail"), dict) else {}
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        feedback = "hard_bounce" if bounce.get("bounceType") == "Permanent" else "soft_bounce"
        recipients = bounce.get("bouncedRecipients")
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        if complaint.get("complaintFeedbackType") == "not-spam":
            return []
        feedback, recipients = "complaint", complaint.get("complainedRecipients")
    else:  # Delivery, Send, Open ...: nothing to act on
        return []
    message_id = _message_id(mail)
    found = []
    for recipient in recipients if isinstance(recipients, list) else []:
        address = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        if isinstance(address, str) and len(address) <= 320:
            found.append((feedback, address, message_id))
    return found


def _message_id(mail: dict) -> str:
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    value = common.get("messageId")
    if not isinstance(value, str):
        value = next((h.get("value") for h in mail.get("headers") or [] if isinstance(h, dict)
                      and str(h.get("name", "")).lower() == "message-id"), "")
    found = _MESSAGE_ID.search(value) if isinstance(value, str) else None
    return found[0] if found else ""
