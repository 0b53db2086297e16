"""VERP (#27 item 1): each message's envelope sender, as the real SMTP server saw it, names its
subscriber and issue through a signed token with no address in it; a changed token names nobody."""

from __future__ import annotations

import re

import mailkit
import pytest
from mailkit import INTRO, WEEK, mail_env, write_content

from digest.errors import MailSettingsError
from digest.mail.compose import IsoWeek, compose, render
from digest.mail.deliver import SendSettings, SmtpSettings, SmtpTransport, send
from digest.mail.message import bounce_token, mail_settings, read_bounce_token
from digest.pipeline.check import load_content
from digest.subscribers.store import open_store

smtp_server = mailkit.smtp_server
FAST = SendSettings(backoff=0.01, progress_every=0)


@pytest.fixture
def content(tmp_path):
    return load_content(write_content(tmp_path, intro=INTRO))[0]


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "var" / "subscribers.sqlite3")
    yield opened
    opened.close()


def send_week(store, content, port, env, week=WEEK):
    settings = mail_settings(env, {})
    template = render(compose(content, IsoWeek.parse(week), settings.site_url), content, settings, store.secret(),
                      link_key=store.keyring().current)
    smtp = SmtpSettings("127.0.0.1", port, security="none", timeout=5)
    return send(store, template, "smtp", lambda: SmtpTransport(smtp), FAST, "digest@example.org", log=[].append)


def test_the_envelope_sender_names_subscriber_and_issue_and_no_address(store, content, smtp_server):
    recorder, port = smtp_server
    readers = [store.add(f"reader{i}@example.org")[0] for i in range(3)]
    assert send_week(store, content, port, mail_env(DIGEST_BOUNCE_DOMAIN="Bounces.Example.org"))["sent"] == 3
    seen = {}
    for reader in readers:
        (got,) = recorder.to(reader.address)
        local, _, domain = got.mail_from.rpartition("@")
        assert domain == "bounces.example.org" and local.startswith("bounces+")
        assert "reader" not in local and "example" not in local  # no address, not even its parts
        assert re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}", local)  # a plain dot-atom local part
        seen[reader.id] = read_bounce_token(store.keyring(), local.removeprefix("bounces+"))
    assert seen == {reader.id: (reader.id, WEEK) for reader in readers}
    assert len({m.mail_from for m in recorder.messages}) == 3  # one return path per recipient


def test_a_tampered_or_foreign_token_maps_to_nobody(store, content, smtp_server):
    recorder, port = smtp_server
    reader = store.add("reader@example.org")[0]
    store.add("other@example.org")
    send_week(store, content, port, mail_env(DIGEST_BOUNCE_DOMAIN="bounces.example.org"))
    token = recorder.to(reader.address)[0].mail_from.split("+", 1)[1].rsplit("@", 1)[0]
    keyring = store.keyring()
    assert read_bounce_token(keyring, token) == (reader.id, WEEK)
    issue, ident, mac = token.split(".")
    other_id = format(int(ident, 16) + 1, "x")
    for forged in (f"{issue}.{other_id}.{mac}",           # another subscriber's id, same MAC
                   f"2016-W29.{ident}.{mac}",             # another issue
                   f"{issue}.{ident}.{mac[:-1]}" + ("A" if mac[-1] != "A" else "B"),  # one character changed
                   token.lower(), "", "2016-W28", "x" * 200):
        assert read_bounce_token(keyring, forged) is None, forged
    other_store = open_store(store.path.parent / "other.sqlite3")
    try:  # a token of another list (another store's keys) names nobody here
        foreign = bounce_token(other_store.keyring().current, WEEK, reader.id)
        assert foreign != bounce_token(keyring.current, WEEK, reader.id)
        assert read_bounce_token(keyring, foreign) is None
    finally:
        other_store.close()


def test_without_a_bounce_domain_the_envelope_stays_as_it_was(store, content, smtp_server):
    recorder, port = smtp_server
    store.add("reader@example.org")
    send_week(store, content, port, mail_env())
    assert [m.mail_from for m in recorder.messages] == ["digest@example.org"]


def test_a_bounce_domain_that_is_no_domain_is_refused_by_name():
    with pytest.raises(MailSettingsError, match="DIGEST_BOUNCE_DOMAIN"):
        mail_settings(mail_env(DIGEST_BOUNCE_DOMAIN="bounces@example.org"), {})
