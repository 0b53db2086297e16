"""`digest doctor`: the sending domain against the bulk-sender rules (Gmail, Yahoo, Outlook), before
the first send, in English and Korean, each problem with the record to publish.

    examine(env, config)    every finding: settings, SPF, DKIM, DMARC, the relay's TLS
    doctor_lines(findings)  what `digest doctor` prints; it exits 0 only without a failure

    SPF     the envelope sender's domain (DIGEST_SMTP_ENVELOPE_FROM, else the From address's) has one
            v=spf1 record, and it passes every address of the relay (DIGEST_SMTP_HOST): evaluated as
            a receiver would (RFC 7208: ip4, ip6, a, mx, include, exists, redirect; at most 10 DNS
            lookups, includes at most 10 deep); macros and ptr are not evaluated. A provider that
            sends from other addresses than its relay's: DIGEST_DOCTOR_SPF_INCLUDE=<its SPF domain>,
            and the record must reach include:<that domain>
    DKIM    <selector>._domainkey.<domain> holds the public half of the configured key (the key
            bytes are compared, not the text)
    DMARC   _dmarc.<From domain> (or its organizational domain's) holds v=DMARC1 with a policy, and
            the DKIM d= or the SPF domain aligns with the From domain (adkim/aspf relaxed or strict);
            p=none is noted: it is allowed, but asks receivers for nothing
    TLS     the relay answers EHLO and offers STARTTLS (or speaks TLS at once on its port) with a
            certificate valid for its name; connect and EHLO only: no login, no mail

DNS questions go to the nameserver of DIGEST_DNS_SERVER (host or host:port, an IP address; [doctor]
dns_server in the config file), else to the system's, each given DIGEST_DNS_TIMEOUT seconds (5).
The organizational domain (relaxed alignment) comes from Debian's public suffix list (package
publicsuffix) where installed, else from the last two labels (three under a few known second-level
suffixes such as co.kr).
"""

from __future__ import annotations

import functools
import ipaddress
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from digest.diagnostics import Finding, finding_lines
from digest.errors import DigestError, MailSettingsError
from digest.mail.message import PLACEHOLDER_DOMAIN, DkimSigner, mail_settings, setting

TOPICS = {"settings": "설정", "spf": "SPF", "dkim": "DKIM", "dmarc": "DMARC", "tls": "TLS"}
DNS_TIMEOUT = 5.0  # seconds for one question, retries included
SPF_LOOKUPS = 10  # RFC 7208 section 4.6.4: DNS-querying terms in one evaluation
SPF_DEPTH = 10  # include:/redirect= nesting we follow before calling it a loop
PSL_FILE = Path("/usr/share/publicsuffix/public_suffix_list.dat")
_SECOND_LEVEL = frozenset({"co.kr", "or.kr", "ne.kr", "ac.kr", "go.kr", "re.kr", "pe.kr", "co.uk", "org.uk",
                           "ac.uk", "com.au", "net.au", "org.au", "co.jp", "ne.jp", "or.jp", "com.cn", "com.br",
                           "co.nz", "com.tw", "com.hk", "com.sg"})


def doctor_lines(findings: list[Finding]) -> list[str]:
    return finding_lines(findings, TOPICS, before=("the first send", "첫 발송 전에"),
                         ready=("ready to send", "보낼 준비가 되었습니다"))


# --- DNS ---------------------------------------------------------------------------------------

class DnsTrouble(Exception):
    """No answer we can judge by (timeout, SERVFAIL, refused): not the same as 'no record'."""


def resolver(nameserver: str = "", timeout: float = DNS_TIMEOUT):
    """A dnspython resolver asking ``nameserver`` ('host', 'host:port', '[v6]:port'; '' = the system's)."""
    import dns.resolver

    if not nameserver:
        found = dns.resolver.Resolver()
    else:
        host, port = nameserver, 53
        if nameserver.startswith("["):
            host, _, rest = nameserver[1:].partition("]")
            port = rest.removeprefix(":") or 53
        elif nameserver.count(":") == 1:
            host, port = nameserver.split(":")
        try:
            ipaddress.ip_address(host)
            port = int(port)
        except ValueError:
            raise MailSettingsError(f"DIGEST_DNS_SERVER is '{nameserver}'; give an IP address, with :port if "
                                    "not 53 (e.g. 127.0.0.1:5353)") from None
        found = dns.resolver.Resolver(configure=False)
        found.nameservers, found.port = [host], port
    found.lifetime = found.timeout = timeout
    return found


def _timeout(value) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1
    if not 0 < seconds <= 60:
        raise MailSettingsError(f"DIGEST_DNS_TIMEOUT is '{value}'; give seconds, more than 0 and at most 60")
    return seconds


def _answer(res, name: str, kind: str) -> list:
    """The records of type ``kind`` at ``name``; [] when the name or the type has none."""
    import dns.exception
    import dns.resolver

    try:
        return list(res.resolve(name, kind, search=False))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DnsTrouble(f"{name} {kind}: {exc}") from None


def txt_records(res, name: str) -> list[str]:
    """Each TXT record at ``name`` as one string (its character-strings joined, as SPF, DKIM and DMARC read them)."""
    return [b"".join(r.strings).decode("utf-8", "replace") for r in _answer(res, name, "TXT")]


def addresses(res, name: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    return [r.address for kind in ("A", "AAAA") for r in _answer(res, name, kind)]


@functools.cache
def _suffixes() -> tuple[frozenset, frozenset, frozenset]:
    """The public suffix list's (rules, wildcard parents, exceptions); empty where it is not installed."""
    rules, wildcards, exceptions = set(), set(), set()
    try:
        text = PSL_FILE.read_text(encoding="utf-8")
    except OSError:
        return frozenset(), frozenset(), frozenset()
    for line in text.splitlines():
        rule = line.strip().lower()
        if not rule or rule.startswith("//"):
            continue
        if rule.startswith("!"):
            exceptions.add(rule[1:])
        elif rule.startswith("*."):
            wildcards.add(rule[2:])
        else:
            rules.add(rule)
    return frozenset(rules), frozenset(wildcards), frozenset(exceptions)


def organizational_domain(domain: str) -> str:
    """The registered domain under the public suffix: mail.example.co.kr → example.co.kr."""
    labels = domain.lower().rstrip(".").split(".")
    rules, wildcards, exceptions = _suffixes()
    suffix = 1
    if rules:
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if candidate in exceptions:
                suffix = len(labels) - i - 1
                break
            if candidate in rules or ".".join(labels[i + 1:]) in wildcards and i + 1 < len(labels):
                suffix = len(labels) - i
                break
    elif ".".join(labels[-2:]) in _SECOND_LEVEL:
        suffix = 2
    return ".".join(labels[-(suffix + 1):]) if len(labels) > suffix else ".".join(labels)


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment: strict ('s') the same name, relaxed ('r') the same organizational domain."""
    a, b = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


def quoted(name: str, kind: str, value: str) -> str:
    return f'{name} {kind} "{value}"'


# --- settings ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sender:
    from_domain: str
    envelope_domain: str  # SPF is checked for the envelope sender (MAIL FROM), the bounce address
    signer: DkimSigner | None
    smtp: object | None  # SmtpSettings, or None when the relay is not configured
    spf_include: str = ""  # DIGEST_DOCTOR_SPF_INCLUDE: the provider's SPF domain, when it sends from other
    #                        addresses than its relay's (e.g. amazonses.com)


def examine(env: Mapping, config: dict, nameserver: str | None = None) -> list[Finding]:
    """Every finding about sending as the settings say; ``nameserver`` overrides DIGEST_DNS_SERVER."""
    from digest.mail.deliver import smtp_settings

    findings: list[Finding] = []
    try:
        mail = mail_settings(dict(env), config)
        res = resolver(nameserver if nameserver is not None else setting(env, config, "doctor", "dns_server", ""),
                       _timeout(setting(env, config, "doctor", "dns_timeout", DNS_TIMEOUT)))
    except DigestError as exc:
        return [Finding("fail", "settings", str(exc), f"설정이 잘못되었습니다: {exc}")]
    if mail.domain == PLACEHOLDER_DOMAIN:
        return [Finding("fail", "settings", f"DIGEST_FROM is the placeholder ({mail.sender}): set the real sender "
                        "first; its domain is the one checked", f"DIGEST_FROM이 예시 값입니다 ({mail.sender}). "
                        "실제 보내는 주소를 먼저 설정해 주세요. 그 도메인을 검사합니다.")]
    try:
        smtp = smtp_settings(dict(env), config)
    except DigestError as exc:
        smtp = None
        findings.append(Finding("fail", "settings", f"{exc} (SPF coverage and TLS need the relay)",
                                f"메일 서버 설정이 잘못되었습니다: {exc} (SPF와 TLS 검사에 필요)"))
    envelope = (smtp.envelope_from if smtp and smtp.envelope_from else mail.sender).rpartition("@")[2]
    include = str(setting(env, config, "doctor", "spf_include", "")).strip().removeprefix("include:")
    sender = Sender(mail.domain.lower(), envelope.lower(), mail.signer, smtp, include)
    relay = f"{smtp.host}:{smtp.port} ({smtp.security})" if smtp else "none"
    dkim = f"d={mail.signer.domain} s={mail.signer.selector}" if mail.signer else "none"
    findings.append(Finding("ok", "settings", f"From domain {sender.from_domain}, envelope (SPF) domain "
                            f"{sender.envelope_domain}, DKIM {dkim}, relay {relay}",
                            f"From 도메인 {sender.from_domain}, 봉투(SPF) 도메인 {sender.envelope_domain}, "
                            f"DKIM {dkim}, 메일 서버 {relay}"))
    spf_passes = False
    if smtp is not None:
        spf = _spf(res, sender)
        spf_passes = spf[-1].level == "ok"
        findings += spf
    dkim_findings = _dkim(res, sender)
    findings += dkim_findings
    findings += _dmarc(res, sender, dkim_ok=all(f.level != "fail" for f in dkim_findings), spf_ok=spf_passes)
    if smtp is not None:
        findings.append(_tls(smtp))
    return findings


# --- SPF -----------------------------------------------------------------------------------------

class _SpfError(Exception):
    def __init__(self, result: str, detail: str):
        super().__init__(detail)
        self.result, self.detail = result, detail


QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def spf_records(res, domain: str) -> list[str]:
    return [t.strip() for t in txt_records(res, domain)
            if t.strip().lower() == "v=spf1" or t.strip().lower().startswith("v=spf1 ")]


class SpfCheck:
    """One check_host() evaluation for one address (RFC 7208 section 4), lookups counted across includes."""

    def __init__(self, res, ip: str):
        self.res, self.ip, self.lookups = res, ipaddress.ip_address(ip), 0
        self.inner = ""  # what matched inside the include that just matched

    def run(self, domain: str) -> tuple[str, str]:
        """(result, what decided it): pass, fail, softfail, neutral, none, permerror or temperror."""
        try:
            return self._check(domain, 0)
        except _SpfError as exc:
            return exc.result, exc.detail
        except DnsTrouble as exc:
            return "temperror", str(exc)

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > SPF_LOOKUPS:
            raise _SpfError("permerror", f"more than {SPF_LOOKUPS} DNS lookups (include, a, mx, exists, ptr, "
                                         "redirect): receivers stop there (RFC 7208 section 4.6.4)")

    def _check(self, domain: str, depth: int) -> tuple[str, str]:
        if depth > SPF_DEPTH:
            raise _SpfError("permerror", f"include:/redirect= nested deeper than {SPF_DEPTH} (a loop?) at {domain}")
        records = spf_records(self.res, domain)
        if not records:
            return "none", f"no v=spf1 record at {domain}"
        if len(records) > 1:
            raise _SpfError("permerror", f"{len(records)} v=spf1 records at {domain}: receivers treat that as an "
                                         "error (RFC 7208 section 4.5); merge them into one")
        redirect = None
        for term in records[0].split()[1:]:
            name, sep, value = term.partition("=")
            if sep and ":" not in name and "/" not in name:  # a modifier
                if name.lower() == "redirect":
                    redirect = value
                continue
            qualifier = term[0] if term[0] in QUALIFIERS else "+"
            self.inner = ""
            if self._matches(term.lstrip("+-~?"), domain, depth):
                return QUALIFIERS[qualifier], f"{term} at {domain}" + (f" → {self.inner}" if self.inner else "")
        if redirect:
            self._count()
            result, why = self._check(redirect, depth + 1)
            if result == "none":
                raise _SpfError("permerror", f"redirect={redirect} at {domain} names a domain without SPF")
            return result, why
        return "neutral", f"nothing in {domain}'s record matched"

    def _matches(self, mechanism: str, domain: str, depth: int) -> bool:
        name, _, arg = mechanism.partition(":")
        cidr = ""
        if "/" in (arg or name):
            if arg:
                arg, _, cidr = arg.partition("/")
            else:
                name, _, cidr = name.partition("/")
        name = name.lower()
        if "%" in arg:
            raise _SpfError("permerror", f"'{mechanism}' uses SPF macros, which digest doctor does not evaluate")
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(arg + (f"/{cidr}" if cidr else ""), strict=False)
            except ValueError:
                raise _SpfError("permerror", f"'{mechanism}' at {domain} is not an address or network") from None
            return network.version == self.ip.version and self.ip in network
        if name in ("a", "mx"):
            self._count()
            target = arg or domain
            hosts = [target] if name == "a" else [str(r.exchange).rstrip(".") for r in
                                                  _answer(self.res, target, "MX")][:10]
            return any(self._in(address, cidr) for host in hosts for address in addresses(self.res, host))
        if name == "include":
            self._count()
            result, why = self._check(arg, depth + 1)
            if result == "none":
                raise _SpfError("permerror", f"include:{arg} at {domain} names a domain without SPF")
            if result in ("permerror", "temperror"):
                raise _SpfError(result, why)
            self.inner = why if result == "pass" else ""
            return result == "pass"
        if name == "exists":
            self._count()
            return bool(_answer(self.res, arg, "A"))
        if name == "ptr":
            self._count()  # deprecated (RFC 7208 section 5.5) and not evaluated: no match
            return False
        raise _SpfError("permerror", f"'{mechanism}' at {domain} is no SPF mechanism")

    def _in(self, address: str, cidr: str) -> bool:
        ip = ipaddress.ip_address(address)
        if ip.version != self.ip.version:
            return False
        v4, _, v6 = cidr.partition("//")
        prefix = (v4 if ip.version == 4 else v6) or ("32" if ip.version == 4 else "128")
        return self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False)


def _mechanisms(ips: list[str]) -> list[str]:
    return [f"ip{ipaddress.ip_address(ip).version}:{ip}" for ip in ips]


def spf_with(record: str | None, mechanisms: list[str]) -> str:
    """``record`` with ``mechanisms`` (those it lacks) before its 'all' (or its modifiers); a new one when None."""
    if not record:
        return " ".join(["v=spf1", *mechanisms, "~all"])
    terms = record.split()[1:]
    at = next((i for i, t in enumerate(terms) if t.lstrip("+-~?").lower() == "all" or "=" in t.split(":")[0]),
              len(terms))
    added = [m for m in mechanisms if m not in terms]
    return " ".join(["v=spf1", *terms[:at], *added, *terms[at:]])


def spf_includes(res, domain: str) -> set[str]:
    """Every domain that ``domain``'s SPF reaches through include: and redirect= (lower-cased), with the
    lookups counted as a receiver counts them: _SpfError past 10, or deeper than 10."""
    counter = SpfCheck(res, "0.0.0.0")

    def walk(name: str, depth: int) -> set[str]:
        if depth > SPF_DEPTH:
            raise _SpfError("permerror", f"include:/redirect= nested deeper than {SPF_DEPTH} (a loop?) at {name}")
        records = spf_records(res, name)
        if len(records) != 1:
            raise _SpfError("permerror", f"{len(records)} v=spf1 records at {name}, where an include leads")
        found = set()
        for term in records[0].split()[1:]:
            mechanism, sep, value = term.lstrip("+-~?").partition(":")
            key, eq, target = term.partition("=")
            if eq and key.lower() == "redirect":
                mechanism, value = "redirect", target
            mechanism = mechanism.split("/")[0].lower()
            if mechanism in ("include", "redirect", "a", "mx", "ptr", "exists"):
                counter._count()
            if mechanism in ("include", "redirect") and value:
                found |= {value.lower().rstrip(".")} | walk(value, depth + 1)
        return found

    return walk(domain, 0)


def _spf(res, sender: Sender) -> list[Finding]:
    domain, host = sender.envelope_domain, sender.smtp.host
    try:
        ips = [] if sender.spf_include else addresses(res, host)
        records = spf_records(res, domain)
    except DnsTrouble as exc:
        return [Finding("fail", "spf", f"DNS did not answer: {exc}", f"DNS가 응답하지 않았습니다: {exc}")]
    if not ips and not sender.spf_include:
        return [Finding("fail", "spf", f"the relay {host} has no address in DNS (A/AAAA): receivers cannot match "
                        "it against SPF; check DIGEST_SMTP_HOST", f"메일 서버 {host}의 주소(A/AAAA)가 DNS에 없어 "
                        "SPF와 맞춰 볼 수 없습니다. DIGEST_SMTP_HOST를 확인해 주세요.")]
    needed = [f"include:{sender.spf_include}"] if sender.spf_include else _mechanisms(ips)
    where = f"include:{sender.spf_include}" if sender.spf_include else ", ".join(ips)
    if not records:
        return [Finding("fail", "spf", f"{domain} has no SPF record (TXT v=spf1): receivers cannot tell mail from "
                        f"the relay {host} ({where}) from forgeries; publish one (or your mail provider's "
                        "include:, from its documentation)", f"{domain}에 SPF 레코드(TXT v=spf1)가 없어 메일 서버 "
                        f"{host}({where})가 보낸 메일과 위조 메일을 구별할 수 없습니다. 다음을 게시하세요 (메일 "
                        "서비스가 알려 주는 include:도 됩니다).", quoted(domain, "TXT", spf_with(None, needed)))]
    if len(records) > 1:
        merged = " ".join(dict.fromkeys(t for r in records for t in r.split()[1:]
                                        if t.lstrip("+-~?").lower() != "all"))
        return [Finding("fail", "spf", f"{domain} has {len(records)} SPF records: receivers treat that as an error "
                        "(permerror) and SPF fails for all of them; publish one record in their place",
                        f"{domain}에 SPF 레코드가 {len(records)}개 있어 수신 서버는 오류로 보고 SPF가 통과하지 "
                        "않습니다. 하나로 합쳐 게시하세요.",
                        quoted(domain, "TXT", spf_with(f"v=spf1 {merged} ~all", needed)))]
    if sender.spf_include:
        return [_spf_include(res, domain, sender.spf_include, records[0])]
    results = {ip: SpfCheck(res, ip).run(domain) for ip in ips}
    missing = [ip for ip, (result, _) in results.items() if result != "pass"]
    errors = {result: why for result, why in results.values() if result in ("permerror", "temperror")}
    if "temperror" in errors:
        return [_spf_dns(domain, errors["temperror"])]
    if "permerror" in errors:
        return [_spf_broken(domain, errors["permerror"], needed)]
    if missing:
        said = "; ".join(f"{ip}: {results[ip][0]} ({results[ip][1]})" for ip in missing)
        return [Finding("fail", "spf", f"{domain}'s SPF record does not cover the relay {host} ({said}): receivers "
                        "see its mail as unauthorized; publish the record with the relay's addresses (or, if your "
                        "provider sends from other addresses than its relay's, set DIGEST_DOCTOR_SPF_INCLUDE to "
                        "the domain its documentation names)", f"{domain}의 SPF 레코드가 메일 서버 {host}를 포함하지 "
                        f"않습니다 ({said}). 수신 서버는 그 메일을 허가되지 않은 것으로 봅니다. 메일 서버 주소를 넣은 "
                        "레코드를 게시하세요 (메일 서비스가 다른 주소에서 보낸다면 그 문서에 나온 도메인을 "
                        "DIGEST_DOCTOR_SPF_INCLUDE로 설정하세요).",
                        quoted(domain, "TXT", spf_with(records[0], _mechanisms(missing))))]
    decided = "; ".join(sorted({why for _, why in results.values()}))
    return [Finding("ok", "spf", f"{domain}'s SPF passes the relay {host} ({where}): {decided}",
                    f"{domain}의 SPF가 메일 서버 {host}({where})를 허용합니다: {decided}")]


def _spf_dns(domain: str, why: str) -> Finding:
    return Finding("fail", "spf", f"DNS did not answer while evaluating {domain}'s SPF: {why}",
                   f"{domain}의 SPF를 확인하는 중에 DNS가 응답하지 않았습니다: {why}")


def _spf_broken(domain: str, why: str, needed: list[str]) -> Finding:
    return Finding("fail", "spf", f"{domain}'s SPF record is broken for receivers (permerror): {why}; publish a "
                   "record without it (add back what else sends your mail, as ip4:/ip6:, within "
                   f"{SPF_LOOKUPS} lookups)", f"{domain}의 SPF 레코드를 수신 서버가 해석할 수 없습니다 "
                   f"(permerror): {why}. 문제가 없는 레코드로 바꿔 게시하세요 (다른 발송 서버는 ip4:/ip6:로, "
                   f"조회 {SPF_LOOKUPS}번 이내로).", quoted(domain, "TXT", spf_with(None, needed)))


def _spf_include(res, domain: str, include: str, record: str) -> Finding:
    """DIGEST_DOCTOR_SPF_INCLUDE: the provider sends from the addresses its own SPF names (not its relay's)."""
    try:
        reached = spf_includes(res, domain)
    except _SpfError as exc:
        return _spf_broken(domain, exc.detail, [f"include:{include}"])
    except DnsTrouble as exc:
        return _spf_dns(domain, str(exc))
    if include.lower().rstrip(".") in reached:
        return Finding("ok", "spf", f"{domain}'s SPF includes {include} (DIGEST_DOCTOR_SPF_INCLUDE, the provider's "
                       "sending addresses)", f"{domain}의 SPF가 {include}를 포함합니다 (DIGEST_DOCTOR_SPF_INCLUDE, "
                       "메일 서비스의 발송 주소)")
    return Finding("fail", "spf", f"{domain}'s SPF record does not include {include} (DIGEST_DOCTOR_SPF_INCLUDE): "
                   "receivers see your provider's mail as unauthorized", f"{domain}의 SPF 레코드가 {include}를 "
                   "포함하지 않아 (DIGEST_DOCTOR_SPF_INCLUDE) 수신 서버는 메일 서비스가 보낸 메일을 허가되지 않은 "
                   "것으로 봅니다.", quoted(domain, "TXT", spf_with(record, [f"include:{include}"])))


# --- DKIM ----------------------------------------------------------------------------------------

def tags(record: str) -> dict[str, str]:
    """A DKIM or DMARC tag list: 'v=DKIM1; k=rsa; p=...' → {'v': 'DKIM1', ...} (names lower-cased)."""
    found = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            found.setdefault(name.strip().lower(), "".join(value.split()) if name.strip().lower() == "p"
                             else value.strip())
    return found


def _public_der(signer: DkimSigner) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return signer.key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)


def _dkim(res, sender: Sender) -> list[Finding]:
    import base64
    import binascii

    signer = sender.signer
    if signer is None:
        return [Finding("fail", "dkim", "no DKIM key configured: the bulk-sender rules require DKIM; make one "
                        "(`openssl genrsa -out dkim.pem 2048`), set DIGEST_DKIM_KEY_FILE=dkim.pem (or the PEM in "
                        "DIGEST_DKIM_KEY) and run digest doctor again for the record to publish",
                        "DKIM 키가 설정되지 않았습니다. 대량 발송 규칙은 DKIM을 요구합니다. 키를 만들고 "
                        "(`openssl genrsa -out dkim.pem 2048`) DIGEST_DKIM_KEY_FILE=dkim.pem(또는 DIGEST_DKIM_KEY에 "
                        "PEM)을 설정한 뒤 digest doctor를 다시 실행하면 게시할 레코드를 알려 줍니다.")]
    name = f"{signer.selector}._domainkey.{signer.domain}"
    record = quoted(name, "TXT", signer.public_record())
    try:
        found = [t for t in (tags(r) for r in txt_records(res, name)) if "p" in t]
    except DnsTrouble as exc:
        return [Finding("fail", "dkim", f"DNS did not answer: {exc}", f"DNS가 응답하지 않았습니다: {exc}")]
    if not found:
        return [Finding("fail", "dkim", f"no DKIM key at {name} (TXT): receivers cannot verify the signature; "
                        "publish the configured key's public half", f"{name}에 DKIM 키(TXT)가 없어 수신 서버가 "
                        "서명을 확인할 수 없습니다. 설정된 키의 공개 키를 게시하세요.", record)]
    ours = _public_der(signer)
    for published in found:
        try:
            theirs = base64.b64decode(published["p"], validate=True)
        except (binascii.Error, ValueError):
            theirs = b""
        if theirs == ours and published.get("k", "rsa").lower() == "rsa":
            if signer.key.key_size < 2048:
                return [Finding("warn", "dkim", f"{name} holds the configured key, but it has {signer.key.key_size} "
                                "bits: Gmail and Yahoo ask for 2048; make a new one (`openssl genrsa -out dkim.pem "
                                "2048`) under a new selector, publish it, then switch DIGEST_DKIM_SELECTOR",
                                f"{name}에 설정된 키가 있지만 {signer.key.key_size}비트입니다. Gmail과 Yahoo는 2048"
                                "비트를 요구합니다. 새 선택자로 새 키를 만들어 게시한 뒤 DIGEST_DKIM_SELECTOR를 "
                                "바꾸세요.")]
            return [Finding("ok", "dkim", f"{name} holds the public half of the configured key "
                            f"({signer.key.key_size}-bit RSA)", f"{name}에 설정된 키의 공개 키가 있습니다 "
                            f"(RSA {signer.key.key_size}비트)")]
    revoked = all(not t["p"] for t in found)
    english = ("is revoked (an empty p=)" if revoked else "is another key than the configured one (DIGEST_DKIM_KEY "
               "or the key file): receivers would reject every signature")
    korean = ("폐기되었습니다 (빈 p=)" if revoked
              else "설정된 키(DIGEST_DKIM_KEY 또는 키 파일)와 다른 키라서 모든 서명이 실패합니다")
    return [Finding("fail", "dkim", f"the DKIM key at {name} {english}; publish the configured key's public half "
                    "(or configure the private key that matches)", f"{name}의 DKIM 키가 {korean}. 설정된 키의 "
                    "공개 키를 게시하세요 (또는 맞는 개인 키를 설정하세요).", record)]


# --- DMARC ---------------------------------------------------------------------------------------

def _dmarc_record(res, domain: str) -> tuple[str, dict[str, str], str] | None:
    """(where, tags, text) of the DMARC record that applies to ``domain``: its own, else its
    organizational domain's (RFC 7489 section 6.6.3, with sp= for subdomains)."""
    org = organizational_domain(domain)
    for where in dict.fromkeys((domain, org)):
        for text in txt_records(res, f"_dmarc.{where}"):
            if text.strip().lower().replace(" ", "").startswith("v=dmarc1"):
                found = tags(text)
                if where != domain and "sp" in found:
                    found["p"] = found["sp"]
                return f"_dmarc.{where}", found, text.strip()
    return None


def dmarc_with(text: str, **changes: str) -> str:
    """``text`` (a DMARC record) with tags set to ``changes``, in place or appended."""
    parts = [p.strip() for p in text.split(";") if p.strip()]
    for name, value in changes.items():
        at = next((i for i, p in enumerate(parts) if p.partition("=")[0].strip().lower() == name), None)
        if at is None:
            parts.append(f"{name}={value}")
        else:
            parts[at] = f"{name}={value}"
    return "; ".join(parts)


def _dmarc(res, sender: Sender, dkim_ok: bool, spf_ok: bool) -> list[Finding]:
    domain = sender.from_domain
    starter = quoted(f"_dmarc.{domain}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}")
    try:
        found = _dmarc_record(res, domain)
    except DnsTrouble as exc:
        return [Finding("fail", "dmarc", f"DNS did not answer: {exc}", f"DNS가 응답하지 않았습니다: {exc}")]
    if found is None:
        return [Finding("fail", "dmarc", f"no DMARC record at _dmarc.{domain} (TXT v=DMARC1): Gmail and Yahoo "
                        "require one of bulk senders; start with p=none (rua: a mailbox that reads the reports, "
                        "then move to p=quarantine)", f"_dmarc.{domain}에 DMARC 레코드(TXT v=DMARC1)가 없습니다. "
                        "Gmail과 Yahoo는 대량 발송자에게 이를 요구합니다. p=none으로 시작하세요 (rua: 보고서를 "
                        "받을 메일함; 이후 p=quarantine으로).", starter)]
    where, values, text = found
    findings = []
    policy = values.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return [Finding("fail", "dmarc", f"{where} has no valid policy (p={policy or 'missing'}): receivers ignore "
                        "the record", f"{where}에 올바른 정책(p=)이 없어 수신 서버가 레코드를 무시합니다 "
                        f"(p={policy or '없음'}).", quoted(where, "TXT", dmarc_with(text, p="none")))]
    if policy == "none":
        findings.append(Finding("warn", "dmarc", f"{where} has p=none: allowed, but receivers are asked to do "
                                "nothing with forgeries; once the reports show your mail passing, move to "
                                "p=quarantine", f"{where}의 정책이 p=none입니다. 허용되지만 위조 메일에 대해 "
                                "아무것도 요청하지 않습니다. 보고서에서 메일이 통과하는 것을 확인하면 p=quarantine"
                                "으로 올리세요.", quoted(where, "TXT", dmarc_with(text, p="quarantine"))))
    findings += _alignment(sender, where, values, text, dkim_ok, spf_ok)
    return findings


def _alignment(sender: Sender, where: str, values: dict, text: str, dkim_ok: bool, spf_ok: bool) -> list[Finding]:
    domain = sender.from_domain
    adkim, aspf = values.get("adkim", "r").lower()[:1], values.get("aspf", "r").lower()[:1]
    dkim_domain = sender.signer.domain.lower() if sender.signer else ""
    dkim_aligned = bool(dkim_domain) and aligned(dkim_domain, domain, adkim)
    spf_aligned = aligned(sender.envelope_domain, domain, aspf)
    modes = {"s": "strict", "r": "relaxed"}
    said = (f"DKIM d={dkim_domain or '(none)'} {'aligns' if dkim_aligned else 'does not align'} ({modes[adkim]}), "
            f"SPF {sender.envelope_domain} {'aligns' if spf_aligned else 'does not align'} ({modes[aspf]})")
    korean = (f"DKIM d={dkim_domain or '(없음)'} {'정렬됨' if dkim_aligned else '정렬 안 됨'} ({modes[adkim]}), "
              f"SPF {sender.envelope_domain} {'정렬됨' if spf_aligned else '정렬 안 됨'} ({modes[aspf]})")
    if (dkim_aligned and dkim_ok) or (spf_aligned and spf_ok):
        return [Finding("ok", "dmarc", f"{where}: {said} with From {domain}",
                        f"{where}: From {domain}에 대해 {korean}")]
    if not dkim_aligned and not spf_aligned:
        loosened = {}
        if adkim == "s" and dkim_domain and aligned(dkim_domain, domain, "r"):
            loosened["adkim"] = "r"
        if aspf == "s" and aligned(sender.envelope_domain, domain, "r"):
            loosened["aspf"] = "r"
        if loosened:
            record = quoted(where, "TXT", dmarc_with(text, **loosened))
            fix = "relax the alignment (a subdomain of the From domain then aligns)"
            fix_ko = "정렬을 relaxed로 바꾸세요"
        elif sender.signer:
            record = quoted(f"{sender.signer.selector}._domainkey.{domain}", "TXT", sender.signer.public_record())
            fix = f"sign as the From domain: set DIGEST_DKIM_DOMAIN={domain} and publish the key there"
            fix_ko = f"From 도메인으로 서명하세요: DIGEST_DKIM_DOMAIN={domain}로 설정하고 키를 그곳에 게시"
        else:
            record = f"DIGEST_SMTP_ENVELOPE_FROM=bounces@{domain}"
            fix, fix_ko = "send from a bounce address in the From domain", "From 도메인의 반송 주소를 쓰세요"
        return [Finding("fail", "dmarc", f"neither DKIM nor SPF aligns with From {domain} ({said}): DMARC fails "
                        f"for every message; {fix}", f"DKIM도 SPF도 From {domain}과 정렬되지 않아 ({korean}) "
                        f"모든 메일이 DMARC를 통과하지 못합니다. {fix_ko}.", record)]
    return [Finding("fail", "dmarc", f"{where}: {said}, but no aligned one passes (see above): DMARC fails "
                    "until one does", f"{where}: {korean}. 그러나 정렬된 쪽이 통과하지 못해 (위 참고) "
                    "DMARC가 실패합니다.")]


# --- TLS -----------------------------------------------------------------------------------------

def _tls(s) -> Finding:
    """Connect, EHLO, STARTTLS (or TLS at once, DIGEST_SMTP_SECURITY=tls) with the certificate checked, QUIT."""
    where = f"{s.host}:{s.port}"
    context = ssl.create_default_context()
    timeout = min(s.timeout, 10)
    try:
        if s.security == "tls":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=timeout)
        try:
            smtp.ehlo()
            if s.security != "tls":
                if not smtp.has_extn("starttls"):
                    return Finding("fail", "tls", f"{where} offers no STARTTLS: mail and its links would cross the "
                                   "network unencrypted, and Gmail marks such mail; use the relay's TLS port",
                                   f"{where}가 STARTTLS를 제공하지 않아 메일이 암호화 없이 전달되고 Gmail은 이를 "
                                   "표시합니다. 메일 서버의 TLS 포트를 쓰세요.", "DIGEST_SMTP_SECURITY=tls "
                                   "DIGEST_SMTP_PORT=465")
                smtp.starttls(context=context)
                smtp.ehlo()
            version = smtp.sock.version()
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
    except ssl.SSLCertVerificationError as exc:
        return Finding("fail", "tls", f"{where}'s certificate is not valid for {s.host}: {exc.verify_message}; "
                       "use the name on the relay's certificate in DIGEST_SMTP_HOST",
                       f"{where}의 인증서가 {s.host}에 유효하지 않습니다: {exc.verify_message}. 인증서에 적힌 "
                       "이름을 DIGEST_SMTP_HOST에 쓰세요.")
    except (OSError, smtplib.SMTPException) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return Finding("fail", "tls", f"{where} did not complete EHLO and TLS as DIGEST_SMTP_SECURITY={s.security} "
                       f"expects ({detail}); check DIGEST_SMTP_HOST, _PORT and _SECURITY (tls for a port that "
                       "speaks TLS at once, usually 465)", f"{where}가 DIGEST_SMTP_SECURITY={s.security} 설정대로 "
                       f"EHLO와 TLS를 마치지 못했습니다 ({detail}). DIGEST_SMTP_HOST, _PORT, _SECURITY를 확인해 "
                       "주세요 (바로 TLS로 말하는 포트, 보통 465는 tls).")
    how = "implicit TLS" if s.security == "tls" else "STARTTLS"
    if s.security == "none":
        return Finding("fail", "tls", f"{where} offers STARTTLS ({version}), but DIGEST_SMTP_SECURITY=none sends "
                       "without it", f"{where}가 STARTTLS({version})를 제공하지만 DIGEST_SMTP_SECURITY=none이라 "
                       "암호화 없이 보냅니다.", "DIGEST_SMTP_SECURITY=starttls")
    return Finding("ok", "tls", f"{where} speaks {how} ({version}), certificate valid for {s.host}; EHLO only, no "
                   "login, no mail", f"{where}가 {how}({version})를 지원하고 인증서가 {s.host}에 유효합니다. "
                   "EHLO만 했고 로그인이나 발송은 하지 않았습니다")
