"""`digest serve`: the subscription service — subscribe, confirm, choose topics, unsubscribe.

    ServeSettings            host, port, public base URL, secret, limits: environment, then the
                             config file's [serve] table, then embedded defaults (loopback)
    create_app(...)          the Starlette (ASGI) app; uvicorn runs it (``run``)
    subscribe_form_html(...) the subscribe form as an HTML fragment, for the site to embed
    (confirmations.py)       the double opt-in email and its durable sender (the store's outbox)

Routes (relative to the base URL; the digest's emails link to the last three):

    GET  subscribe                 the form               POST subscribe          ask for a confirmation
    GET  confirm/<token>           one button             POST confirm/<token>    confirm (once, before expiry)
    GET  unsubscribe/<token>       one button (a GET never unsubscribes: link scanners follow GETs)
    POST unsubscribe/<token>       the button, or RFC 8058 one-click (``List-Unsubscribe=One-Click``)
    GET  preferences/<token>       topics                 POST preferences/<token>  save them
    GET  health                    200 when the store answers, else 503
    POST webhooks/ses              Amazon SES bounce and complaint notifications through SNS (only with
                                   DIGEST_SERVE_SES_TOPICS): signature, certificate host, topic, age and
                                   replay checked (digest.service.sns); a hard bounce or a complaint
                                   suppresses the reader and counts for the issue's rates

Abuse: the answer to a subscribe request is the same bytes whether the address is new, pending
or subscribed, and the confirmation email goes out after the response (no timing difference),
from the store's outbox, written in the sign-up's own transaction (a crash loses no email);
one confirmation per address per window (kept in the store, so it holds across servers); rate
limits per client IP and per address (token buckets: in the store on PostgreSQL, so they hold
across servers; in memory on SQLite); CSRF: a form POST must carry the
token of a form this service rendered (bound to a cookie), except the subscribe form embedded on
the site, which is accepted from the site's origin; a POST from any other origin is refused.
Addresses never reach a log: lines carry ``keyed_hash``. What needs no body (the link, the origin,
the IP limit, the Content-Length) is checked before a body is read; timeouts, the connection cap
and logs a client cannot flood are ``digest.service.server``'s.

Keys: links (confirm, unsubscribe, preferences) are signed and verified with the store's keyring
(``SubscriberStore.keyring``, shared by every server and by `digest send`, rotated by `digest
subscribers rotate-key`; each server rereads it every ``key_refresh`` seconds). DIGEST_SECRET (or
var/serve-secret) keys only the CSRF tokens of the service's forms: changing it invalidates forms
open in browsers (a reload mends them) and revokes no link. Log lines carry keyed hashes under the
store's log key, which no rotation changes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from digest.errors import AddressInvalid, RequestRefused, ServeError, StoreError
from digest.mail.message import (
    DEFAULT_SITE_URL,
    MailSettings,
    checked_url,
    issue_of_message_id,
    setting,
)
from digest.service.confirmations import ConfirmationSender, transport_factory
from digest.service.limits import SharedBucket, TokenBucket, limiter
from digest.service.server import client_log, serve
from digest.service.sns import Certificates, SnsRefused, ses_feedback, sns_url_ok, verify_sns
from digest.subscribers.store import (
    PURGE_AFTER_DAYS,
    Keyring,
    Subscriber,
    SubscriberStore,
    keyed_hash,
    normalize_address,
)
from digest.templates import environment

log = logging.getLogger("digest.service.app")
Limiter = TokenBucket | SharedBucket

DEFAULT_PORT = 8470
SECRET_FILE = "var/serve-secret"  # gitignored with the rest of var/
CSRF_COOKIE = "digest_csrf"
MAX_FIELD = 320  # characters in any one form value
MAX_TOKEN = 100


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    base_url: str = ""  # public URL of the service, ending in '/'; default http://host:port/
    secret: bytes = dataclasses.field(default=b"", repr=False)  # CSRF tokens; same on every server
    mail: str = "outbox"  # where confirmation emails go: outbox | smtp
    outbox: Path = Path("outbox")
    confirm_window: float = 600.0  # at most one confirmation email per address in this many seconds
    confirm_lifetime: float = 48 * 3600.0  # a confirmation link works this long, once
    confirm_retry: float = 5.0  # after a temporary failure, its email is tried again this long after,
    # doubling each time (at most 5 minutes apart, 6 tries, then withdrawn: asking again sends one)
    confirm_lease: float = 60.0  # a sender holds an email this long; longer than the relay's timeout, as
    # a dead sender's emails wait this long for another (one it left after its final '.': ambiguous)
    ip_limit: tuple[int, float] = (30, 60.0)  # form POSTs per client IP: (count, seconds)
    address_limit: tuple[int, float] = (5, 3600.0)  # subscribe requests per address
    max_body: int = 8192  # bytes of a request body
    header_timeout: float = 10.0  # seconds for a request line and headers to arrive (slowloris)
    body_timeout: float = 10.0  # seconds for a body to arrive after its headers, or a client to read answers
    keep_alive: float = 5.0  # seconds an idle connection stays open for the next request
    max_connections: int = 500  # open connections per process; past it a new one is answered 503
    allowed_origins: tuple[str, ...] = ()  # besides the service's and the site's own
    forwarded_allow_ips: str = ""  # proxies whose X-Forwarded-For is believed (uvicorn's setting)
    key_refresh: float = 30.0  # seconds: how soon a rotated link-signing key reaches this server
    ses_topics: tuple[str, ...] = ()  # SNS topic ARNs whose SES notifications webhooks/ses takes; none: no route
    sns_max_age: float = 3600.0  # seconds: an older SNS message is refused (and ids are kept this long)
    sns_cert_files: str = ""  # JSON file {certificate URL: PEM file}: certificates read, never fetched
    webhook_max_body: int = 262144  # bytes of an SNS message (SNS's own limit is 256 KiB)

    @property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path or "/"


# --- settings --------------------------------------------------------------------------------

def _limit(value, what: str) -> tuple[int, float]:
    """'30/60' (30 per 60 seconds) → (30, 60.0)."""
    if isinstance(value, tuple):
        return value
    count, _, seconds = str(value).partition("/")
    try:
        parsed = int(count), float(seconds or 60)
    except ValueError:
        raise ServeError(f"{what} is '{value}'; write it as COUNT/SECONDS, e.g. 30/60") from None
    if parsed[0] < 1 or parsed[1] <= 0:
        raise ServeError(f"{what} must allow at least 1 request in a positive number of seconds")
    return parsed


def _number(value, what: str, cast=float):
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise ServeError(f"{what} must be a number, not '{value}'") from None


def _positive(value, what: str, cast=float):
    number = _number(value, what, cast)
    if number <= 0:
        raise ServeError(f"{what} must be greater than 0, not '{value}'")
    return number


def load_secret(env: Mapping, path: Path = Path(SECRET_FILE)) -> bytes:
    """$DIGEST_SECRET, else the secret file (created, mode 600, on first start)."""
    if value := env.get("DIGEST_SECRET"):
        if len(value) < 32:
            raise ServeError("DIGEST_SECRET must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value.encode()
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
        return path.read_text(encoding="ascii").strip().encode()
    except FileExistsError:  # another server created it meanwhile
        return path.read_text(encoding="ascii").strip().encode()
    except OSError as exc:
        raise ServeError(f"cannot read or create the secret file {path}: {exc.strerror}; "
                         "set DIGEST_SECRET instead") from None


def serve_settings(env: Mapping, config: dict, host: str | None = None, port: int | None = None,
                   mail: str | None = None, outbox: Path | None = None, secret: bytes | None = None) -> ServeSettings:
    """Arguments, then $DIGEST_SERVE_<KEY> / $DIGEST_<KEY>, then [serve] of the config file, then defaults.
    ``secret`` given (`digest serve --check`, which must create no file): used instead of ``load_secret``."""
    d = ServeSettings()

    def get(key, default=None):
        return setting(env, config, "serve", key, default)

    host = host or get("host", d.host)
    port = port or _number(get("port", d.port), "DIGEST_SERVE_PORT", int)
    base_url = _public_url(env, config) or f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    mail = mail or get("mail", d.mail)
    if mail not in ("outbox", "smtp"):
        raise ServeError(f"DIGEST_SERVE_MAIL is '{mail}'; use outbox or smtp")
    return ServeSettings(
        host=host, port=port, base_url=base_url if base_url.endswith("/") else base_url + "/",
        secret=load_secret(env) if secret is None else secret, mail=mail,
        outbox=Path(outbox or get("outbox", d.outbox)),
        confirm_window=_number(get("confirm_window", d.confirm_window), "DIGEST_SERVE_CONFIRM_WINDOW"),
        confirm_lifetime=_number(get("confirm_lifetime", d.confirm_lifetime), "DIGEST_SERVE_CONFIRM_LIFETIME"),
        confirm_retry=_number(get("confirm_retry", d.confirm_retry), "DIGEST_SERVE_CONFIRM_RETRY"),
        confirm_lease=_number(get("confirm_lease", d.confirm_lease), "DIGEST_SERVE_CONFIRM_LEASE"),
        ip_limit=_limit(get("ip_limit", d.ip_limit), "DIGEST_SERVE_IP_LIMIT"),
        address_limit=_limit(get("address_limit", d.address_limit), "DIGEST_SERVE_ADDRESS_LIMIT"),
        max_body=_number(get("max_body", d.max_body), "DIGEST_SERVE_MAX_BODY", int),
        header_timeout=_positive(get("header_timeout", d.header_timeout), "DIGEST_SERVE_HEADER_TIMEOUT"),
        body_timeout=_positive(get("body_timeout", d.body_timeout), "DIGEST_SERVE_BODY_TIMEOUT"),
        keep_alive=_positive(get("keep_alive", d.keep_alive), "DIGEST_SERVE_KEEP_ALIVE"),
        max_connections=_positive(get("max_connections", d.max_connections), "DIGEST_SERVE_MAX_CONNECTIONS", int),
        allowed_origins=tuple(o.rstrip("/") for o in str(get("allowed_origins", "")).split() if o)
        or (LOCAL_PREVIEW_ORIGINS if host in LOOPBACK_HOSTS else ()),
        forwarded_allow_ips=str(get("forwarded_allow_ips", "")),
        key_refresh=_number(get("key_refresh", d.key_refresh), "DIGEST_SERVE_KEY_REFRESH"),
        ses_topics=tuple(t for t in re.split(r"[\s,]+", str(get("ses_topics", "") or "")) if t),
        sns_max_age=_positive(get("sns_max_age", d.sns_max_age), "DIGEST_SERVE_SNS_MAX_AGE"),
        sns_cert_files=str(get("sns_cert_files", "") or ""),
        webhook_max_body=_positive(get("webhook_max_body", d.webhook_max_body), "DIGEST_SERVE_WEBHOOK_MAX_BODY",
                                   int))


# A service on this machine also takes the form from a local `mkdocs serve` preview (its default
# address), whose pages post to it when DIGEST_SERVICE_URL is unset: trying the form needs no setting.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LOCAL_PREVIEW_ORIGINS = ("http://127.0.0.1:8000", "http://localhost:8000")


def _public_url(env: Mapping, config: dict) -> str:
    """The service's public URL as given (DIGEST_BASE_URL, else the DIGEST_SERVICE_URL that
    `digest send` puts in emails: one service, one address), checked; '' when neither is set."""
    for table, key, name in (("serve", "base_url", "DIGEST_BASE_URL"), ("mail", "service_url", "DIGEST_SERVICE_URL")):
        if value := setting(env, config, table, key):
            return checked_url(str(value), f"{name} (the service's public URL)")
    return ""


def form_origins(settings: ServeSettings, mail: MailSettings) -> frozenset[str]:
    """The origins whose pages may post the subscribe form without the service's own cookie."""
    return frozenset({_origin(mail.site_url), *(o.lower() for o in settings.allowed_origins)})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


# --- tokens, CSRF, limits --------------------------------------------------------------------

def csrf_token(secret: bytes, nonce: str) -> str:
    mac = hmac.new(secret, f"csrf:{nonce}".encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(mac).decode()


def csrf_valid(secret: bytes, nonce: str | None, token: str | None) -> bool:
    if not nonce or not token or len(nonce) > 64 or len(token) > 64 or not (nonce + token).isascii():
        return False
    return hmac.compare_digest(csrf_token(secret, nonce), token)


# --- pages -----------------------------------------------------------------------------------

def tag_choices(tags) -> list[tuple[str, str]]:
    """(id, name) pairs from a {id: Tag} mapping, a list of pairs, or a list of objects with .id/.name."""
    if isinstance(tags, Mapping):
        return [(tag_id, getattr(tag, "name", tag)) for tag_id, tag in tags.items()]
    return [(t.id, t.name) if hasattr(t, "id") else (t[0], t[1]) for t in tags]


def subscribe_form_html(service_url: str, tags, *, csrf: str = "", email: str = "",
                        chosen: Iterable[str] = (), error: str = "") -> str:
    """The subscribe form, an HTML fragment posting to ``service_url`` + 'subscribe'; no script.

    The site embeds it as it is (on the home page and /subscribe/): ``tags`` are content/tags.yml's
    (a {id: Tag} mapping or (id, name) pairs), one checkbox each.
    """
    action = (service_url if service_url.endswith("/") else service_url + "/") + "subscribe"
    return environment().get_template("serve/subscribe_form.html").render(
        action=action, tags=tag_choices(tags), csrf=csrf, email=email, chosen=set(chosen), error=error,
        purge_days=PURGE_AFTER_DAYS)


# --- the app ---------------------------------------------------------------------------------

TEXT = {
    "address": "올바른 이메일 주소가 아닙니다. 이름이나 줄바꿈 없이 주소만 적어 주세요 (예: you@example.com).",
    "topic": "알 수 없는 주제가 있습니다. 목록에 있는 주제만 골라 주세요.",
    "field": "보낸 값이 너무 길거나 줄바꿈·제어 문자가 들어 있습니다. 다시 입력해 주세요.",
    "form": "양식을 읽을 수 없습니다. 페이지를 새로 고친 뒤 다시 보내 주세요.",
    "media": "이 주소는 웹 양식(application/x-www-form-urlencoded)으로 보낸 요청만 받습니다.",
    "csrf": "요청을 확인할 수 없습니다. 페이지를 새로 고친 뒤 다시 보내 주세요.",
    "origin": "다른 사이트에서 보낸 요청은 받지 않습니다.",
    "link": "링크가 올바르지 않습니다. 메일에 있는 링크를 그대로 열어 주세요.",
    "expired": "확인 링크가 만료되었습니다. 구독을 다시 신청하면 새 링크를 보내 드립니다.",
    "used": "이미 사용한 확인 링크입니다. 다시 구독하려면 새로 신청해 주세요.",
    "too_large": "요청이 너무 큽니다.",
    "ip": "요청이 너무 많습니다. {wait} 뒤에 다시 시도해 주세요.",
    "address_limit": "이 주소로 들어온 요청이 너무 많습니다. {wait} 뒤에 다시 시도해 주세요.",
    "not_found": "페이지를 찾을 수 없습니다. 주소를 확인해 주세요.",
    "method": "이 주소는 그런 방식의 요청을 받지 않습니다.",
    "store": "잠시 문제가 생겼습니다. 조금 뒤에 다시 시도해 주세요.",
}


def _wait_text(seconds: float) -> str:
    seconds = max(1, int(seconds + 0.999))
    return f"{seconds}초" if seconds < 120 else f"{(seconds + 59) // 60}분"


@dataclass
class Service:
    settings: ServeSettings
    store: SubscriberStore
    mail: MailSettings
    tags: list[tuple[str, str]]
    sender: ConfirmationSender
    store_secret: bytes = b""
    ip_limiter: Limiter = None
    address_limiter: Limiter = None
    own_origins: frozenset[str] = frozenset()
    site_origins: frozenset[str] = frozenset()
    keys: Keyring | None = None
    keys_read: float = float("-inf")  # time.monotonic() when ``keys`` was read
    certificates: Certificates | None = None  # SNS signing certificates (webhooks/ses)
    sns_fetch: object = None  # (url) -> bytes: certificates, and the SubscribeURL a confirmation opens

    def url(self, path: str) -> str:
        return self.settings.base_url + path

    async def keyring(self) -> Keyring:
        """The store's link-signing keys, reread every ``key_refresh`` seconds: a rotation by
        `digest subscribers rotate-key` reaches every server that soon, with no restart."""
        if time.monotonic() - self.keys_read >= self.settings.key_refresh or self.keys is None:
            self.keys = await in_thread(self.store.keyring)
            self.keys_read = time.monotonic()
        return self.keys


def _service(request) -> Service:
    return request.app.state.service


def render(service: Service, template: str, **context) -> str:
    base = {"base_path": service.settings.base_path, "site_url": service.mail.site_url,
            "list_name": service.mail.list_name, "csrf": "", "notice": "", "purge_days": PURGE_AFTER_DAYS}
    return environment().get_template(f"serve/{template}").render(**{**base, **context})


def page(request, template: str, status: int = 200, form: bool = False, headers=None, **context):
    """An HTML page; with ``form``, a CSRF token in the page and its nonce in a cookie."""
    from starlette.responses import HTMLResponse

    service = _service(request)
    nonce, new = request.cookies.get(CSRF_COOKIE, ""), False
    if form and not (16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum()):
        nonce, new = secrets.token_urlsafe(16), True
    csrf = csrf_token(service.settings.secret, nonce) if form else ""
    response = HTMLResponse(render(service, template, csrf=csrf, **context), status, headers=headers)
    if new:
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="lax", path=service.settings.base_path,
                            secure=service.settings.base_url.startswith("https:"))
    return response


def refuse(status: int, key: str, retry_after: float | None = None) -> RequestRefused:
    wait = _wait_text(retry_after) if retry_after else ""
    return RequestRefused(status, TEXT[key].format(wait=wait), int(retry_after + 1) if retry_after else None)


async def limited(limit: Limiter, key: str) -> float:
    """Seconds until ``key`` may try again (0: allowed, and counted); a shared limit asks the store."""
    return await in_thread(limit.hit, key) if limit.blocking else limit.hit(key)


async def limit_ip(request) -> None:
    service = _service(request)
    client = request.client.host if request.client else "unknown"
    if wait := await limited(service.ip_limiter, client):
        raise refuse(429, "ip", wait)


async def read_form(request) -> dict[str, list[str]]:
    """The posted fields; 4xx for another media type, bad encoding, or a value too long or with
    line breaks and control characters."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise refuse(415, "media")
    body = await request.body()
    try:
        if media == "multipart/form-data":  # RFC 8058 prefers it for one-click POSTs
            fields = _multipart(content_type, body)
        else:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64, errors="strict")
    except (UnicodeError, ValueError):
        raise refuse(400, "form") from None
    for values in fields.values():
        for value in values:
            if len(value) > MAX_FIELD or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029"
                                             for c in value):
                raise refuse(400, "field")
    return fields


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    """Text fields of a multipart/form-data body (small: the body limit came first); no files."""
    import email.parser
    import email.policy

    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ValueError("not multipart")
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None or len(fields) > 64:
            raise ValueError("not a text field")
        fields.setdefault(name, []).append((part.get_payload(decode=True) or b"").decode("utf-8"))
    return fields


def one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name, [])
    if len(values) > 1:
        raise refuse(400, "form")
    return values[0] if values else ""


def check_origin(request, allow_site: bool) -> str:
    """'self', 'site' (the form embedded on the site) or 'none' (no Origin: not a browser's
    cross-site request); RequestRefused(403) for any other origin."""
    service = _service(request)
    origin = request.headers.get("origin")
    if origin is None:
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise refuse(403, "origin")
        return "none"
    origin = origin.strip().rstrip("/").lower()
    if origin in service.own_origins:
        return "self"
    if allow_site and origin in service.site_origins:
        return "site"
    raise refuse(403, "origin")


def check_csrf(request, fields) -> None:
    if not csrf_valid(_service(request).settings.secret, request.cookies.get(CSRF_COOKIE), one(fields, "csrf")):
        raise refuse(403, "csrf")


async def page_form(request):
    """A form posted from one of the service's own pages: rate-limited, same origin, CSRF token
    (the first two before the body is read). Returns (service, fields)."""
    service = _service(request)
    await limit_ip(request)
    check_origin(request, allow_site=False)
    fields = await read_form(request)
    check_csrf(request, fields)
    return service, fields


def chosen_topics(service: Service, fields) -> tuple[str, ...]:
    known = {tag_id for tag_id, _ in service.tags}
    topics = fields.get("topic", [])
    if any(t not in known for t in topics):
        raise refuse(400, "topic")
    return tuple(sorted(set(topics)))


def path_token(request) -> str:
    token = request.path_params["token"]
    if not 0 < len(token) <= MAX_TOKEN or not all(c.isascii() and (c.isalnum() or c in "._-") for c in token):
        raise refuse(400, "link")
    return token


async def in_thread(function, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


# --- handlers ---

async def subscribe_page(request):
    return page(request, "subscribe.html", form=True, tags=_service(request).tags, email="", chosen=set(),
                error="")


async def subscribe(request):
    service = _service(request)
    await limit_ip(request)
    origin = check_origin(request, allow_site=True)  # what needs no body is checked before it is read
    fields = await read_form(request)
    if origin != "site":
        check_csrf(request, fields)
    topics = chosen_topics(service, fields)
    try:
        address = normalize_address(one(fields, "email"))
    except AddressInvalid:
        return page(request, "subscribe.html", 400, form=True, tags=service.tags, email=one(fields, "email"),
                    chosen=set(topics), error=TEXT["address"])
    who = keyed_hash(service.store_secret, address)
    if wait := await limited(service.address_limiter, who):
        raise refuse(429, "address_limit", wait)
    s = service.settings
    subscriber, confirmation = await in_thread(service.store.request_confirmation, address, topics,
                                               s.confirm_window, s.confirm_lifetime)
    if confirmation is not None:  # its email is in the store's outbox since the same transaction
        service.sender.wake()
    log.info("subscribe request for %s: %s", who, "confirmation queued" if confirmation else
             "no new mail (one was sent within the window)")
    return page(request, "sent.html", window=_duration(s.confirm_window))


async def _confirm_token(service: Service, request) -> int:
    confirmation_id, problem = (await service.keyring()).verify_expiring("confirm", path_token(request))
    if confirmation_id is None:
        raise refuse(400, "link")
    if problem == "expired":
        raise refuse(410, "expired")
    return confirmation_id


async def confirm_page(request):
    service = _service(request)
    state, subscriber = await in_thread(service.store.confirmation_status, await _confirm_token(service, request))
    if state == "used":
        if subscriber is not None and subscriber.status == "confirmed":
            return await _confirmed_page(request, service, subscriber, already=True)  # a second click: all is well
        raise refuse(409, "used")  # used, then unsubscribed: a new request sends a new link
    # a confirmed reader who asked for other topics confirms a change, not a subscription
    changing = state == "open" and subscriber is not None and subscriber.status == "confirmed"
    return page(request, "confirm.html", form=True, changing=changing)


async def confirm(request):
    confirmation_id = await _confirm_token(_service(request), request)  # before the body is read
    service, _ = await page_form(request)
    outcome, subscriber = await in_thread(service.store.confirm, confirmation_id)
    if outcome == "used":  # a double submit, or the link again after it worked
        _, subscriber = await in_thread(service.store.confirmation_status, confirmation_id)
        if subscriber is not None and subscriber.status == "confirmed":
            return await _confirmed_page(request, service, subscriber, already=True)
    if outcome != "confirmed":
        raise refuse({"used": 409, "expired": 410}.get(outcome, 400), outcome if outcome != "unknown" else "link")
    log.info("confirmed %s", keyed_hash(service.store_secret, subscriber.address))
    return await _confirmed_page(request, service, subscriber)


async def _confirmed_page(request, service: Service, subscriber, already: bool = False):
    preferences = (await service.keyring()).sign("preferences", subscriber.id)
    return page(request, "confirmed.html", topics=_topic_names(service, subscriber.topics), already=already,
                preferences_url=service.url("preferences/" + preferences))


def _duration(seconds: float) -> str:
    """'10분', '1시간', '90초': how long a reader waits, in the unit that reads naturally."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}시간"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}분"
    return f"{int(seconds)}초"


def _topic_names(service: Service, topics: tuple[str, ...]) -> list[str]:
    names = dict(service.tags)
    return [names.get(t, t) for t in topics]


async def _subscriber_id(service: Service, request, purpose: str) -> int:
    subscriber_id = (await service.keyring()).verify(purpose, path_token(request))
    if subscriber_id is None:
        raise refuse(400, "link")
    return subscriber_id


async def unsubscribe_page(request):
    await _subscriber_id(_service(request), request, "unsubscribe")
    return page(request, "unsubscribe.html", form=True)


async def unsubscribe(request):
    """The page's button, or RFC 8058's one-click POST (``List-Unsubscribe=One-Click``), which
    mail clients send without a page, a cookie or an Origin."""
    from starlette.responses import PlainTextResponse

    service = _service(request)
    # a bad link is refused before its body is read
    subscriber_id = await _subscriber_id(service, request, "unsubscribe")
    fields = await read_form(request)
    one_click = fields.get("List-Unsubscribe") == ["One-Click"]
    if not one_click:
        await limit_ip(request)
        check_origin(request, allow_site=False)
        check_csrf(request, fields)
    if await in_thread(service.store.unsubscribe, subscriber_id):
        log.info("unsubscribed subscriber #%d (%s)", subscriber_id, "one-click" if one_click else "page")
    if one_click:
        return PlainTextResponse("수신 거부되었습니다. Unsubscribed.\n")
    return page(request, "unsubscribed.html")


async def preferences_page(request):
    service = _service(request)
    subscriber_id = await _subscriber_id(service, request, "preferences")
    subscriber = await in_thread(service.store.get, subscriber_id)
    return await _preferences(request, service, subscriber, subscriber_id, "")


async def _preferences(request, service: Service, subscriber: Subscriber | None, subscriber_id: int, notice: str):
    active = subscriber is not None and subscriber.status != "unsubscribed"
    unsubscribe = (await service.keyring()).sign("unsubscribe", subscriber_id)
    return page(request, "preferences.html", 200 if active else 404, form=active, tags=service.tags,
                chosen=set(subscriber.topics) if active else set(), active=active, notice=notice,
                unsubscribe_url=service.url("unsubscribe/" + unsubscribe))


async def preferences(request):
    subscriber_id = await _subscriber_id(_service(request), request, "preferences")  # before the body is read
    service, fields = await page_form(request)
    topics = chosen_topics(service, fields)
    saved = await in_thread(service.store.set_topics, subscriber_id, topics)
    subscriber = await in_thread(service.store.get, subscriber_id)
    if saved:
        log.info("topics of subscriber #%d saved (%d)", subscriber_id, len(topics))
    return await _preferences(request, service, subscriber, subscriber_id, "주제를 저장했습니다." if saved else "")


async def ses_webhook(request):
    """An SNS message about SES mail: verified first (nothing in it is believed before), then taken
    once. 200 when taken (or nothing to do), 4xx when refused: SNS does not retry a 4xx, and a
    message that failed its checks must not come back; 503 when a certificate cannot be fetched now."""
    from starlette.responses import PlainTextResponse

    service = _service(request)
    body = await request.body()
    settings = service.settings
    try:
        message = await in_thread(verify_sns, body, service.certificates, frozenset(settings.ses_topics),
                                  settings.sns_max_age)
    except SnsRefused as exc:
        client_log.info("webhooks/ses refused (%d): %s", exc.status, exc.reason)
        return PlainTextResponse(f"refused: {exc.reason}\n", exc.status)
    if not await in_thread(service.store.take_webhook_message, message["MessageId"], 2 * settings.sns_max_age):
        client_log.info("webhooks/ses refused (409): a replayed message")
        return PlainTextResponse("refused: already taken\n", 409)
    if message["Type"] == "SubscriptionConfirmation":
        url = message["SubscribeURL"]
        if not sns_url_ok(url, pem=False):
            return PlainTextResponse("refused: a SubscribeURL that is not SNS's\n", 403)
        try:
            await in_thread(service.sns_fetch, url)
        except Exception as exc:  # noqa: BLE001 - the network: SNS sends the confirmation again
            log.error("could not confirm the SNS subscription of %s: %s", message["TopicArn"], type(exc).__name__)
            return PlainTextResponse("could not confirm\n", 503)
        log.info("confirmed the SNS subscription of %s", message["TopicArn"])
        return PlainTextResponse("confirmed\n")
    taken = 0
    try:
        for kind, address, message_id in ses_feedback(message) if message["Type"] == "Notification" else ():
            taken += await in_thread(_take_feedback, service, kind, address, message_id)
    except StoreError:  # answered 503; SNS sends it again, and recording it twice counts it once
        await in_thread(service.store.release_webhook_message, message["MessageId"])
        raise
    return PlainTextResponse(f"ok: {taken}\n")


def _take_feedback(service: Service, kind: str, address: str, message_id: str) -> int:
    """Record one recipient's bounce or complaint (1), or nothing for an address we do not have (0)."""
    try:
        subscriber = service.store.find(address)
    except AddressInvalid:
        subscriber = None
    if subscriber is None:
        client_log.info("webhooks/ses: a %s for an address not in the store", kind)
        return 0
    issue = issue_of_message_id(service.store_secret, subscriber.id, message_id) if message_id else None
    new = service.store.record_feedback(subscriber.id, issue, kind, "ses")
    log.info("ses %s for subscriber #%d (%s)%s", kind, subscriber.id, keyed_hash(service.store_secret,
             subscriber.address), "" if new else ", already recorded")
    return 1


async def health(request):
    from starlette.responses import JSONResponse

    try:
        await in_thread(_service(request).store.get, 0)
    except StoreError:
        return JSONResponse({"status": "store unavailable"}, 503)
    return JSONResponse({"status": "ok"})


async def stylesheet(request):
    from starlette.responses import Response

    css = environment().loader.get_source(environment(), "serve/serve.css")[0]
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=86400"})


async def home(request):
    from starlette.responses import RedirectResponse

    return RedirectResponse(_service(request).settings.base_path + "subscribe", 303)


# --- errors and middleware ---

async def refused(request, exc: RequestRefused):
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    if exc.status == 413:  # the rest of that body is not worth reading
        headers["Connection"] = "close"
    return page(request, "error.html", exc.status, headers=headers, message=exc.message)


async def http_error(request, exc):
    key = {404: "not_found", 405: "method"}.get(exc.status_code, "form")
    return page(request, "error.html", exc.status_code, message=TEXT[key])


async def store_failed(request, exc: StoreError):
    log.error("store: %s", exc)
    return page(request, "error.html", 503, headers={"Retry-After": "30"}, message=TEXT["store"])


def security_headers(settings: ServeSettings) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self' data:; "
                                     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        (b"x-content-type-options", b"nosniff"),
        # Links carry tokens: never send them to another site. Not no-referrer: with it, browsers send
        # 'Origin: null' on our own form POSTs, and the origin check could not tell them from forgeries.
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"x-robots-tag", b"noindex"),
    ]
    if settings.base_url.startswith("https:"):
        headers.append((b"strict-transport-security", b"max-age=31536000"))
    return headers


class Guard:
    """Pure ASGI middleware: security headers on every response (and ``no-store`` unless the
    response says otherwise); a Content-Length over ``max_body`` answered 413 before the body is
    read, and a body without one cut at ``max_body``; a client that leaves before its body
    arrived counted on the throttled client log, not thrown to uvicorn (a traceback per request)."""

    def __init__(self, app, settings: ServeSettings, too_large):
        from starlette.requests import ClientDisconnect

        self.app, self.max_body, self.too_large = app, settings.max_body, too_large
        # SNS messages (a bounce quotes the mail's headers) are larger than any form
        self.larger = {settings.base_path.rstrip("/") + "/webhooks/ses": settings.webhook_max_body}
        self.headers = security_headers(settings)
        self.disconnect = ClientDisconnect

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + self.headers}
            await send(message)

        length = dict(scope["headers"]).get(b"content-length", b"0")
        max_body = self.larger.get(scope["path"], self.max_body)
        if not length.isdigit() or int(length) > max_body:
            return await self.too_large(scope, receive, send_with_headers)
        try:
            await self.app(scope, self._limited(receive, max_body), send_with_headers)
        except self.disconnect:  # nobody is left to answer, and nothing went wrong here
            client_log.info("a client closed its connection before its request body arrived")

    def _limited(self, receive, max_body: int):
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_body:
                raise refuse(413, "too_large")
            return message
        return limited


def create_app(settings: ServeSettings, store: SubscriberStore, mail: MailSettings, tags, smtp=None,
               sns_fetch=None):
    """The ASGI app, with the sender of its confirmation emails running while it is served
    (``smtp``: deliver.SmtpSettings when settings.mail is "smtp"). ``mail.service_url`` is replaced
    by the service's base URL. ``sns_fetch(url) -> bytes`` gets SNS signing certificates and opens
    SubscribeURLs (default: ``sns_fetcher(settings)``)."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    mail = dataclasses.replace(mail, service_url=settings.base_url)
    secret = store.secret()
    sender = ConfirmationSender(store, mail, settings.base_url, secret, int(settings.confirm_lifetime // 3600),
                                transport_factory(settings.mail, settings.outbox, secret, smtp),
                                getattr(smtp, "envelope_from", "") or "", retry_base=settings.confirm_retry,
                                lease=settings.confirm_lease)
    service = Service(settings, store, mail, tag_choices(tags), sender, store_secret=secret,
                      ip_limiter=limiter(store, "ip", *settings.ip_limit),
                      address_limiter=limiter(store, "address", *settings.address_limit),
                      own_origins=frozenset({_origin(settings.base_url)}),
                      site_origins=form_origins(settings, mail),
                      keys=store.keyring(), keys_read=time.monotonic())  # a store without a key fails here
    service.sns_fetch = sns_fetch or sns_fetcher(settings)
    service.certificates = Certificates(service.sns_fetch)
    prefix = settings.base_path.rstrip("/")
    routes = [
        Route(prefix + "/", home), Route(prefix + "/subscribe", subscribe_page, methods=["GET"]),
        Route(prefix + "/subscribe", subscribe, methods=["POST"]),
        Route(prefix + "/confirm/{token}", confirm_page, methods=["GET"]),
        Route(prefix + "/confirm/{token}", confirm, methods=["POST"]),
        Route(prefix + "/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
        Route(prefix + "/unsubscribe/{token}", unsubscribe, methods=["POST"]),
        Route(prefix + "/preferences/{token}", preferences_page, methods=["GET"]),
        Route(prefix + "/preferences/{token}", preferences, methods=["POST"]),
        Route(prefix + "/health", health), Route(prefix + "/static/serve.css", stylesheet),
    ]
    if settings.ses_topics:
        routes.append(Route(prefix + "/webhooks/ses", ses_webhook, methods=["POST"]))

    async def too_large(scope, receive, send):
        html = render(service, "error.html", message=TEXT["too_large"])
        await HTMLResponse(html, 413, headers={"Connection": "close"})(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        sender.start()  # emails left by an earlier run, or by a server that died, go out now
        try:
            yield
        finally:
            sender.stop()

    app = Starlette(routes=routes, exception_handlers={RequestRefused: refused, HTTPException: http_error,
                                                       StoreError: store_failed},
                    middleware=[Middleware(Guard, settings=settings, too_large=too_large)], lifespan=lifespan)
    app.state.service = service
    return app


def sns_fetcher(settings: ServeSettings):
    """How certificates and SubscribeURLs are fetched: over HTTPS (no redirects, 10 s, 64 KiB), or,
    with DIGEST_SERVE_SNS_CERT_FILES, certificates read from the files that JSON mapping names (a
    machine that cannot reach SNS, and the tests); then a SubscribeURL is not opened (logged)."""
    if settings.sns_cert_files:
        import json

        try:
            mapping = json.loads(Path(settings.sns_cert_files).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ServeError(f"cannot read DIGEST_SERVE_SNS_CERT_FILES {settings.sns_cert_files}: {exc}") from None
        if not isinstance(mapping, dict):
            raise ServeError("DIGEST_SERVE_SNS_CERT_FILES must be a JSON object {certificate URL: PEM file}")

        def from_files(url: str) -> bytes:
            if url not in mapping:
                if url.endswith(".pem"):
                    raise LookupError("no local file for this certificate URL")
                log.info("SNS subscription to confirm (no network here): open %s", url)
                return b""
            return Path(mapping[url]).read_bytes()
        return from_files

    def over_https(url: str) -> bytes:
        import httpx

        with httpx.stream("GET", url, timeout=10, follow_redirects=False) as response:
            response.raise_for_status()
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > 65536:
                    raise ValueError("too large")
        return body
    return over_https


def run(settings: ServeSettings, store: SubscriberStore, mail: MailSettings, tags, smtp=None) -> None:
    """Serve until stopped (SIGINT/SIGTERM); log lines on stderr carry keyed hashes, never addresses."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("digest serve: %(message)s"))
    package_log = logging.getLogger("digest.service")  # this module's lines and those about clients
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    package_log.propagate = False
    app = create_app(settings, store, mail, tags, smtp)
    log.info("erased %d unconfirmed sign-up(s) whose links expired over %g days ago",
             store.purge_unconfirmed(), PURGE_AFTER_DAYS)
    log.info("%s (store: %s; confirmation mail: %s)", settings.base_url, type(store).__name__,
             settings.mail if settings.mail == "smtp" else settings.outbox / "confirmations")
    log.info("the subscribe form may be posted from %s (the site, DIGEST_SITE_URL%s; more with "
             "DIGEST_SERVE_ALLOWED_ORIGINS)", ", ".join(sorted(form_origins(settings, mail))),
             ", not set: the placeholder" if mail.site_url == DEFAULT_SITE_URL else "")
    serve(app, host=settings.host, port=settings.port, header_timeout=settings.header_timeout,
          body_timeout=settings.body_timeout, keep_alive=settings.keep_alive,
          max_connections=settings.max_connections, forwarded_allow_ips=settings.forwarded_allow_ips)
