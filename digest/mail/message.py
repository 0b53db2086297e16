"""Stage: mail — headers that survive every client, per-recipient MIME bytes, DKIM.

    DigestPolicy      folds Subject and display names with our own encoder (``encoded_words``):
                      CPython's Header writes 76-character encoded words on continuation lines
                      (RFC 2047 allows 75), Python 3.11-3.12 drop spaces between encoded words on
                      decoding (gh-92081) and 3.13.0 glues some together (``?==?``, gh-144156),
                      which Yahoo rejects
    header_text       any text made fit for a header: one line, no control characters
    MailSettings      From, list id, site and subscription-service URLs; env or config file
    Layout            a message part rendered once, split into constant bytes, slots and blocks
    MessageTemplate   one issue, ready to produce each recipient's message bytes by substitution:
                      no template rendering, no EmailMessage serialization per recipient
    DkimSigner        rsa-sha256, relaxed/relaxed; RSA in OpenSSL (via cryptography), checked
                      against dkimpy's verifier when loaded
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import hmac
import os
import re
import time
import tomllib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.policy import EmailPolicy
from pathlib import Path

from digest.errors import AddressInvalid, MailSettingsError
from digest.subscribers.store import Subscriber, sign_token

MAX_LINE = 78
CRLF = b"\r\n"
_SPACES = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(value: str, limit: int = 300) -> str:
    """``value`` as one header-safe line: every run of whitespace or control characters → one space."""
    text = _SPACES.sub(" ", value).strip()
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


# --- header policy ---------------------------------------------------------------------------

ADDRESS_HEADERS = frozenset({"from", "to", "cc", "reply-to", "sender"})


ENCODED_WORD_MAX = 75  # RFC 2047 section 2: characters in one encoded word, '=?utf-8?b?' to '?='
_WORD_OVERHEAD = len("=?utf-8?b??=")


def _encoded_length(text: str) -> int:
    return _WORD_OVERHEAD + 4 * -(-len(text.encode()) // 3)


def _encoded_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode('ascii')}?="


def encoded_words(text: str, first: int = ENCODED_WORD_MAX) -> list[str]:
    """``text`` as base64 encoded words of UTF-8, each at most 75 characters (the first at most
    ``first``), cut only between characters, so each decodes alone (RFC 2047 section 5). Spaces
    travel inside the words: the whitespace between two encoded words is not part of the text."""
    words: list[str] = []
    chunk, budget = "", min(first, ENCODED_WORD_MAX)
    for char in text:
        if chunk and _encoded_length(chunk + char) > budget:
            words.append(_encoded_word(chunk))
            chunk, budget = "", ENCODED_WORD_MAX
        chunk += char
    return words + [_encoded_word(chunk)]


def _fold_plain(name: str, text: str, linesep: str) -> str | None:
    """ASCII words folded at spaces, lines at most 78 characters, never before the first word (a
    reader would see the fold's space in front of it); None when a word cannot fit a line."""
    lines, line = [], f"{name}:"
    for word in text.split(" "):
        if len(line) + 1 + len(word) > MAX_LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
        if len(line) > MAX_LINE:
            return None
    return linesep.join(lines + [line]) + linesep


def fold_subject(name: str, text: str, linesep: str = "\r\n") -> str:
    """``Name: value`` folded so that it decodes back exactly everywhere: plain ASCII words at
    spaces, anything else (or '=?', which a reader would decode) as encoded words of at most 75
    characters, one per line."""
    if text.isascii() and "=?" not in text and (plain := _fold_plain(name, text, linesep)):
        return plain
    words = encoded_words(text, first=MAX_LINE - len(name) - 2)
    return f"{name}: " + f"{linesep} ".join(words) + linesep


def fold_address(name: str, display: str, address: str, linesep: str = "\r\n") -> str:
    """One mailbox, its display name in a single encoded word when not ASCII.

    Two encoded words in a display name always decode wrongly somewhere: Python's own parser
    keeps the space between them, RFC 2047 (and ``decode_header``) drops it. So a name must fit
    one encoded word: about 15 Hangul syllables or 45 UTF-8 bytes.
    """
    if not display:
        return f"{name}: {address}{linesep}"
    if display.isascii() and "=?" not in display:  # a quoted '=?...?=' is still decoded by some readers
        quoted = email.utils.formataddr((display, address))
        if len(name) + 2 + len(quoted) <= MAX_LINE:
            return f"{name}: {quoted}{linesep}"
    words = encoded_words(display, first=MAX_LINE - len(name) - 2)
    encoded = words[0]
    if len(words) > 1:
        raise MailSettingsError(f"the display name in {name} is too long to survive every mail client "
                                f"({len(display.encode())} UTF-8 bytes); keep it under 45 bytes (~15 Hangul)")
    if len(name) + 2 + len(encoded) + 3 + len(address) <= MAX_LINE:
        return f"{name}: {encoded} <{address}>{linesep}"
    return f"{name}: {encoded}{linesep} <{address}>{linesep}"


class DigestPolicy(EmailPolicy):
    """``email.policy.default`` with Subject and address headers folded the safe way (see module doc)."""

    def _safe_fold(self, name: str, value) -> str | None:
        lowered = name.lower()
        if lowered == "subject":
            return fold_subject(name, header_text(str(value)), self.linesep)
        if lowered in ADDRESS_HEADERS and hasattr(value, "addresses") and len(value.addresses) == 1:
            mailbox = value.addresses[0]
            if mailbox.display_name and not mailbox.display_name.isascii():
                return fold_address(name, header_text(mailbox.display_name), mailbox.addr_spec, self.linesep)
        return None

    def fold(self, name, value):
        return self._safe_fold(name, value) or super().fold(name, value)

    def fold_binary(self, name, value):
        folded = self._safe_fold(name, value)
        return folded.encode("ascii") if folded else super().fold_binary(name, value)


POLICY = DigestPolicy(linesep="\r\n", max_line_length=MAX_LINE)


def header_bytes(name: str, value: str) -> bytes:
    """One header line, folded by ``POLICY``."""
    return POLICY.fold_binary(name, POLICY.header_factory(name, value))


def subject_line(text: str) -> bytes:
    """The Subject line of ``text`` exactly: unlike assigning to a message, '=?...?=' in it stays text."""
    return fold_subject("Subject", header_text(text)).encode("ascii")


# --- settings --------------------------------------------------------------------------------

DEFAULT_SITE_URL = "https://example.github.io/ml-notes/"
PLACEHOLDER_DOMAIN = "example.invalid"


def read_config(path: str | Path | None) -> dict:
    """The TOML config file's tables ({} when none). Secrets are refused: they come from the environment.

    Every key can also be set as DIGEST_<TABLE>_<KEY> or DIGEST_<KEY>, which win::

        [mail]
        from = "ML 읽기 노트 <digest@example.org>"
        site_url = "https://notes.example.org/"
        service_url = "https://subscribe.example.org/"   # digest serve: unsubscribe and preferences
        # list_id = "weekly.example.org"; unsubscribe_mailto = "unsubscribe@example.org" (only for
        # a mailbox `digest bounces` reads: List-Unsubscribe adds it beside the URL)
        # bounce_domain = "bounces.example.org"   # VERP: envelope sender bounces+<token>@ this domain
        [imap]                       # `digest bounces`: host, port, security = "tls" | "starttls" | "none",
                                     # username, password_file, folder ("INBOX"), cafile; password: env only
        [bounces]
        soft_bounce_limit = 3        # soft bounces within soft_bounce_days (30) suppress a subscriber
        [smtp]
        host = "smtp.example.org"    # port (587), security = "starttls" | "tls" | "none", username,
                                     # password_file, timeout, envelope_from; password: env only
        [send]
        store = "var/subscribers.sqlite3"
        rate = 0            # messages a second over all connections, 0 = no limit
        concurrency = 1     # SMTP connections; retries = 3; backoff = 5.0 (seconds, doubling)
        bounce_threshold = 0.05   # pause when permanent failures pass this share ...
        bounce_window = 200       # ... of the first this many recipients
        [dkim]
        key_file = "/etc/digest/dkim.pem"   # or the PEM itself in $DIGEST_DKIM_KEY
        selector = "digest"                 # domain: the From address's
        [doctor]
        dns_server = "127.0.0.1:5353"       # `digest doctor`'s nameserver (default: the system's);
                                            # dns_timeout = 5; spf_include = "amazonses.com" (a provider
                                            # sending from other addresses than its relay's)
    """
    if not path:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MailSettingsError(f"cannot read config file {path}: {exc}") from None
    for table, key in (("smtp", "password"), ("imap", "password"), ("dkim", "key")):
        if key in data.get(table, {}):
            raise MailSettingsError(f"{path}: [{table}] {key} must not be in a file that may end up in git; "
                                    f"set DIGEST_{table.upper()}_{key.upper()} in the environment instead")
    return data


def setting(env: dict, config: dict, table: str, key: str, default=None):
    """$DIGEST_<KEY> (or $DIGEST_<TABLE>_<KEY>), then [table] key of the config file, then ``default``."""
    for name in (f"DIGEST_{table.upper()}_{key.upper()}", f"DIGEST_{key.upper()}"):
        if env.get(name):
            return env[name]
    return config.get(table, {}).get(key, default)


# mkdocs.yml's `site_url: URL` or `site_url: !ENV [VARIABLE, "URL"]`: the URL (the variable is
# $DIGEST_SITE_URL, which `setting` reads before this default).
_SITE_URL_LINE = re.compile(r"""(?m)^site_url:\s*(?:!ENV\s*\[\s*\w+\s*,\s*)?['"]?([^'"\s,\]]+)""")


def password_setting(env: dict, config: dict, table: str) -> str:
    """DIGEST_<TABLE>_PASSWORD (environment only), else the file ``[table] password_file`` names."""
    password = env.get(f"DIGEST_{table.upper()}_PASSWORD", "")
    if not password and (file := setting(env, config, table, "password_file")):
        try:
            password = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MailSettingsError(f"cannot read the {table.upper()} password file {file}: {exc.strerror}") from None
    return password


def site_url_default(mkdocs_yml: Path = Path("mkdocs.yml")) -> str:
    try:
        found = _SITE_URL_LINE.search(mkdocs_yml.read_text(encoding="utf-8"))
    except OSError:
        found = None
    return found[1] if found else DEFAULT_SITE_URL


def checked_url(value: str, what: str) -> str:
    """``value`` as a base URL ending in '/'; MailSettingsError naming the setting ``what`` if it is no
    http(s) address."""
    from digest.content.validate import url_problem

    if problem := url_problem(value):
        raise MailSettingsError(f"{what} '{header_text(value, 80)}' {problem}")
    return value if value.endswith("/") else value + "/"


@dataclass(frozen=True)
class MailSettings:
    sender_name: str = "ML 읽기 노트"
    sender: str = f"digest@{PLACEHOLDER_DOMAIN}"
    site_url: str = DEFAULT_SITE_URL
    service_url: str = f"https://subscribe.{PLACEHOLDER_DOMAIN}/"
    unsubscribe_mailbox: str = ""
    list_id: str = ""
    list_name: str = "ML 읽기 노트"
    bounce_domain: str = ""  # VERP: envelope sender bounces+<token>@<this>; "" keeps the plain one
    signer: DkimSigner | None = field(default=None, compare=False)

    @property
    def domain(self) -> str:
        return self.sender.rpartition("@")[2]


    @property
    def list_address(self) -> str:
        return self.list_id or f"weekly.{self.domain}"

    def refuse_placeholders(self) -> None:
        """Real mail needs a real sender, a working unsubscribe link and links to the real site.

        Previews (the outbox) keep the placeholders: nobody real reads them.
        """
        for what, value in (("DIGEST_FROM", self.sender), ("DIGEST_SERVICE_URL", self.service_url),
                            ("DIGEST_SITE_URL", self.site_url)):
            if PLACEHOLDER_DOMAIN in value or value == DEFAULT_SITE_URL:
                raise MailSettingsError(f"{what} is the embedded placeholder ({value}); set it before sending "
                                        "real mail (environment or config file)")


def mail_settings(env: dict | None = None, config: dict | None = None) -> MailSettings:
    """Settings from the environment, then the config file, then the embedded defaults."""
    env = os.environ if env is None else env
    config = config or {}
    defaults = MailSettings()
    name, sender = defaults.sender_name, defaults.sender
    if raw := setting(env, config, "mail", "from"):
        name, address = parse_mailbox(raw, "DIGEST_FROM")
        sender = _address(address, "DIGEST_FROM", "'ML 읽기 노트 <digest@example.org>'")
    fold_address("From", name, sender)  # refuses a display name that would not survive
    signer = None
    if key := env.get("DIGEST_DKIM_KEY") or _read_key(setting(env, config, "dkim", "key_file")):
        signer = DkimSigner(key.encode() if isinstance(key, str) else key,
                            selector=setting(env, config, "dkim", "selector", "digest"),
                            domain=setting(env, config, "dkim", "domain", sender.rpartition("@")[2]))
    return MailSettings(
        sender_name=name, sender=sender,
        site_url=checked_url(setting(env, config, "mail", "site_url") or site_url_default(), "site URL"),
        service_url=checked_url(setting(env, config, "mail", "service_url", defaults.service_url), "service URL"),
        unsubscribe_mailbox=_address(m, "DIGEST_UNSUBSCRIBE_MAILTO", "unsubscribe@example.org") if (
            m := setting(env, config, "mail", "unsubscribe_mailto")) else "",
        list_id=_list_id(setting(env, config, "mail", "list_id", "")), signer=signer,
        bounce_domain=_domain(setting(env, config, "mail", "bounce_domain", ""), "DIGEST_BOUNCE_DOMAIN"))


def _domain(value: str, what: str) -> str:
    """A plain DNS name (bounces.example.org), lowercased; '' when unset."""
    value = (value or "").strip().lower()
    if value and not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", value):
        raise MailSettingsError(f"{what} '{header_text(value, 80)}' must be a domain like bounces.example.org")
    return value


# --- VERP: a per-recipient envelope sender ------------------------------------------------------

BOUNCE_LOCAL = "bounces"  # bounces+<token>@DIGEST_BOUNCE_DOMAIN
_ISSUE = re.compile(r"\d{4}-W\d{2}")


def bounce_token(key: bytes, issue: str, subscriber_id: int) -> str:
    """'<issue>.<id>.<mac>': the subscriber's id and the issue, signed for the purpose 'bounce:<issue>'
    with the current link-signing key; no address in it. Its characters fit a dot-atom local part."""
    return f"{issue}.{sign_token(key, f'bounce:{issue}', subscriber_id)}"


def read_bounce_token(keyring, token: str) -> tuple[int, str] | None:
    """(subscriber id, issue) that a bounce token names, or None when forged, tampered or not one.
    ``keyring``: the store's Keyring (the current and the retired keys still verifying)."""
    issue, _, signed = token.partition(".")
    if len(token) > 64 or not _ISSUE.fullmatch(issue):
        return None
    found = keyring.verify(f"bounce:{issue}", signed)
    return (found, issue) if found is not None else None


MAILBOX_EXAMPLE = "ML 읽기 노트 <digest@example.org>"
_CONTROL_NAMES = {"\t": "tab", "\n": "line break", "\r": "carriage return", "\x0b": "vertical tab",
                  "\x0c": "form feed", "\x00": "NUL", "\u2028": "line separator", "\u2029": "paragraph separator"}


def parse_mailbox(raw: str, what: str) -> tuple[str, str]:
    """(display name, address) of a setting that must be exactly one mailbox, 'Name <address>' or a
    bare address; anything else is refused naming the character at fault. email.utils.parseaddr
    reads a ':' as group syntax and silently keeps part of the text ('Team: Alice <a@x>' became the
    name 'Alice'; 'ML Bcc: x@evil <a@x>' made x@evil the sender); a control character cut the rest."""
    for position, char in enumerate(raw, 1):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            kind = _CONTROL_NAMES.get(char, "control character")
            raise MailSettingsError(f"{what} has a {kind} (U+{ord(char):04X}) at position {position}; write it on "
                                    f"one line with plain characters, like '{MAILBOX_EXAMPLE}'")
    if problem := _structure_problem(raw):
        raise MailSettingsError(f"{what} is not one mailbox: {problem}; write it like '{MAILBOX_EXAMPLE}'")
    parsed = POLICY.header_factory("From", raw)
    if parsed.defects or len(parsed.addresses) != 1 or not parsed.addresses[0].addr_spec:
        defect = str((parsed.defects or ["no address in it"])[0]).rstrip(".")
        raise MailSettingsError(f"{what} is not a usable address: {defect}; write it like '{MAILBOX_EXAMPLE}'")
    mailbox = parsed.addresses[0]
    return header_text(mailbox.display_name), mailbox.addr_spec


def _structure_problem(raw: str) -> str:
    """What breaks 'Name <address>' outside quotes and comments: a group's ':', a second address's
    ',' or ';', an unclosed '<' or a stray '>'; '' when nothing does."""
    quoted = escaped = False
    depth = angle = 0
    for position, char in enumerate(raw, 1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif char == "<":
            if angle:
                return f"the '<' at position {position} opens a second address inside the first"
            angle = position
        elif char == ">":
            if not angle:
                return f"the '>' at position {position} closes no '<'"
            angle = 0
        elif char == ":" and not angle:
            name = raw[:position - 1].strip()
            return (f"the ':' at position {position} makes '{name[:40]}' a group name, not a display name; "
                    f"put a name with ':' in double quotes")
        elif char in ",;" and not angle:
            return f"the '{char}' at position {position} starts a second address"
    if quoted:
        return "a '\"' is never closed"
    if angle:
        return f"the '<' at position {angle} is never closed by '>'"
    return ""


def _address(value: str, what: str, example: str) -> str:
    """``value`` normalized as the store does; a bad one names its setting (the store's message cannot)."""
    from digest.subscribers.store import normalize_address

    try:
        return normalize_address(value)
    except AddressInvalid as exc:
        raise MailSettingsError(f"{what} is not a usable address: {str(exc).rstrip('.')}; write it like "
                                f"{example} (environment or config file)") from None


def _list_id(value: str) -> str:
    """RFC 2919: a dot-atom such as weekly.example.org."""
    if value and not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", value):
        raise MailSettingsError(f"list id '{header_text(value, 80)}' must look like weekly.example.org")
    return value


def _read_key(path) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MailSettingsError(f"cannot read the DKIM key file {path}: {exc.strerror}") from None


# --- layouts: rendered once, filled per recipient ---------------------------------------------

@dataclass(frozen=True, slots=True)
class Slot:
    name: str


@dataclass(frozen=True, slots=True)
class Group:
    """Repeated blocks (one per note); a recipient gets the selected ones, numbered from 1."""

    name: str
    blocks: dict[int, tuple[bytes | Slot, ...]]


Layout = tuple  # of bytes | Slot | Group


class Marks:
    """Markers a template writes around blocks and in place of per-recipient values.

    The nonce makes them unforgeable: a note title cannot contain a marker of this render.
    """

    def __init__(self, nonce: str):
        self.nonce = nonce
        self.pattern = re.compile(rf"(?:<!--)?@@{nonce}:(?:(begin):(\w+):(\d+)|(end)|slot:(\w+))@@(?:-->)?")

    def begin(self, group: str, index: int) -> str:
        return f"@@{self.nonce}:begin:{group}:{index}@@"

    def end(self) -> str:
        return f"@@{self.nonce}:end@@"

    def slot(self, name: str) -> str:
        return f"@@{self.nonce}:slot:{name}@@"

    def parse(self, rendered: str) -> Layout:
        """Split a rendered part at its markers into constant bytes, slots and groups of blocks."""
        out: list = []
        block: list | None = None
        position = 0
        for found in self.pattern.finditer(rendered):
            text = rendered[position:found.start()].encode()
            position = found.end()
            target = out if block is None else block
            if text and not (block is None and out and isinstance(out[-1], Group) and not text.strip()):
                target.append(text)
            if found[1]:
                block, group, index = [], found[2], int(found[3])
            elif found[4]:
                if out and isinstance(out[-1], Group) and out[-1].name == group:
                    out[-1].blocks[index] = tuple(block)
                else:
                    out.append(Group(group, {index: tuple(block)}))
                block = None
            else:
                target.append(Slot(found[5]))
        out.append(rendered[position:].encode())
        return tuple(out)


_NUMBERS = [str(n).encode() for n in range(1000)]


def assemble(layout: Layout, values: dict[str, bytes], selected: Sequence[int]) -> bytes:
    """One recipient's part: constants, their slot values, and the selected blocks numbered 1, 2, ..."""
    out = []
    append = out.append
    for piece in layout:
        if piece.__class__ is bytes:
            append(piece)
        elif piece.__class__ is Slot:
            append(values[piece.name])
        else:
            for number, index in enumerate(selected, 1):
                for item in piece.blocks[index]:
                    if item.__class__ is bytes:
                        append(item)
                    else:
                        append(_NUMBERS[number] if item.name == "n" else values[item.name])
    return b"".join(out)


def base64_lines(data: bytes) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    return CRLF.join([encoded[i:i + 76] for i in range(0, len(encoded), 76)]) + CRLF


# --- the per-recipient message ----------------------------------------------------------------

@dataclass
class MessageTemplate:
    """One issue's message, ready to be filled in for each recipient.

    ``subject``, ``topics`` and ``heading`` are called once per distinct selection (cached); everything else
    per recipient is HMAC tokens, byte joins and base64: tens of microseconds.
    """

    issue: str  # "2016-W28"
    text: Layout
    html: Layout
    note_tags: tuple[frozenset[str], ...]
    subject: Callable[[tuple[int, ...]], str]
    topics: Callable[[tuple[str, ...]], tuple[str, str]]  # topic ids -> (text line, HTML line)
    # selected notes -> the title and preheader slots of (text, HTML): a reader of some topics sees
    # the heading of the first note they get, not of one they do not
    heading: Callable[[tuple[int, ...]], tuple[dict[str, bytes], dict[str, bytes]]]
    settings: MailSettings
    secret: bytes  # the store's log key: Message-IDs stay the same when signing keys rotate
    date: dt.datetime
    signer: DkimSigner | None = None
    link_key: bytes = field(default=b"", repr=False)  # signs the links; see compose.render
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        s = self.settings
        digest = hashlib.sha256(repr((self.text, self.html)).encode()).hexdigest()
        self.boundary = f"=_digest_{self.issue}_{digest[:16]}"  # '=_' never occurs in base64 or headers
        self.fixed = [
            (b"From", fold_address("From", s.sender_name, s.sender).encode()),
            (b"Date", header_bytes("Date", email.utils.format_datetime(self.date))),
            (b"List-Id", fold_address("List-Id", s.list_name, s.list_address).encode()),
            (b"List-Unsubscribe-Post", b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            (b"MIME-Version", b"MIME-Version: 1.0\r\n"),
            (b"Content-Type", f'Content-Type: multipart/alternative;\r\n boundary="{self.boundary}"\r\n'.encode()),
        ]
        b = self.boundary.encode()
        self.text_head = b"--" + b + CRLF + b'Content-Type: text/plain; charset="utf-8"\r\n' \
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        self.html_head = b"--" + b + CRLF + b'Content-Type: text/html; charset="utf-8"\r\n' \
            b"Content-Transfer-Encoding: base64\r\n\r\n"
        self.closing = b"--" + b + b"--" + CRLF

    def select(self, topics: tuple[str, ...]) -> tuple[int, ...]:
        """The notes a recipient gets: all of them, or those on the chosen topics."""
        if not topics:
            return tuple(range(len(self.note_tags)))
        chosen = frozenset(topics)
        return tuple(i for i, tags in enumerate(self.note_tags) if tags & chosen)

    def _cached(self, key, make):
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = make()
        return found

    def urls(self, subscriber_id: int) -> tuple[str, str, str]:
        """(unsubscribe URL, preferences URL, unsubscribe mailto or "") of one subscriber. The mailto
        only when ``unsubscribe_mailto`` names a mailbox someone processes: a mail client that
        unsubscribes by email to an unread mailbox leaves the reader subscribed."""
        s = self.settings
        key = self.link_key or self.secret
        unsubscribe = sign_token(key, "unsubscribe", subscriber_id)
        preferences = sign_token(key, "preferences", subscriber_id)
        mailto = f"mailto:{s.unsubscribe_mailbox}?subject=unsubscribe%20{unsubscribe}" if s.unsubscribe_mailbox else ""
        return f"{s.service_url}unsubscribe/{unsubscribe}", f"{s.service_url}preferences/{preferences}", mailto

    def values(self, recipient: Subscriber, selected: tuple[int, ...]) -> tuple[dict[str, bytes], dict[str, bytes]]:
        unsubscribe, preferences, _ = self.urls(recipient.id)
        topics_text, topics_html = self._cached(("topics", recipient.topics), lambda: tuple(
            part.encode() for part in self.topics(recipient.topics)))
        heading_text, heading_html = self._cached(("heading", selected[:1]), lambda: self.heading(selected))
        text = {"unsubscribe_url": unsubscribe.encode(), "preferences_url": preferences.encode(),
                "topics": topics_text, **heading_text}
        html = {"unsubscribe_url": _attr(unsubscribe), "preferences_url": _attr(preferences),
                "topics": topics_html, **heading_html}
        return text, html

    def return_path(self, subscriber_id: int) -> str:
        """The envelope sender (SMTP MAIL FROM) for one subscriber: bounces+<token>@DIGEST_BOUNCE_DOMAIN,
        so that a bounce names its subscriber and issue; "" when no bounce domain is set."""
        domain = self.settings.bounce_domain
        if not domain:
            return ""
        return f"{BOUNCE_LOCAL}+{bounce_token(self.link_key or self.secret, self.issue, subscriber_id)}@{domain}"

    def message_id(self, subscriber_id: int) -> str:
        """Stable per issue and subscriber, so a resend can be recognised as the same message."""
        return f"<{self.issue}.{_message_id_mac(self.secret, self.issue, subscriber_id)}@{self.settings.domain}>"

    def headers(self, recipient: Subscriber, selected: tuple[int, ...], to: str | None = None):
        if not _SAFE_ADDRESS.fullmatch(recipient.address):  # the store normalizes; this is the last guard
            raise AddressInvalid("the stored address is not a plain ASCII address; fix it in the store")
        unsubscribe, _, mailto = self.urls(recipient.id)
        subject = self._cached(("subject", selected[:1], len(selected)),
                               lambda: subject_line(self.subject(selected)))
        to_line = (to or f"To: {recipient.address}\r\n").encode()
        also = f",\r\n <{mailto}>" if mailto else ""
        unsubscribe_line = f"List-Unsubscribe: <{unsubscribe}>{also}\r\n".encode()
        fixed = self.fixed
        return [fixed[0], (b"To", to_line), (b"Subject", subject), fixed[1],
                (b"Message-ID", f"Message-ID: {self.message_id(recipient.id)}\r\n".encode()), fixed[2],
                (b"List-Unsubscribe", unsubscribe_line), *fixed[3:]]

    def message(self, recipient: Subscriber, to: str | None = None) -> bytes | None:
        """The complete message for one recipient, or None when no note is on their topics."""
        selected = self.select(recipient.topics)
        if not selected:
            return None
        text_values, html_values = self.values(recipient, selected)
        body = b"".join((self.text_head, base64_lines(assemble(self.text, text_values, selected)),
                         self.html_head, base64_lines(assemble(self.html, html_values, selected)), self.closing))
        headers = self.headers(recipient, selected, to)
        head = b"".join(line for _, line in headers)
        if self.signer is not None:
            head = self.signer.sign(headers, body) + head
        return head + CRLF + body

    def parts(self, recipient: Subscriber) -> tuple[str, str]:
        """The (text, HTML) a recipient sees, decoded: for previews and tests."""
        selected = self.select(recipient.topics) or ()
        text_values, html_values = self.values(recipient, selected)
        return (assemble(self.text, text_values, selected).decode(),
                assemble(self.html, html_values, selected).decode())


_SAFE_ADDRESS = re.compile(r"[!#-'*+\-/-9=?A-Z^-~.]{1,64}@[A-Za-z0-9.-]{1,253}")


def _message_id_mac(secret: bytes, issue: str, subscriber_id: int) -> str:
    return hmac.new(secret, f"mid:{issue}:{subscriber_id}".encode(), hashlib.sha256).hexdigest()[:20]


def issue_of_message_id(secret: bytes, subscriber_id: int, message_id: str) -> str | None:
    """The issue a Message-ID of ours names, when it is the one we made for ``subscriber_id``
    (``secret``: the store's log key); None for anyone else's (a bounce quoting it, a forgery)."""
    found = re.fullmatch(r"<([0-9]{4}-W[0-9]{2})\.([0-9a-f]{20})@[^<>\s]+>", message_id.strip())
    if found and hmac.compare_digest(found[2], _message_id_mac(secret, found[1], subscriber_id)):
        return found[1]
    return None


def _attr(url: str) -> bytes:
    return url.replace("&", "&amp;").replace('"', "&quot;").encode()


# --- DKIM ------------------------------------------------------------------------------------

SIGNED = (b"from", b"to", b"subject", b"date", b"message-id", b"list-id", b"list-unsubscribe",
          b"list-unsubscribe-post", b"mime-version", b"content-type")
_WSP = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")


def relaxed_header(line: bytes) -> bytes:
    """RFC 6376 3.4.2: lowercase name, unfolded value, whitespace runs → one space, trimmed."""
    name, _, value = line.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value + CRLF


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4; our own bodies (base64 lines) pass through unchanged but for trailing blank lines."""
    if b" \r\n" in body or b"\t" in body or b"  " in body:
        body = _WSP.sub(b" ", _TRAILING_WSP.sub(CRLF, body))
    body = body.rstrip(b"\r\n")
    return body + CRLF if body else b""


class DkimSigner:
    """DKIM-Signature (rsa-sha256, relaxed/relaxed) for messages whose header lines we built.

    dkimpy's own signer does the RSA step in pure Python (~11 ms a message, ~89 msg/s); here it
    is OpenSSL's (~0.5 ms). dkimpy verifies a sample signature when the signer is created, so
    a wrong key or a canonicalization mistake stops the send before the first message.
    """

    def __init__(self, key_pem: bytes, selector: str, domain: str, headers: tuple[bytes, ...] = SIGNED):
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise MailSettingsError(f"the DKIM key is not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
            raise MailSettingsError("the DKIM key must be an RSA key of at least 1024 bits (2048 recommended)")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", selector) or not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
            raise MailSettingsError("DKIM selector and domain must be plain DNS labels")
        self.key, self.selector, self.domain, self.headers = key, selector, domain, headers
        self._sign = lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        self.tags = (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s={selector};\r\n"
                     f" h={':'.join(h.decode() for h in headers)};\r\n").encode()
        self.self_check()

    def public_record(self) -> str:
        """The DNS TXT record to publish at <selector>._domainkey.<domain>."""
        from cryptography.hazmat.primitives import serialization

        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()

    def sign(self, headers: list[tuple[bytes, bytes]], body: bytes, now: float | None = None) -> bytes:
        """The ``DKIM-Signature:`` line (CRLF-terminated) to put above ``headers``."""
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        value = self.tags + b" t=%d; bh=%s;\r\n b=" % (int(now or time.time()), body_hash)
        by_name = {name.lower(): line for name, line in headers}
        signed = b"".join(relaxed_header(by_name[h]) for h in self.headers if h in by_name)
        signed += relaxed_header(b"DKIM-Signature:" + value)[:-2]
        signature = base64.b64encode(self._sign(signed))
        folded = b"\r\n  ".join(signature[i:i + 72] for i in range(0, len(signature), 72))
        return b"DKIM-Signature: " + value + folded + CRLF

    def self_check(self) -> None:
        import dkim

        headers = [(b"From", b"From: a@" + self.domain.encode() + CRLF), (b"Subject", b"Subject: check\r\n")]
        body = b"check\r\n"
        message = self.sign(headers, body) + b"".join(line for _, line in headers) + CRLF + body
        record = self.public_record().encode()
        if not dkim.verify(message, dnsfunc=lambda name, timeout=5: record):
            raise MailSettingsError("DKIM self-check failed: dkimpy does not verify our signature")
