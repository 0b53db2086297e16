"""`digest doctor` against a real DNS server (dnsmasq on loopback, tests/dnskit.py) serving a good
sending domain and broken ones, and real SMTP servers on loopback (aiosmtpd) with and without TLS.

Each broken domain gets a test that the problem is reported (fail, or warn for p=none) and that the
record to publish is the one that fixes it: re-served, the same domain passes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import dnskit
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from smtpkit import running_smtp

from digest.cli import main
from digest.mail.doctor import SpfCheck, doctor_lines, examine, organizational_domain, resolver, spf_with
from digest.mail.message import DkimSigner


def pem(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


KEY = pem(2048)
OTHER_KEY = pem(1024)


def dkim_value(key: bytes, domain: str) -> tuple[str, ...]:
    value = DkimSigner(key, "digest", domain).public_record()
    return tuple(value[i:i + 255] for i in range(0, len(value), 255))  # TXT strings are at most 255 bytes


def dkim_record(domain: str, key: bytes = KEY):
    return ("TXT", f"digest._domainkey.{domain}", dkim_value(key, domain))


GOOD_DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc@{}"


def domain(name: str, spf: str | None = "v=spf1 include:_spf.relay.example -all", key: bytes | None = KEY,
           dmarc: str | None = GOOD_DMARC) -> list:
    records = []
    if spf:
        records.append(("TXT", name, spf))
    if key:
        records.append(dkim_record(name, key))
    if dmarc:
        records.append(("TXT", f"_dmarc.{name}", dmarc.format(name)))
    return records


RECORDS = [
    # the relay's provider: its SPF covers relay.good.example (127.0.0.1, where the test SMTP servers listen)
    ("TXT", "_spf.relay.example", "v=spf1 a:relay.good.example ip4:192.0.2.0/24 -all"),
    ("A", "relay.good.example", "127.0.0.1"),
    ("A", "dual.good.example", "127.0.0.1"), ("AAAA", "dual.good.example", "::1"),
    *domain("good.example"),
    *domain("nospf.example", spf=None),
    *domain("uncovered.example", spf="v=spf1 ip4:192.0.2.1 mx -all"),
    ("MX", "uncovered.example", (10, "mx.uncovered.example")),
    ("A", "mx.uncovered.example", "192.0.2.25"),
    *domain("twospf.example"), ("TXT", "twospf.example", "v=spf1 ip4:192.0.2.7 -all"),
    *domain("lookups.example", spf="v=spf1 " + "a " * 11 + "ip4:127.0.0.1 -all"),
    *domain("loop.example", spf="v=spf1 include:loop.example -all"),
    *domain("badkey.example", key=OTHER_KEY),
    *domain("nokey.example", key=None),
    *domain("nodmarc.example", dmarc=None),
    *domain("pnone.example", dmarc="v=DMARC1; p=none; rua=mailto:dmarc@{}"),
    *domain("misaligned.example"),
    *domain("strict.example", dmarc="v=DMARC1; p=reject; adkim=s; aspf=s"),
    *domain("mail.strict.example"),
    # a provider whose relay is not among its sending addresses (DIGEST_DOCTOR_SPF_INCLUDE)
    ("TXT", "spf.provider.example", "v=spf1 ip4:198.51.100.0/24 -all"),
    ("TXT", "hop.provider.example", "v=spf1 include:spf.provider.example -all"),
    *domain("viaprovider.example", spf="v=spf1 mx include:hop.provider.example -all"),
]


@pytest.fixture(scope="module")
def dns_server():
    try:
        with dnskit.running_dns(RECORDS, zones=("example",)) as where:
            yield where
    except dnskit.DnsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert file, key file)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def server_context(tls_files) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


class Quiet:
    async def handle_DATA(self, server, session, envelope):  # doctor never sends: a DATA would fail the test
        raise AssertionError("digest doctor sent a message")


@pytest.fixture(scope="module")
def starttls_port(tls_files):
    with running_smtp(Quiet(), tls_context=server_context(tls_files)) as (_, port):
        yield port


@pytest.fixture
def trusted(tls_files, monkeypatch):
    """Our self-signed certificate trusted by ssl.create_default_context (OpenSSL reads $SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))


def settings(dns_server, port, sender="digest@good.example", **extra) -> dict:
    return {"DIGEST_FROM": f"ML 읽기 노트 <{sender}>", "DIGEST_DKIM_KEY": KEY.decode(),
            "DIGEST_DKIM_SELECTOR": "digest", "DIGEST_SMTP_HOST": "127.0.0.1", "DIGEST_SMTP_PORT": str(port),
            "DIGEST_SMTP_SECURITY": "starttls",
            "DIGEST_DNS_SERVER": dns_server, **extra}


def by_topic(findings, topic):
    return [f for f in findings if f.topic == topic]


def failures(findings):
    return [f for f in findings if f.level == "fail"]


def only_problem(findings, topic, level="fail"):
    problems = [f for f in findings if f.level != "ok"]
    assert [(f.level, f.topic) for f in problems] == [(level, topic)], doctor_lines(findings)
    return problems[0]


# --- the good domain -----------------------------------------------------------------------------

def test_a_good_domain_passes_every_check(dns_server, starttls_port, trusted):
    findings = examine(settings(dns_server, starttls_port), {})
    assert [(f.level, f.topic) for f in findings] == [
        ("ok", "settings"), ("ok", "spf"), ("ok", "dkim"), ("ok", "dmarc"), ("ok", "tls")], doctor_lines(findings)
    spf, dkim, dmarc, tls = findings[1:]
    assert ("include:_spf.relay.example at good.example → a:relay.good.example at _spf.relay.example"
            in spf.english)
    assert "digest._domainkey.good.example" in dkim.english and "2048" in dkim.korean
    assert "aligns (relaxed)" in dmarc.english
    assert "STARTTLS (TLSv1.3)" in tls.english
    assert doctor_lines(findings)[-1] == "ready to send · 보낼 준비가 되었습니다"


def test_the_cli_exits_0_when_ready_and_1_with_the_record_to_publish(dns_server, starttls_port, trusted,
                                                                     monkeypatch, capsys):
    for name, value in settings(dns_server, starttls_port).items():
        monkeypatch.setenv(name, value)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "ready to send" in out and "DKIM" in out and "설정" in out
    monkeypatch.setenv("DIGEST_FROM", "digest@nodmarc.example")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert '→ _dmarc.nodmarc.example TXT "v=DMARC1; p=none; rua=mailto:dmarc@nodmarc.example"' in out
    assert "1 problem(s) to fix before the first send · 첫 발송 전에 고칠 문제 1개" in out


def test_a_subdomain_sender_uses_the_organizational_domains_dmarc_and_aligns_relaxed(dns_server, starttls_port,
                                                                                     trusted):
    env = settings(dns_server, starttls_port, sender="digest@news.good.example", DIGEST_DKIM_DOMAIN="good.example",
                   DIGEST_SMTP_ENVELOPE_FROM="bounces@good.example")
    findings = examine(env, {})
    assert not failures(findings), doctor_lines(findings)
    assert "_dmarc.good.example" in by_topic(findings, "dmarc")[0].english


# --- SPF -----------------------------------------------------------------------------------------

def test_no_spf_record_is_reported_with_one_that_covers_the_relay(dns_server, starttls_port, trusted):
    problem = only_problem(examine(settings(dns_server, starttls_port, sender="digest@nospf.example"), {}), "spf")
    assert "nospf.example has no SPF record" in problem.english and "SPF 레코드(TXT v=spf1)가 없어" in problem.korean
    assert problem.record == 'nospf.example TXT "v=spf1 ip4:127.0.0.1 ~all"'


def test_spf_that_does_not_cover_the_relay_gets_the_relay_added_before_all(dns_server, starttls_port, trusted):
    problem = only_problem(examine(settings(dns_server, starttls_port, sender="digest@uncovered.example"), {}), "spf")
    assert "does not cover the relay 127.0.0.1" in problem.english
    assert "127.0.0.1: fail (-all at uncovered.example)" in problem.english  # the mx (192.0.2.25) did not match
    assert problem.record == 'uncovered.example TXT "v=spf1 ip4:192.0.2.1 mx ip4:127.0.0.1 -all"'


def test_every_address_of_the_relay_must_pass_ipv6_too(dns_server, starttls_port):
    env = settings(dns_server, starttls_port, DIGEST_SMTP_HOST="dual.good.example")  # A 127.0.0.1, AAAA ::1
    (spf,) = by_topic(examine(env, {}), "spf")
    assert spf.level == "fail"
    assert "::1: fail (-all at good.example)" in spf.english and "127.0.0.1:" not in spf.english
    assert spf.record == 'good.example TXT "v=spf1 include:_spf.relay.example ip6:::1 -all"'


def test_an_unanswering_nameserver_is_reported_not_raised(starttls_port, trusted):
    from smtpkit import free_port

    env = settings(f"127.0.0.1:{free_port()}", starttls_port, DIGEST_DNS_TIMEOUT="0.5")  # nothing listens there
    findings = examine(env, {})
    assert [f.level for f in by_topic(findings, "spf") + by_topic(findings, "dkim")] == ["fail", "fail"]
    assert all("DNS did not answer" in f.english for f in failures(findings)[:2])
    assert by_topic(findings, "tls")[0].level == "ok"


def test_a_providers_include_is_enough_when_named(dns_server, starttls_port, trusted):
    """127.0.0.1 is not among spf.provider.example's addresses: named, the include (two deep) passes."""
    env = settings(dns_server, starttls_port, sender="digest@viaprovider.example")
    assert by_topic(examine(env, {}), "spf")[0].level == "fail"
    findings = examine({**env, "DIGEST_DOCTOR_SPF_INCLUDE": "spf.provider.example"}, {})
    assert not failures(findings), doctor_lines(findings)
    problem = only_problem(examine({**env, "DIGEST_FROM": "digest@uncovered.example",
                                    "DIGEST_DOCTOR_SPF_INCLUDE": "spf.provider.example"}, {}), "spf")
    assert "does not include spf.provider.example" in problem.english
    assert problem.record == 'uncovered.example TXT "v=spf1 ip4:192.0.2.1 mx include:spf.provider.example -all"'


def test_two_spf_records_are_a_permerror_and_one_merged_record_is_offered(dns_server, starttls_port, trusted):
    problem = only_problem(examine(settings(dns_server, starttls_port, sender="digest@twospf.example"), {}), "spf")
    assert "has 2 SPF records" in problem.english
    assert problem.record.startswith('twospf.example TXT "v=spf1 ')
    assert all(t in problem.record for t in ("include:_spf.relay.example", "ip4:192.0.2.7", "ip4:127.0.0.1 ~all"))


@pytest.mark.parametrize("name", ["lookups.example", "loop.example"])
def test_more_than_ten_lookups_or_an_include_loop_is_a_permerror(dns_server, starttls_port, trusted, name):
    problem = only_problem(examine(settings(dns_server, starttls_port, sender=f"digest@{name}"), {}), "spf")
    assert "permerror" in problem.english and "more than 10 DNS lookups" in problem.english
    assert problem.record == f'{name} TXT "v=spf1 ip4:127.0.0.1 ~all"'


def test_spf_evaluation_follows_include_a_mx_ip_and_cidr(dns_server):
    res = resolver(dns_server)
    assert SpfCheck(res, "127.0.0.1").run("relay.good.example") == ("none", "no v=spf1 record at relay.good.example")
    assert SpfCheck(res, "127.0.0.1").run("_spf.relay.example") == (
        "pass", "a:relay.good.example at _spf.relay.example")
    assert SpfCheck(res, "192.0.2.99").run("good.example") == (
        "pass", "include:_spf.relay.example at good.example → ip4:192.0.2.0/24 at _spf.relay.example")
    assert SpfCheck(res, "192.0.2.25").run("uncovered.example") == ("pass", "mx at uncovered.example")
    assert SpfCheck(res, "198.51.100.1").run("good.example")[0] == "fail"
    assert SpfCheck(res, "127.0.0.1").run("nospf.example")[0] == "none"


def test_the_record_with_the_relay_goes_before_all_and_modifiers():
    assert spf_with("v=spf1 mx ~all", ["ip4:127.0.0.1", "ip6:::1"]) == "v=spf1 mx ip4:127.0.0.1 ip6:::1 ~all"
    assert spf_with("v=spf1 mx redirect=x.example", ["ip4:127.0.0.1"]) == "v=spf1 mx ip4:127.0.0.1 redirect=x.example"
    assert spf_with("v=spf1 mx -all", ["mx"]) == "v=spf1 mx -all"


# --- DKIM ----------------------------------------------------------------------------------------

def test_a_dkim_key_in_dns_that_is_not_the_configured_one_is_reported_with_ours(dns_server, starttls_port, trusted):
    problem = only_problem(examine(settings(dns_server, starttls_port, sender="digest@badkey.example"), {}), "dkim")
    assert "is another key than the configured one" in problem.english and "다른 키라서" in problem.korean
    ours = DkimSigner(KEY, "digest", "badkey.example").public_record()
    assert problem.record == f'digest._domainkey.badkey.example TXT "{ours}"'


def test_a_1024_bit_key_that_matches_is_noted(dns_server, starttls_port, trusted):
    env = settings(dns_server, starttls_port, sender="digest@badkey.example", DIGEST_DKIM_KEY=OTHER_KEY.decode())
    findings = examine(env, {})
    problem = only_problem(findings, "dkim", level="warn")
    assert "1024 bits" in problem.english and "2048" in problem.korean
    assert doctor_lines(findings)[-1].startswith("ready to send")


def test_no_dkim_key_in_dns_is_reported_with_the_public_record(dns_server, starttls_port, trusted):
    problem = only_problem(examine(settings(dns_server, starttls_port, sender="digest@nokey.example"), {}), "dkim")
    assert "no DKIM key at digest._domainkey.nokey.example" in problem.english
    assert DkimSigner(KEY, "digest", "nokey.example").public_record() in problem.record


def test_no_dkim_key_configured_fails_and_says_how_to_make_one(dns_server, starttls_port, trusted):
    env = settings(dns_server, starttls_port)
    del env["DIGEST_DKIM_KEY"]
    findings = examine(env, {})
    dkim = by_topic(findings, "dkim")[0]
    assert dkim.level == "fail" and "openssl genrsa" in dkim.english
    assert by_topic(findings, "dmarc")[0].level == "ok"  # SPF still aligns and passes


# --- DMARC ---------------------------------------------------------------------------------------

def test_missing_dmarc_is_reported_with_a_starting_record(dns_server, starttls_port, trusted):
    problem = only_problem(examine(settings(dns_server, starttls_port, sender="digest@nodmarc.example"), {}), "dmarc")
    assert "no DMARC record at _dmarc.nodmarc.example" in problem.english and "DMARC 레코드" in problem.korean
    assert problem.record == '_dmarc.nodmarc.example TXT "v=DMARC1; p=none; rua=mailto:dmarc@nodmarc.example"'


def test_dmarc_p_none_is_noted_with_the_quarantine_record(dns_server, starttls_port, trusted):
    findings = examine(settings(dns_server, starttls_port, sender="digest@pnone.example"), {})
    problem = only_problem(findings, "dmarc", level="warn")
    assert "p=none" in problem.english and "p=quarantine" in problem.korean
    assert problem.record == '_dmarc.pnone.example TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@pnone.example"'
    assert doctor_lines(findings)[-1] == "ready to send · 보낼 준비가 되었습니다"  # a note, not a failure


def test_dkim_and_spf_of_another_domain_do_not_align(dns_server, starttls_port, trusted):
    env = settings(dns_server, starttls_port, sender="digest@misaligned.example", DIGEST_DKIM_DOMAIN="good.example",
                   DIGEST_SMTP_ENVELOPE_FROM="bounces@good.example")
    findings = examine(env, {})
    problem = only_problem(findings, "dmarc")
    assert "neither DKIM nor SPF aligns with From misaligned.example" in problem.english
    assert "DIGEST_DKIM_DOMAIN=misaligned.example" in problem.english and "정렬되지 않아" in problem.korean
    ours = DkimSigner(KEY, "digest", "misaligned.example").public_record()
    assert problem.record == f'digest._domainkey.misaligned.example TXT "{ours}"'
    assert [f.level for f in by_topic(findings, "spf") + by_topic(findings, "dkim")] == ["ok", "ok"]


def test_strict_alignment_refuses_a_subdomain_and_offers_the_relaxed_record(dns_server, starttls_port, trusted):
    env = settings(dns_server, starttls_port, sender="digest@strict.example", DIGEST_DKIM_DOMAIN="mail.strict.example",
                   DIGEST_SMTP_ENVELOPE_FROM="bounces@mail.strict.example")
    problem = only_problem(examine(env, {}), "dmarc")
    assert "does not align (strict)" in problem.english
    assert problem.record == '_dmarc.strict.example TXT "v=DMARC1; p=reject; adkim=r; aspf=r"'


# --- the records offered fix what they were offered for ---------------------------------------------

STRICT = {"DIGEST_DKIM_DOMAIN": "mail.strict.example", "DIGEST_SMTP_ENVELOPE_FROM": "bounces@mail.strict.example"}


@pytest.mark.parametrize("name, extra", [(n, {}) for n in ("nospf", "uncovered", "twospf", "lookups", "loop",
                                                           "badkey", "nokey", "nodmarc", "pnone")]
                         + [("strict", STRICT)])
def test_publishing_the_offered_record_makes_the_domain_pass(dns_server, starttls_port, trusted, name, extra):
    env = settings(dns_server, starttls_port, sender=f"digest@{name}.example", **extra)
    (problem,) = [f for f in examine(env, {}) if f.level != "ok"]
    where, kind, value = problem.record.split(" ", 2)
    assert kind == "TXT" and value.startswith('"') and value.endswith('"')
    value = value[1:-1]
    fixed = [r for r in RECORDS if (r[0], r[1]) != ("TXT", where)
             or not str(r[2]).lstrip("('").lower().startswith(value[:6].lower())]  # others at the name stay
    fixed.append(("TXT", where, tuple(value[i:i + 255] for i in range(0, len(value), 255))))
    with dnskit.running_dns(fixed, zones=("example",)) as server:
        findings = examine({**env, "DIGEST_DNS_SERVER": server}, {})
    noted = [(f.level, f.topic) for f in findings if f.level != "ok"]
    assert noted == ([("warn", "dmarc")] if name == "nodmarc" else []), doctor_lines(findings)  # the starter: p=none


def test_organizational_domains():
    assert organizational_domain("mail.example.co.kr") == "example.co.kr"
    assert organizational_domain("a.b.example.org") == "example.org"
    assert organizational_domain("news.good.example") == "good.example"


# --- TLS -----------------------------------------------------------------------------------------

def test_a_relay_without_starttls_fails_and_names_the_tls_settings(dns_server):
    with running_smtp(Quiet()) as (_, port):
        problem = only_problem(examine(settings(dns_server, port), {}), "tls")
    assert "offers no STARTTLS" in problem.english and "암호화 없이" in problem.korean
    assert problem.record == "DIGEST_SMTP_SECURITY=tls DIGEST_SMTP_PORT=465"


def test_a_relay_speaking_tls_at_once_passes(dns_server, tls_files, trusted):
    with running_smtp(Quiet(), ssl_context=server_context(tls_files)) as (_, port):
        findings = examine(settings(dns_server, port, DIGEST_SMTP_SECURITY="tls"), {})
    assert not failures(findings), doctor_lines(findings)
    assert "implicit TLS" in by_topic(findings, "tls")[0].english


def test_a_certificate_nobody_vouches_for_fails(dns_server, starttls_port):
    problem = only_problem(examine(settings(dns_server, starttls_port), {}), "tls")
    assert "certificate is not valid" in problem.english and "self-signed" in problem.english


def test_security_none_with_starttls_on_offer_fails_with_the_setting(dns_server, starttls_port, trusted):
    problem = only_problem(examine(settings(dns_server, starttls_port, DIGEST_SMTP_SECURITY="none"), {}), "tls")
    assert "DIGEST_SMTP_SECURITY=none" in problem.english and problem.record == "DIGEST_SMTP_SECURITY=starttls"


# --- settings ------------------------------------------------------------------------------------

def test_the_placeholder_sender_and_a_bad_nameserver_are_settings_problems(dns_server, starttls_port):
    env = settings(dns_server, starttls_port)
    del env["DIGEST_FROM"]
    assert [(f.level, f.topic) for f in examine(env, {})] == [("fail", "settings")]
    env = settings("dns.example.org:53", starttls_port)
    (finding,) = examine(env, {})
    assert finding.level == "fail" and "DIGEST_DNS_SERVER" in finding.english
