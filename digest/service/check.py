"""`digest serve --check`: what is wrong with the settings, the secret, the store and the mail relay,
in Korean and English, before the service starts (or beside running ones: it changes nothing).

    Finding             one finding (digest.diagnostics): ok, warn (it works, but look) or fail (fix it
                        before serving)
    check_setup(...)    every finding, in order: settings, content, secret, store, mail relay
    report_lines(...)   what `digest serve --check` prints; it exits 0 only without a failure

Nothing here prints a secret or a password: the secret is judged by its length and its file's mode,
a DSN is shown with its password starred, and the mail relay is connected to and greeted (EHLO,
STARTTLS when configured), never logged into and never sent a message. Nothing is created or
migrated: an old store's schema is reported, and the first `digest serve` upgrades it.
"""

from __future__ import annotations

import dataclasses
import smtplib
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

from digest.diagnostics import Finding, finding_lines
from digest.errors import DigestError
from digest.mail.message import DEFAULT_SITE_URL, mail_settings
from digest.service.app import LOOPBACK_HOSTS, SECRET_FILE, ServeSettings, _public_url, serve_settings
from digest.subscribers.store import MIGRATIONS, inspect_store, open_store

TOPICS = {"settings": "설정", "content": "콘텐츠", "secret": "비밀 키", "store": "저장소", "mail": "메일 서버"}


def check_setup(env: Mapping, config: dict, host: str | None = None, port: int | None = None,
                mail: str | None = None, outbox: Path | None = None, store: str | None = None,
                count_topics: Callable[[], int] | None = None) -> list[Finding]:
    """Every finding about the setup `digest serve` would start with these arguments.
    ``count_topics`` loads the content as `digest serve` does (the CLI passes it: the pipeline
    that validates content is above this package) and says how many topics the form offers."""
    findings: list[Finding] = []
    settings = _settings(env, config, host, port, mail, outbox, findings)
    if count_topics is not None:
        findings.append(_content(count_topics))
    store_findings, backend = _store(store)
    findings += _secret(env, postgres=backend == "postgresql") + store_findings
    if settings is not None and settings.mail == "smtp":
        findings += _relay(env, config)
    return findings


def report_lines(findings: list[Finding]) -> list[str]:
    return finding_lines(findings, TOPICS, before=("serving", "시작하기 전에"),
                         ready=("ready to serve", "시작할 준비가 되었습니다"))


# --- settings ----------------------------------------------------------------------------------

def _settings(env, config, host, port, mail, outbox, findings: list[Finding]) -> ServeSettings | None:
    try:
        settings = serve_settings(env, config, host=host, port=port, mail=mail, outbox=outbox, secret=b"")
        mail_config = dataclasses.replace(mail_settings(env, config), service_url=settings.base_url)
        if settings.mail == "smtp":
            mail_config.refuse_placeholders()
    except DigestError as exc:
        findings.append(Finding("fail", "settings", str(exc), f"설정이 잘못되었습니다: {exc}"))
        return None
    if settings.host not in LOOPBACK_HOSTS and not _public_url(env, config):
        findings.append(Finding(
            "fail", "settings", f"DIGEST_BASE_URL is not set: links in mail would point at {settings.base_url}; "
            "set it to the public https:// address", f"DIGEST_BASE_URL이 없어 메일의 링크가 {settings.base_url}"
            "을 가리킵니다. 공개 https:// 주소를 설정해 주세요."))
    findings += _settings_warnings(settings, mail_config.site_url)
    findings.append(Finding("ok", "settings", f"public URL {settings.base_url}, listening on {settings.host}:"
                            f"{settings.port}, confirmation mail: {settings.mail}",
                            f"공개 주소 {settings.base_url}, {settings.host}:{settings.port}에서 받음, "
                            f"확인 메일: {settings.mail}"))
    return settings


def _settings_warnings(settings: ServeSettings, site_url: str) -> list[Finding]:
    found = []
    if settings.base_url.startswith("http:") and settings.host not in LOOPBACK_HOSTS:
        found.append(Finding("warn", "settings", "the public URL is plain http: the links carry tokens; put TLS "
                             "in front (deploy/nginx-digest.conf)", "공개 주소가 http입니다. 링크에 토큰이 "
                             "들어 있으니 앞에 TLS를 두세요 (deploy/nginx-digest.conf)."))
    if settings.forwarded_allow_ips.strip() == "*":
        found.append(Finding("warn", "settings", "DIGEST_SERVE_FORWARDED_ALLOW_IPS is '*': any client can set "
                             "its own IP (X-Forwarded-For) and slip the per-IP limit; name the proxy's address",
                             "DIGEST_SERVE_FORWARDED_ALLOW_IPS가 '*'라서 누구나 X-Forwarded-For로 IP를 꾸며 "
                             "IP별 제한을 피할 수 있습니다. 프록시 주소만 적어 주세요."))
    if settings.mail == "outbox":
        found.append(Finding("warn", "settings", f"confirmation mail goes to {settings.outbox}/confirmations/, "
                             "which no reader receives; --mail smtp (DIGEST_SERVE_MAIL=smtp) for real",
                             f"확인 메일이 {settings.outbox}/confirmations/에 쌓일 뿐 독자에게 가지 않습니다. "
                             "실제로는 --mail smtp (DIGEST_SERVE_MAIL=smtp)를 쓰세요."))
    if site_url == DEFAULT_SITE_URL:
        found.append(Finding("warn", "settings", "DIGEST_SITE_URL is the placeholder: the site's embedded form "
                             "would be refused as another origin", "DIGEST_SITE_URL이 기본값이라 사이트에 넣은 "
                             "구독 양식이 다른 출처로 거절됩니다."))
    return found


def _content(count_topics: Callable[[], int]) -> Finding:
    try:
        topics = count_topics()
    except DigestError as exc:
        return Finding("fail", "content", f"{exc}; `digest serve` reads the form's topics from it",
                       f"콘텐츠를 읽을 수 없습니다 ({exc}). 양식의 주제를 여기서 읽습니다.")
    return Finding("ok", "content", f"{topics} topic(s) for the form", f"양식의 주제 {topics}개")


# --- the secret (CSRF) -------------------------------------------------------------------------

def _secret(env: Mapping, postgres: bool) -> list[Finding]:
    """DIGEST_SECRET, else var/serve-secret: judged by length and mode, never shown."""
    if value := env.get("DIGEST_SECRET"):
        if value.startswith("replace-with"):
            return [Finding("fail", "secret", "DIGEST_SECRET is still the example's placeholder: make one with "
                            "`openssl rand -hex 32`", "DIGEST_SECRET이 아직 예시 값입니다. `openssl rand -hex 32`로 "
                            "만들어 주세요.")]
        if len(value) < 32:
            return [Finding("fail", "secret", f"DIGEST_SECRET has {len(value)} characters, fewer than 32; make "
                            "one with `openssl rand -hex 32`", f"DIGEST_SECRET이 {len(value)}자로 32자보다 "
                            "짧습니다. `openssl rand -hex 32`로 만들어 주세요.")]
        return [Finding("ok", "secret", f"DIGEST_SECRET is set ({len(value)} characters; it keys the forms' "
                        "CSRF tokens only, links are signed by the store's keys)", f"DIGEST_SECRET이 있습니다 "
                        f"({len(value)}자, 양식의 CSRF 토큰에만 쓰임; 링크는 저장소의 키로 서명)")]
    path = Path(SECRET_FILE)
    if not path.exists():
        level = "warn"
        english = f"no DIGEST_SECRET and no {path} yet: the first start generates the file"
        korean = f"DIGEST_SECRET도 {path}도 아직 없습니다. 처음 시작할 때 파일을 만듭니다"
        if postgres:
            english += "; several servers on one PostgreSQL need the same DIGEST_SECRET on each"
            korean += ". PostgreSQL 하나에 서버가 여럿이면 모두 같은 DIGEST_SECRET이 필요합니다"
        return [Finding(level, "secret", english, korean + ".")]
    return [_secret_file(path)]


def _secret_file(path: Path) -> Finding:
    try:
        mode, length = path.stat().st_mode, len(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeError) as exc:
        return Finding("fail", "secret", f"cannot read {path}: {exc}; set DIGEST_SECRET instead",
                       f"{path}을 읽을 수 없습니다 ({exc}). DIGEST_SECRET을 설정해 주세요.")
    if mode & 0o077:
        return Finding("fail", "secret", f"{path} is readable by others (mode {mode & 0o777:o}): chmod 600 {path}",
                       f"{path}을 다른 사용자도 읽을 수 있습니다 (권한 {mode & 0o777:o}). chmod 600 {path}")
    if length < 32:
        return Finding("fail", "secret", f"{path} holds {length} characters, fewer than 32: delete it (a new one "
                       "is generated) or set DIGEST_SECRET", f"{path}이 {length}자로 짧습니다. 지우면 새로 "
                       "만들어집니다 (또는 DIGEST_SECRET 설정).")
    return Finding("ok", "secret", f"{path} (mode 600, {length} characters; CSRF tokens only)",
                   f"{path} (권한 600, {length}자; CSRF 토큰에만 쓰임)")


# --- the store ---------------------------------------------------------------------------------

def _store(location: str | None) -> tuple[list[Finding], str]:
    """The store's findings, and its backend ('' when it cannot be read)."""
    try:
        info = inspect_store(location)
    except DigestError as exc:
        return [Finding("fail", "store", str(exc), f"저장소를 읽을 수 없습니다: {exc}")], ""
    return [_schema(location, info)], info.backend


def _schema(location: str | None, info) -> Finding:
    latest = len(MIGRATIONS)
    if info.version > latest:
        return Finding("fail", "store", f"{info.where} has schema {info.version}, written by a newer digest "
                       f"(this one knows {latest}): upgrade digest", f"{info.where}은 더 새로운 digest가 쓴 "
                       f"스키마 {info.version}입니다 (이 버전은 {latest}까지). digest를 올려 주세요.")
    if info.version == 0:
        return Finding("warn", "store", f"no store at {info.where} yet: the first `digest serve` creates it "
                       "(check the location if you expected subscribers)", f"{info.where}에 저장소가 아직 "
                       "없습니다. 처음 시작하는 `digest serve`가 만듭니다 (구독자가 있어야 한다면 위치를 확인하세요).")
    if info.version < latest:
        return Finding("warn", "store", f"{info.where} has schema {info.version} of {latest}: the first "
                       "`digest serve` to start upgrades it, once, while the others wait; export a backup "
                       "first (`digest subscribers export`)", f"{info.where}의 스키마가 {info.version}/{latest}"
                       "입니다. 먼저 시작하는 `digest serve`가 한 번 올리고 나머지는 기다립니다. 먼저 백업하세요 "
                       "(`digest subscribers export`).")
    return _open_store(location, info)


def _open_store(location: str | None, info) -> Finding:
    try:
        store = open_store(location, create=False)  # the schema is current: opening migrates nothing
        try:
            confirmed, keys = store.count("confirmed"), store.keyring()
        finally:
            store.close()
    except DigestError as exc:
        return Finding("fail", "store", str(exc), f"저장소를 읽을 수 없습니다: {exc}")
    return Finding("ok", "store", f"{info.backend} at {info.where}: schema {info.version} (current), {confirmed} "
                   f"confirmed subscriber(s), link-signing key #{keys.ids[0]} with {len(keys.retired)} retired "
                   "key(s) still verifying", f"{info.backend} {info.where}: 스키마 {info.version} (최신), 구독자 "
                   f"{confirmed}명, 링크 서명 키 #{keys.ids[0]} (아직 검증에 쓰는 이전 키 {len(keys.retired)}개)")


# --- the mail relay ------------------------------------------------------------------------------

def _relay(env: Mapping, config: dict) -> list[Finding]:
    """Connect and greet (EHLO; STARTTLS when configured), then QUIT: no login, no mail."""
    from digest.mail.deliver import smtp_settings

    try:
        s = smtp_settings(dict(env), config)
    except DigestError as exc:
        return [Finding("fail", "mail", str(exc), f"메일 서버 설정이 잘못되었습니다: {exc}")]
    where = f"{s.host}:{s.port}"
    try:
        extensions = _greet(s)
    except (OSError, smtplib.SMTPException) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return [Finding("fail", "mail", f"the mail relay {where} did not answer as DIGEST_SMTP_SECURITY="
                        f"{s.security} expects ({detail}); check DIGEST_SMTP_HOST, _PORT and _SECURITY",
                        f"메일 서버 {where}가 DIGEST_SMTP_SECURITY={s.security} 설정대로 응답하지 않습니다 "
                        f"({detail}). DIGEST_SMTP_HOST, _PORT, _SECURITY를 확인해 주세요.")]
    if isinstance(extensions, Finding):
        return [extensions]
    found = []
    if s.security == "none" and s.host not in LOOPBACK_HOSTS:
        found.append(Finding("warn", "mail", f"DIGEST_SMTP_SECURITY=none to {where}: confirmation links cross the "
                             "network unencrypted; use starttls or tls", f"DIGEST_SMTP_SECURITY=none이라 확인 "
                             f"링크가 {where}까지 암호화 없이 갑니다. starttls나 tls를 쓰세요."))
    if s.username and "auth" not in extensions:
        found.append(Finding("warn", "mail", f"{where} offers no AUTH, yet DIGEST_SMTP_USERNAME is set: the "
                             "login would fail", f"{where}가 AUTH를 제공하지 않는데 DIGEST_SMTP_USERNAME이 "
                             "있습니다. 로그인이 실패합니다."))
    found.append(Finding("ok", "mail", f"{where} answered EHLO ({s.security}); no login tried, no mail sent",
                         f"{where}가 EHLO에 응답했습니다 ({s.security}); 로그인하지 않았고 메일도 보내지 않았습니다"))
    return found


def _greet(s) -> set[str] | Finding:
    """The relay's EHLO extensions, after STARTTLS when configured; a Finding when it cannot do TLS."""
    context = ssl.create_default_context()
    smtp = (smtplib.SMTP_SSL(s.host, s.port, timeout=min(s.timeout, 10), context=context) if s.security == "tls"
            else smtplib.SMTP(s.host, s.port, timeout=min(s.timeout, 10)))
    try:
        smtp.ehlo()
        if s.security == "starttls":
            if not smtp.has_extn("starttls"):
                return Finding("fail", "mail", f"{s.host}:{s.port} offers no STARTTLS: mail would cross the network "
                               "unencrypted; use its TLS port (DIGEST_SMTP_SECURITY=tls, usually 465)",
                               f"{s.host}:{s.port}가 STARTTLS를 제공하지 않아 메일이 암호화 없이 갑니다. TLS 포트를 "
                               "쓰세요 (DIGEST_SMTP_SECURITY=tls, 보통 465).")
            smtp.starttls(context=context)
            smtp.ehlo()
        return set(smtp.esmtp_features)
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()  # the relay hung up first: nothing left to say to it

