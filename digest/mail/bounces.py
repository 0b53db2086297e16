"""Stage: mail — what comes back: bounces, complaints and unsubscribe mails (`digest bounces`).

    Classifier           one message's bytes → a Verdict: an RFC 3464 DSN (hard 5.x.x, soft 4.x.x),
                         an RFC 5965 ARF complaint, an unsubscribe mail (RFC 8058's mailto), an
                         auto-reply (ignored), a non-standard bounce (flufl.bounce), or why it is
                         skipped (forged token, another list, malformed, not ours)
    MaildirSource        a local Maildir; processed messages move to its .digest-processed folder
    ImapSource           an IMAP mailbox (IMAPS or STARTTLS, login from settings); processed
                         messages move to the 'digest-processed' folder, created when missing
    process(...)         classify every message, apply it to the store once, then move it

Who a message is about: first the VERP token (digest.mail.message.bounce_token) of the address it
was sent back to, or of the returned message's envelope; else a signed unsubscribe token in the
returned headers; else, only when no bounce domain is set (no VERP), the recipient the report
names, matched to a subscriber, when the returned message (if any) is of our list: with VERP a
report naming a reader without a token is refused as forged, since anybody can write one. A token
that does not verify names nobody: nothing is suppressed on a forged token. Bodies are hostile:
at most MAX_BYTES of a message are read, at most MAX_PARTS parts at MAX_DEPTH levels are looked
at, nothing is decompressed or decoded beyond the report's own text, and every failure is a
Verdict, never an exception.

A crash at any point neither loses nor doubles anything: a message is applied in one store
transaction that records a hash of its bytes (``SubscriberStore.apply_bounce``), then moved; a run
stopped between the two finds it recorded and only moves it. Reports name subscribers by
``keyed_hash``, never by address.
"""

from __future__ import annotations

import email
import email.header
import email.parser
import email.policy
import hashlib
import os
import re
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from digest.errors import DeliveryError, MailSettingsError, UsageError
from digest.mail.message import BOUNCE_LOCAL, MailSettings, password_setting, read_bounce_token, setting
from digest.subscribers.store import SubscriberStore, keyed_hash

MAX_BYTES = 256 * 1024  # of a message: the report parts come first; the rest is a returned attachment
MAX_PARTS = 64
MAX_DEPTH = 6
PROCESSED = "digest-processed"  # the IMAP folder; a Maildir's is .digest-processed
KINDS = ("hard", "soft", "complaint", "unsubscribe", "autoreply", "delayed", "delivered", "not-spam", "forged",
         "foreign", "unknown", "malformed", "ignored")
APPLIED = {"hard": "bounced", "soft": "soft", "complaint": "complained", "unsubscribe": "unsubscribed"}


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # one of KINDS
    subscriber_id: int | None = None
    how: str = ""  # how the subscriber was found: verp, unsubscribe-token, recipient
    detail: str = ""  # a status code, a feedback type, what was wrong; never an address
    issue: str | None = None  # the issue the VERP token names (its rates count the message)


@dataclass(frozen=True)
class BounceSettings:
    soft_limit: int = 3  # soft bounces ...
    soft_days: float = 30.0  # ... within this many days suppress the subscriber


def bounce_settings(env: dict, config: dict) -> BounceSettings:
    d = BounceSettings()
    values = []
    for key, default, cast in (("soft_bounce_limit", d.soft_limit, int), ("soft_bounce_days", d.soft_days, float)):
        raw = setting(env, config, "bounces", key, default)
        try:
            value = cast(raw)
        except (TypeError, ValueError):
            value = 0
        if value <= 0:
            raise MailSettingsError(f"DIGEST_{key.upper()} is '{raw}': give a positive number")
        values.append(value)
    return BounceSettings(*values)


# --- reading a message without trusting it -----------------------------------------------------

_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_HEADERS = email.parser.HeaderParser(policy=email.policy.compat32)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])\d\d\b")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_ADDR = re.compile(r"[^\s<>()\[\],;:\"']{1,64}@[A-Za-z0-9.-]{1,253}")
_AUTO_SUBJECT = re.compile(r"^\s*(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|auto:|"
                           r"abwesenheit|absence|réponse automatique|respuesta automática|vacation|"
                           r"자동\s*회신|자동\s*응답|부재\s*중|不在)", re.IGNORECASE)
_UNSUB_SUBJECT = re.compile(r"^\s*(?:re:\s*)?unsubscribe\s+([A-Za-z0-9._-]{1,80})\s*$", re.IGNORECASE)
_UNSUB_URL = re.compile(r"/unsubscribe/([A-Za-z0-9._-]{1,80})|subject=unsubscribe(?:%20|\+| )([A-Za-z0-9._-]{1,80})")
ENVELOPE_HEADERS = ("to", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "x-original-rcpt-to")


def _parts(message, limit=MAX_PARTS, depth=MAX_DEPTH) -> Iterator:
    """The message's parts, depth first, at most ``limit`` of them and ``depth`` levels down."""
    stack, seen = [(message, 0)], 0
    while stack and seen < limit:
        part, level = stack.pop()
        seen += 1
        yield part
        if level < depth and part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend((p, level + 1) for p in reversed(payload[:limit]) if hasattr(p, "get_content_type"))


def _text(part, limit=64 * 1024) -> str:
    """A report part's text (its own fields, not an attachment), decoded as far as that is safe."""
    payload = part.get_payload()
    if isinstance(payload, list):  # compat32 parses message/delivery-status into blocks of fields
        return "\n\n".join("\n".join(f"{k}: {v}" for k, v in block.items()) for block in payload[:MAX_PARTS]
                           if hasattr(block, "items"))
    raw = part.get_payload(decode=True) or b""
    return raw[:limit].decode("utf-8", "replace")


def _blocks(text: str) -> list[dict[str, str]]:
    """'Field: value' blocks separated by blank lines, as DSNs and ARF reports write them."""
    blocks, block, last = [], {}, None
    for line in text.replace("\r\n", "\n").split("\n")[:2000]:
        if not line.strip():
            if block:
                blocks.append(block)
            block, last = {}, None
        elif line[0] in " \t" and last:
            block[last] += " " + line.strip()
        elif found := _FIELD.match(line):
            last = found[1].lower()
            block[last] = f"{block[last]}\n{found[2].strip()}" if last in block else found[2].strip()
    if block:
        blocks.append(block)
    return blocks


def _subject(message) -> str:
    """The Subject, RFC 2047 words decoded (auto-replies in Korean say so in encoded words)."""
    raw = str(message.get("subject", ""))[:1000]
    if "=?" not in raw:
        return raw
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except Exception:  # noqa: BLE001 - a broken encoded word: read it as it is
        return raw


def _address_of(value: str) -> str:
    """The address of 'rfc822; someone@example.org' (or of a header value), '' when none."""
    value = value.split(";", 1)[1] if ";" in value and value.split(";", 1)[0].strip().isalnum() else value
    found = _ADDR.search(value)
    return found[0].strip(".") if found else ""


def _original_headers(message):
    """The returned message's headers (message/rfc822 or text/rfc822-headers), or None."""
    for part in _parts(message):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and hasattr(payload[0], "items"):
                return payload[0]
        elif kind in ("text/rfc822-headers", "text/rfc822-header"):
            try:
                return _HEADERS.parsestr(_text(part))
            except Exception:  # noqa: BLE001 - a broken returned header block only loses the hint
                return None
    return None


class Classifier:
    """Decides what one message is. ``find``: an address → a subscriber id, or None."""

    def __init__(self, keyring, find: Callable[[str], int | None], settings: MailSettings):
        self.keyring, self.find, self.settings = keyring, find, settings
        domain = re.escape(settings.bounce_domain) if settings.bounce_domain else r"[A-Za-z0-9.-]+"
        self.verp = re.compile(rf"\b{BOUNCE_LOCAL}\+([^@\s<>\"';,]{{1,100}})@({domain})\b", re.IGNORECASE)
        self.ours = settings.bounce_domain or None
        mailbox = settings.unsubscribe_mailbox
        local, _, host = mailbox.rpartition("@")
        self.unsub_address = re.compile(rf"\b{re.escape(local)}\+([A-Za-z0-9._-]{{1,80}})@{re.escape(host)}\b",
                                        re.IGNORECASE) if mailbox else None
        self.list_address = settings.list_address.lower()

    def classify(self, raw: bytes) -> Verdict:
        try:
            return self._classify(raw)
        except RecursionError:
            return Verdict("malformed", detail="nested too deeply")
        except Exception as exc:  # noqa: BLE001 - hostile input must never stop the run
            return Verdict("malformed", detail=f"unreadable ({type(exc).__name__})")

    def _classify(self, raw: bytes) -> Verdict:
        truncated = len(raw) > MAX_BYTES
        if b"\n\n" not in raw[:MAX_BYTES] and b"\r\n\r\n" not in raw[:MAX_BYTES] and not truncated:
            if not _FIELD.match(raw[:200].decode("latin-1").split("\n", 1)[0]):
                return Verdict("malformed", detail="no header block")
        message = _PARSER.parsebytes(raw[:MAX_BYTES])
        if not message.keys():
            return Verdict("malformed", detail="no headers")
        report = fields = None
        for part in _parts(message):
            kind = part.get_content_type()
            if kind in ("message/delivery-status", "message/global-delivery-status"):
                report, fields = "dsn", _blocks(_text(part))
                break
            if kind == "message/feedback-report":
                report, fields = "arf", _blocks(_text(part))
                break
        if report == "dsn":
            return self._dsn(message, fields)
        if report == "arf":
            return self._arf(message, fields)
        subject = _subject(message)
        if (found := _UNSUB_SUBJECT.match(subject)) or (self.unsub_address and (found := self._search(
                self.unsub_address, message, ENVELOPE_HEADERS))):
            subscriber = self.keyring.verify("unsubscribe", found[1])
            if subscriber is None:
                return Verdict("forged", detail="unsubscribe token does not verify")
            return Verdict("unsubscribe", subscriber, "unsubscribe-token")
        if self._auto_reply(message, subject):
            return Verdict("autoreply")
        if message.defects and any(type(d).__name__ in ("StartBoundaryNotFoundDefect", "NoBoundaryInMultipartDefect",
                                                         "CloseBoundaryNotFoundDefect") for d in message.defects):
            return Verdict("malformed", detail="broken MIME structure" + (", truncated" if truncated else ""))
        return self._nonstandard(message)

    # --- the kinds of report ---

    def _dsn(self, message, fields) -> Verdict:
        recipients = fields[1:] or fields[:1]
        worst, status, action, address = None, "", "", ""
        rank = {"hard": 3, "soft": 2, "delayed": 1, "delivered": 0}
        for block in recipients:
            act = block.get("action", "").strip().lower()
            code = _STATUS.search(block.get("status", "")) or _STATUS.search(block.get("diagnostic-code", ""))
            kind = self._dsn_kind(act, code, block.get("diagnostic-code", ""))
            if kind and (worst is None or rank[kind] > rank[worst]):
                worst, status = kind, code[0] if code else ""
                action = act if act in ("failed", "delayed", "delivered", "relayed", "expanded") else ""
                address = _address_of(block.get("final-recipient", "") or block.get("original-recipient", ""))
        if worst is None:
            return Verdict("malformed", detail="delivery report without Action or Status")
        detail = " ".join(x for x in (status, action) if x)
        if worst in ("delayed", "delivered"):
            return Verdict(worst, detail=detail)
        return self._who(worst, message, [address] if address else [], detail)

    @staticmethod
    def _dsn_kind(action: str, code, diagnostic: str) -> str | None:
        if action in ("delivered", "relayed", "expanded"):
            return "delivered"
        if action == "delayed":
            return "delayed"
        if code is None:
            smtp = _SMTP_CODE.search(diagnostic)
            if action != "failed" and smtp is None:
                return None
            return "hard" if smtp is None or smtp[1] == "5" else "soft"
        klass, subject = code[1], code[2]
        if klass == "4":
            return "soft"
        if klass == "2":
            return "delivered"
        # 5.2.2 mailbox full and 5.7.x policy or reputation blocks: the address itself works
        return "soft" if (subject, code[3]) == ("2", "2") or subject == "7" else "hard"

    def _arf(self, message, fields) -> Verdict:
        report = fields[0] if fields else {}
        kind = re.sub(r"[^a-z0-9-]", "", report.get("feedback-type", "").strip().lower())[:20]
        if not kind:
            return Verdict("malformed", detail="feedback report without Feedback-Type")
        if kind in ("not-spam", "auth-failure", "dkim", "dmarc"):
            return Verdict("not-spam" if kind == "not-spam" else "ignored", detail=f"feedback {kind}")
        recipients = [_address_of(report.get(k, "")) for k in ("original-rcpt-to", "removal-recipient")]
        return self._who("complaint", message, [a for a in recipients if a], f"feedback {kind}",
                         extra=report.get("original-mail-from", ""))

    def _nonstandard(self, message) -> Verdict:
        from flufl.bounce import all_failures

        try:
            temporary, permanent = all_failures(message)
        except Exception:  # noqa: BLE001 - a detector choking on hostile input: not a bounce we can read
            return Verdict("ignored", detail="no detector could read it")
        if not temporary and not permanent:
            return Verdict("ignored", detail="not a bounce, complaint or unsubscribe")
        kind = "hard" if permanent else "soft"
        addresses = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)
                     for a in sorted(permanent or temporary)]
        return self._who(kind, message, addresses, "non-standard bounce")

    @staticmethod
    def _auto_reply(message, subject: str) -> bool:
        auto = str(message.get("auto-submitted", "")).strip().lower()
        if auto.startswith("auto-replied"):
            return True
        if any(message.get(h) for h in ("x-autoreply", "x-autorespond", "x-autoresponder")):
            return True
        if str(message.get("precedence", "")).strip().lower() in ("auto_reply", "auto-reply"):
            return True
        return bool(_AUTO_SUBJECT.match(subject))

    # --- who it is about ---

    @staticmethod
    def _search(pattern, message, headers) -> re.Match | None:
        for name in headers:
            for value in message.get_all(name) or ():
                if found := pattern.search(str(value)[:1000]):
                    return found
        return None

    def _who(self, kind: str, message, addresses: list[str], detail: str, extra: str = "") -> Verdict:
        original = _original_headers(message)
        places = [str(v)[:1000] for name in ENVELOPE_HEADERS for v in message.get_all(name) or ()]
        places.append(extra[:1000])
        if original is not None:
            places += [str(original.get(h, ""))[:1000] for h in ("return-path", "x-envelope-from", "sender")]
        tokens = [m[1] for place in places for m in self.verp.finditer(place)
                  if self.ours is None or m[2].lower() == self.ours]
        for token in tokens:
            if found := read_bounce_token(self.keyring, token):
                return Verdict(kind, found[0], "verp", detail, issue=found[1])
        if tokens:
            return Verdict("forged", detail=f"{kind}: bounce token does not verify")
        if original is not None:
            list_id = str(original.get("list-id", "")).lower()
            if list_id and f"<{self.list_address}>" not in list_id:
                return Verdict("foreign", detail=f"{kind}: the returned message is of another list")
            unsubscribe = str(original.get("list-unsubscribe", ""))[:2000]
            links = [t for m in _UNSUB_URL.finditer(unsubscribe) for t in m.groups() if t]
            for token in links:
                if (subscriber := self.keyring.verify("unsubscribe", token)) is not None:
                    return Verdict(kind, subscriber, "unsubscribe-token", detail)
            if links:
                return Verdict("forged", detail=f"{kind}: the returned unsubscribe link does not verify")
        for address in addresses:
            if (subscriber := self.find(address)) is None:
                continue
            if self.ours is not None:  # with VERP every bounce of ours carries a token: a report naming a
                # reader without one is what anybody can write, to get that reader suppressed
                return Verdict("forged", detail=f"{kind}: no bounce token, though every message of ours has one")
            return Verdict(kind, subscriber, "recipient", detail)
        return Verdict("unknown", detail=f"{kind}: names no subscriber of this list")


# --- mailboxes ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Item:
    name: str  # what the report calls it: a Maildir file name or 'uid N'
    ref: object
    size: int = 0


class MaildirSource:
    """A local Maildir (cur/, new/); processed messages move to its Maildir++ folder .digest-processed."""

    def __init__(self, path: Path):
        self.root = Path(path)
        if not (self.root / "cur").is_dir() or not (self.root / "new").is_dir():
            raise UsageError(f"{self.root} is not a Maildir (it needs cur/ and new/ folders)")
        self.target = self.root / f".{PROCESSED}"

    def messages(self) -> Iterator[Item]:
        for sub in ("new", "cur"):
            for name in sorted(os.listdir(self.root / sub)):
                if not name.startswith("."):
                    yield Item(name, self.root / sub / name)

    def read(self, item: Item) -> bytes | None:
        """The file's first MAX_BYTES + 1 bytes, or None when another reader moved it meanwhile."""
        try:
            with open(item.ref, "rb") as handle:
                return handle.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return None

    def done(self, item: Item) -> None:
        for sub in ("cur", "new", "tmp"):
            (self.target / sub).mkdir(parents=True, exist_ok=True)
        os.rename(item.ref, self.target / "cur" / item.name)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: str = "tls"  # tls (IMAPS, 993) | starttls (143) | none (loopback tests only)
    username: str = ""
    password: str = field(default="", repr=False)
    folder: str = "INBOX"
    timeout: float = 30.0
    cafile: str = ""  # a CA bundle to trust instead of the system's (a private server)


def imap_settings(env: dict, config: dict) -> ImapSettings:
    host = setting(env, config, "imap", "host")
    if not host:
        raise MailSettingsError("no IMAP server configured: set DIGEST_IMAP_HOST (and DIGEST_IMAP_USERNAME, "
                                "DIGEST_IMAP_PASSWORD), or [imap] host in the config file; or pass --maildir")
    security = setting(env, config, "imap", "security", "tls")
    if security not in ("tls", "starttls", "none"):
        raise MailSettingsError(f"DIGEST_IMAP_SECURITY is '{security}'; use tls, starttls or none")
    try:
        port = int(setting(env, config, "imap", "port", 993 if security == "tls" else 143))
    except ValueError:
        raise MailSettingsError("DIGEST_IMAP_PORT must be a number") from None
    password = password_setting(env, config, "imap")
    username = setting(env, config, "imap", "username", "")
    if not username or not password:
        raise MailSettingsError("set DIGEST_IMAP_USERNAME and DIGEST_IMAP_PASSWORD (or [imap] password_file): "
                                "`digest bounces` logs in to read the mailbox")
    return ImapSettings(host, port, security, username, password, setting(env, config, "imap", "folder", "INBOX"),
                        float(setting(env, config, "imap", "timeout", 30)), setting(env, config, "imap", "cafile", ""))


class ImapSource:
    """An IMAP folder; processed messages move (MOVE, else COPY + expunge) to 'digest-processed'."""

    def __init__(self, settings: ImapSettings):
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError, LoginError

        s = self.settings = settings
        context = ssl.create_default_context(cafile=s.cafile or None)
        try:
            self.client = IMAPClient(s.host, s.port, ssl=s.security == "tls", ssl_context=context, timeout=s.timeout)
            if s.security == "starttls":
                self.client.starttls(context)
            self.client.login(s.username, s.password)
        except LoginError:
            raise DeliveryError(f"the IMAP server at {s.host}:{s.port} refused our login; check "
                                "DIGEST_IMAP_USERNAME and DIGEST_IMAP_PASSWORD") from None
        except (OSError, IMAPClientError) as exc:
            raise DeliveryError(f"cannot read the IMAP mailbox at {s.host}:{s.port}: {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from None
        if not self.client.folder_exists(PROCESSED):
            self.client.create_folder(PROCESSED)
        self.client.select_folder(s.folder)
        self.move = self.client.has_capability("MOVE")

    def messages(self) -> Iterator[Item]:
        uids = sorted(self._guard(lambda: self.client.search("ALL")))
        for start in range(0, len(uids), 200):
            batch = uids[start:start + 200]
            sizes = self._guard(lambda batch=batch: self.client.fetch(batch, ["RFC822.SIZE"]))
            for uid in batch:
                if uid in sizes:
                    yield Item(f"uid {uid}", uid, sizes[uid].get(b"RFC822.SIZE", 0))

    def read(self, item: Item) -> bytes | None:
        """The message's first MAX_BYTES + 1 bytes, or None when another client removed it meanwhile."""
        data = self._guard(lambda: self.client.fetch([item.ref], [f"BODY.PEEK[]<0.{MAX_BYTES + 1}>"])).get(item.ref)
        if not data:
            return None
        return next((value for key, value in data.items() if key.startswith(b"BODY[")), b"") or b""

    def _guard(self, call):
        """``call()``, a dropped connection or a refusal of the server as one DeliveryError."""
        from imapclient.exceptions import IMAPClientError

        try:
            return call()
        except (OSError, IMAPClientError) as exc:
            s = self.settings
            raise DeliveryError(f"the IMAP server at {s.host}:{s.port} failed mid-run ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); nothing is lost or applied twice: run it again") from None

    def done(self, item: Item) -> None:
        self._guard(lambda: self._done(item))

    def _done(self, item: Item) -> None:
        if self.move:
            self.client.move([item.ref], PROCESSED)
        else:  # copied first: the original is expunged only once its copy is in the folder
            self.client.copy([item.ref], PROCESSED)
            self.client.add_flags([item.ref], [b"\\Deleted"])
            self.client.uid_expunge([item.ref])

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:  # noqa: BLE001 - the work is done; a dropped logout loses nothing
            pass


# --- the run --------------------------------------------------------------------------------------

def process(store: SubscriberStore, source, mail: MailSettings, settings: BounceSettings,
            log: Callable[[str], None]) -> Counter:
    """Every message of ``source``: classify, apply once, move; one report line each. Counts by kind
    and by what was done ('suppressed', 'unsubscribed', 'already applied', ...)."""
    secret = store.secret()
    keyring = store.keyring()

    def find(address: str) -> int | None:
        try:
            found = store.find(address)
        except Exception:  # noqa: BLE001 - AddressInvalid, or worse: no subscriber either way
            return None
        return found.id if found else None

    classifier = Classifier(keyring, find, mail)
    counts: Counter = Counter()
    for item in source.messages():
        raw = source.read(item)
        if raw is None:  # gone meanwhile (another client moved it): nothing to apply or move
            log(f"{item.name}: gone before it was read; skipped")
            continue
        verdict = classifier.classify(raw)
        key = hashlib.sha256(raw).hexdigest()
        applied = APPLIED.get(verdict.kind, verdict.kind)
        result = store.apply_bounce(key, applied, verdict.subscriber_id, settings.soft_limit, settings.soft_days,
                                    issue=verdict.issue)
        source.done(item)
        counts[verdict.kind] += 1
        counts[result] += 1
        who = "-"
        if verdict.subscriber_id is not None and (subscriber := store.get(verdict.subscriber_id)):
            who = f"#{subscriber.id} {keyed_hash(secret, subscriber.address)} (by {verdict.how})"
        size = f" [{len(raw) // 1024} KB read of a larger message]" if len(raw) > MAX_BYTES else ""
        detail = f" ({verdict.detail})" if verdict.detail else ""
        log(f"{item.name}: {verdict.kind}{detail} {who}: {result}{size}")
    return counts


def summary(counts: Counter) -> str:
    """One line: messages by kind, then what was done."""
    done = ("suppressed", "unsubscribed", "already suppressed", "already applied")
    counted = sum(n for k, n in counts.items() if k.startswith("counted"))
    kinds = " · ".join(f"{k} {counts[k]}" for k in KINDS if counts[k]) or "none"
    acts = [f"{k} {counts[k]}" for k in done if counts[k]] + ([f"soft bounces counted {counted}"] if counted else [])
    return (f"digest bounces: {sum(counts[k] for k in KINDS)} message(s): {kinds}; "
            f"{' · '.join(acts) or 'nothing changed'}")
