"""`digest send` when the settings are wrong: the operator gets one line saying what to fix, and no
recipient pays for it (they stay pending, so the same command sends to them once fixed).

Every server here is a real aiosmtpd on 127.0.0.1 (tests/smtpkit.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult
from mailkit import INTRO, ROOT, WEEK, Recorder, mail_env, write_content
from smtpkit import running_smtp

from digest import cli
from digest.errors import DeliveryError, MailSettingsError
from digest.mail.compose import IsoWeek, compose, render
from digest.mail.deliver import SendSettings, SmtpSettings, SmtpTransport, send, smtp_settings
from digest.mail.message import mail_settings
from digest.pipeline.check import load_content
from digest.subscribers.store import open_store

READERS = [f"reader{i}@example.org" for i in range(5)]
FAST = SendSettings(backoff=0.01, progress_every=0)
SETTINGS = ("DIGEST_FROM", "DIGEST_SITE_URL", "DIGEST_SERVICE_URL", "DIGEST_STORE", "DIGEST_CONFIG",
            "DIGEST_SMTP_HOST", "DIGEST_SMTP_PORT", "DIGEST_SMTP_SECURITY", "DIGEST_SMTP_USERNAME",
            "DIGEST_SMTP_PASSWORD", "DIGEST_SMTP_PASSWORD_FILE", "DIGEST_SMTP_ENVELOPE_FROM")


@pytest.fixture
def content(tmp_path):
    return write_content(tmp_path, intro=INTRO)


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "var" / "subscribers.sqlite3")
    for address in READERS:
        opened.add(address)
    yield opened
    opened.close()


@pytest.fixture
def environment(monkeypatch, store):
    """The process environment `digest send` reads: the test's settings only."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)

    def set_to(**values):
        for name, value in {**mail_env(DIGEST_STORE=str(store.path)), **values}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
    return set_to


def send_cli(content: Path, capsys, *extra: str) -> tuple[int, str]:
    code = cli.main(["send", "--week", WEEK, "--to", "smtp", "--content", str(content), *extra])
    return code, capsys.readouterr().err


def smtp_send(store, content: Path, port: int, security: str = "none"):
    loaded, _ = load_content(content)
    settings = mail_settings(mail_env(), {})
    template = render(compose(loaded, IsoWeek.parse(WEEK), settings.site_url), loaded, settings, store.secret())
    smtp = SmtpSettings("127.0.0.1", port, security=security, timeout=5)
    return send(store, template, "smtp", lambda: SmtpTransport(smtp), FAST, "bounces@example.org",
                log=lambda line: None)


def everyone_still_pending(store) -> bool:
    counts = store.counts(WEEK, "smtp")
    return counts["pending"] == len(READERS) and counts["failed"] == counts["sent"] == 0


def login(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"digest", b"secret"))


# --- finding: a refusal of the sender is not the recipients' fault ---

# a loopback test server: logging in without TLS is what it is for (aiosmtpd warns of it)
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_server_that_requires_login_stops_the_send_and_the_fixed_rerun_reaches_everyone(
        store, content, environment, capsys):
    with running_smtp(Recorder(), auth_required=True, auth_require_tls=False, authenticator=login) as (recorder,
                                                                                                       port):
        environment(DIGEST_SMTP_HOST="127.0.0.1", DIGEST_SMTP_PORT=str(port), DIGEST_SMTP_SECURITY="none")
        code, err = send_cli(content, capsys)
        last = err.strip().splitlines()[-1]  # after the tally line: one line for the operator
        assert code == 75 and last.startswith("digest send: ") and "530" in last, err
        assert "DIGEST_SMTP_USERNAME" in last and "Traceback" not in err and "@example.org" not in err
        assert everyone_still_pending(store)
        environment(DIGEST_SMTP_HOST="127.0.0.1", DIGEST_SMTP_PORT=str(port), DIGEST_SMTP_SECURITY="none",
                    DIGEST_SMTP_USERNAME="digest", DIGEST_SMTP_PASSWORD="secret")
        code, err = send_cli(content, capsys)
        assert code == 0, err
        assert sorted(m.rcpt_tos[0] for m in recorder.messages) == READERS


class RefusesTheSender(Recorder):
    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        return "550 5.7.1 sender address rejected: not owned by user"


def test_a_refused_sender_address_stops_the_send_and_fails_no_recipient(store, content):
    with running_smtp(RefusesTheSender()) as (_, port):
        with pytest.raises(DeliveryError, match=r"refuses mail from us .*DIGEST_SMTP_ENVELOPE_FROM"):
            smtp_send(store, content, port)
    assert everyone_still_pending(store)


class DeniesRelaying(Recorder):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return f"554 5.7.1 <{address}>: Relay access denied"


def test_a_relay_that_does_not_relay_for_us_stops_the_send_and_names_no_address(store, content):
    with running_smtp(DeniesRelaying()) as (_, port):
        with pytest.raises(DeliveryError, match="DIGEST_SMTP_USERNAME") as caught:
            smtp_send(store, content, port)
    assert "@" not in str(caught.value)
    assert everyone_still_pending(store)


def test_a_password_without_a_username_is_refused_instead_of_silently_ignored(tmp_path):
    with pytest.raises(MailSettingsError, match="DIGEST_SMTP_PASSWORD is set but DIGEST_SMTP_USERNAME is not"):
        smtp_settings({"DIGEST_SMTP_HOST": "smtp.example.org", "DIGEST_SMTP_PASSWORD": "secret"}, {})
    password_file = tmp_path / "password"
    password_file.write_text("secret\n", encoding="utf-8")
    with pytest.raises(MailSettingsError, match="DIGEST_SMTP_USERNAME"):
        smtp_settings({"DIGEST_SMTP_HOST": "smtp.example.org"}, {"smtp": {"password_file": str(password_file)}})
    both = smtp_settings({"DIGEST_SMTP_HOST": "smtp.example.org", "DIGEST_SMTP_USERNAME": "digest",
                          "DIGEST_SMTP_PASSWORD": "secret"}, {})
    assert (both.username, both.password) == ("digest", "secret")


def test_readme_examples_that_set_an_smtp_password_also_set_the_username():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.split(r"(?<!\\)\n", readme)  # a command continued with '\' is one command
    with_password = [c for c in commands if "DIGEST_SMTP_PASSWORD=" in c]
    assert with_password and all("DIGEST_SMTP_USERNAME=" in c for c in with_password), with_password


# --- finding: no real mail with the placeholder site address ---

def test_smtp_refuses_the_placeholder_site_address_but_the_outbox_keeps_it(store, content, environment, capsys,
                                                                           tmp_path):
    environment(DIGEST_SITE_URL=None, DIGEST_SMTP_HOST="127.0.0.1")
    code, err = send_cli(content, capsys)
    assert code == 2 and "DIGEST_SITE_URL is the embedded placeholder" in err, err
    code = cli.main(["send", "--week", WEEK, "--content", str(content), "--outbox", str(tmp_path / "outbox")])
    assert code == 0 and store.counts(WEEK, "outbox")["sent"] == len(READERS)


# --- finding: messages that say what to fix ---

def test_implicit_tls_against_a_plain_port_is_a_setting_to_fix_not_a_server_to_wait_for(
        store, content, environment, capsys):
    with running_smtp(Recorder()) as (recorder, port):
        environment(DIGEST_SMTP_HOST="127.0.0.1", DIGEST_SMTP_PORT=str(port), DIGEST_SMTP_SECURITY="tls")
        code, err = send_cli(content, capsys)
    assert code == 2, err
    assert "does not start TLS" in err and "DIGEST_SMTP_SECURITY=starttls" in err and "later" not in err
    assert recorder.connections == 0 and everyone_still_pending(store)


def test_a_server_without_starttls_is_named_as_such_not_as_a_login_problem(store, content):
    with running_smtp(Recorder()) as (_, port):
        with pytest.raises(MailSettingsError, match="offers no STARTTLS") as caught:
            smtp_send(store, content, port, security="starttls")
    assert "PASSWORD" not in str(caught.value)
    assert everyone_still_pending(store)


def test_send_of_a_week_without_notes_suggests_the_flag_send_accepts(store, content, environment, capsys):
    environment()
    code = cli.main(["send", "--week", "2016-W29", "--content", str(content)])
    err = capsys.readouterr().err
    assert code == 2 and "--skip-empty" in err and "--allow-empty" not in err, err
    code = cli.main(["issue", "--week", "2016-W29", "--content", str(content)])
    assert code == 2 and "--allow-empty" in capsys.readouterr().err  # `digest issue` has that flag


@pytest.mark.parametrize("name, value", [("DIGEST_FROM", "digest at example.org"),
                                         ("DIGEST_UNSUBSCRIBE_MAILTO", "unsubscribe at example.org")])
def test_a_malformed_from_or_mailto_address_names_its_setting(name, value):
    with pytest.raises(MailSettingsError, match=f"^{name} is not a usable address: "):
        mail_settings(mail_env(**{name: value}), {})
