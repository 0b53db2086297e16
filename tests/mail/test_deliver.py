"""Delivering an issue: the store, the ledger, a real SMTP server on 127.0.0.1, and what goes wrong."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess

import dkim
import mailkit
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mailkit import INTRO, ROOT, WEEK, mail_env, perl_parse, write_content

from digest import cli
from digest.errors import AddressInvalid, MailSettingsError, SendInProgress, SendPaused
from digest.mail.compose import IsoWeek, compose, render
from digest.mail.deliver import (
    OutboxTransport,
    SendSettings,
    SmtpSettings,
    SmtpTransport,
    send,
    status_lines,
)
from digest.mail.message import DkimSigner, mail_settings
from digest.pipeline.check import load_content
from digest.subscribers.store import SqliteStore, keyed_hash, open_store, verify_token

FAST = SendSettings(backoff=0.01, progress_every=0)
smtp_server = mailkit.smtp_server  # the fixture: a recording SMTP server on 127.0.0.1


@pytest.fixture
def content(tmp_path):
    loaded, _ = load_content(write_content(tmp_path, intro=INTRO))
    return loaded


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "var" / "subscribers.sqlite3")
    yield opened
    opened.close()


def addresses(n: int, prefix: str = "reader") -> list[str]:
    return [f"{prefix}{i}@example.org" for i in range(n)]


def subscribe(store, emails, topics=()):
    return [store.add(a, topics)[0] for a in emails]


def template_for(content, store, week=WEEK, env=None):
    settings = mail_settings(env or mail_env(), {})
    return render(compose(content, IsoWeek.parse(week), settings.site_url), content, settings, store.secret())


def smtp_send(store, template, port, settings=FAST, log=None, **kwargs):
    smtp = SmtpSettings("127.0.0.1", port, security="none", timeout=5)
    lines = [] if log is None else log
    return send(store, template, "smtp", lambda: SmtpTransport(smtp), settings, "bounces@example.org",
                log=lines.append, **kwargs)


def received_once_each(recorder, emails):
    counts = {a: len(recorder.to(a)) for a in emails}
    assert all(n == 1 for n in counts.values()), {a: n for a, n in counts.items() if n != 1}


# --- the store ---

def test_addresses_are_normalized_and_unique_regardless_of_case(store):
    first, created = store.add("Reader@Example.ORG", ("backprop",))
    again, created_again = store.add("reader@example.org")
    assert created and not created_again and first.id == again.id
    assert store.count("confirmed") == 1
    with pytest.raises(AddressInvalid):
        store.add("reader@example.org\r\nBcc: victim@example.org")
    assert store.count() == 1


def test_the_store_reopens_and_keeps_its_secret(tmp_path):
    path = tmp_path / "s.sqlite3"
    first = SqliteStore(path)
    first.add("a@example.org")
    secret = first.secret()
    first.close()
    second = SqliteStore(path)
    assert second.secret() == secret and second.count() == 1
    assert second.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    second.close()


def test_tokens_name_one_subscriber_for_one_purpose(store):
    from digest.subscribers.store import sign_token

    secret = store.secret()
    token = sign_token(secret, "unsubscribe", 12)
    assert verify_token(secret, "unsubscribe", token) == 12
    assert verify_token(secret, "preferences", token) is None
    assert verify_token(secret, "unsubscribe", "13" + token[2:]) is None
    assert verify_token(secret, "unsubscribe", token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert verify_token(b"other", "unsubscribe", token) is None
    assert verify_token(secret, "unsubscribe", "garbage") is None


def test_import_takes_good_rows_and_names_bad_lines_without_their_addresses(tmp_path, content, capsys):
    csv = tmp_path / "list.csv"
    csv.write_text('email,topics,status\n'
                   'one@example.org,backprop,\n'
                   '"two@example.org\r\nBcc: victim@example.org",,\n'
                   'Victim Name <victim@example.org>,,\n'
                   'three@example.org,unknown-tag,\n'
                   'four@example.org,backprop;tools,unsubscribed\n'
                   'five@한국.kr,,subscribed\n', encoding="utf-8")
    store_path = tmp_path / "var" / "s.sqlite3"
    code = cli.main(["subscribers", "import", str(csv), "--store", str(store_path), "--content", str(content.root)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "imported 3 subscriber(s): 3 new, 0 updated; 3 row(s) refused" in out
    assert re.findall(r"list\.csv:(\d+):", err) == ["3", "5", "6"]
    assert "victim" not in out + err and "three@" not in out + err
    store = open_store(store_path)
    assert (store.count("confirmed"), store.count("unsubscribed")) == (2, 1)
    assert cli.main(["subscribers", "add", "six@example.org", "--topic", "backprop", "--store", str(store_path),
                     "--content", str(content.root)]) == 0
    out = capsys.readouterr().out
    assert "added subscriber #4" in out and "six@" not in out
    assert keyed_hash(store.secret(), "six@example.org") in out
    assert cli.main(["subscribers", "add", "x@example.org", "--topic", "nope", "--store", str(store_path),
                     "--content", str(content.root)]) == 2


def test_the_store_and_outbox_stay_out_of_git():
    ignored = subprocess.run(["git", "check-ignore", "var/subscribers.sqlite3", "outbox/2016-W28/mail/x.eml"],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == ["var/subscribers.sqlite3", "outbox/2016-W28/mail/x.eml"]


# --- to the outbox ---

def test_outbox_gets_one_file_per_recipient_once_and_names_without_addresses(store, content, tmp_path):
    emails = addresses(5)
    subscribe(store, emails)
    subscribe(store, ["topical@example.org"], ("reinforcement-learning",))
    store.add("gone@example.org", status="unsubscribed")
    template = template_for(content, store)
    folder = tmp_path / "outbox" / WEEK / "mail"
    factory = lambda: OutboxTransport(folder, store.secret())  # noqa: E731
    counts = send(store, template, "outbox", factory, FAST, "digest@example.org", log=lambda line: None)
    assert counts["sent"] == 6 and counts["pending"] == 0
    files = sorted(folder.glob("*.eml"))
    assert len(files) == 6 and not any("@" in f.name or "reader" in f.name for f in files)
    assert {f.stat().st_mode & 0o777 for f in files} == {0o600}  # each holds an address: the owner's to read
    again = send(store, template, "outbox", factory, FAST, "digest@example.org", log=lambda line: None)
    assert again == counts and len(list(folder.glob("*.eml"))) == 6
    tos = sorted(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"] for f in files)
    assert tos == sorted(emails + ["topical@example.org"])


def test_send_command_defaults_to_the_outbox_and_reports_status(store, content, tmp_path, monkeypatch, capsys):
    subscribe(store, addresses(3))
    for name, value in mail_env(DIGEST_STORE=str(store.path)).items():
        monkeypatch.setenv(name, value)
    args = ["--week", WEEK, "--content", str(content.root), "--outbox", str(tmp_path / "outbox")]
    assert cli.main(["send", *args]) == 0
    assert "sent 3" in capsys.readouterr().out
    assert cli.main(["send", "--status", *args]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sent\s+3", out) and "@" not in out
    assert cli.main(["send", "--status", "--addresses", *args]) == 0
    assert "reader2@example.org" in capsys.readouterr().out


def test_send_without_a_week_reports_on_last_week_not_the_one_just_begun(store, content, monkeypatch, capsys):
    from digest.mail.compose import finished_week

    monkeypatch.setenv("DIGEST_STORE", str(store.path))
    assert cli.main(["send", "--status", "--content", str(content.root)]) == 0
    assert capsys.readouterr().out.startswith(f"{finished_week().name} → outbox:")


def test_a_mistyped_store_location_is_an_error_and_creates_nothing(content, tmp_path, monkeypatch, capsys):
    typo = tmp_path / "vra" / "subscribers.sqlite3"
    monkeypatch.setenv("DIGEST_STORE", str(typo))
    assert cli.main(["send", "--week", WEEK, "--content", str(content.root)]) == 2
    err = capsys.readouterr().err
    assert f"no subscriber store at {typo}" in err and "DIGEST_STORE" in err and "Traceback" not in err
    assert cli.main(["subscribers", "count", "--content", str(content.root)]) == 2
    assert not typo.parent.exists()  # nothing created: the next try is not an empty store either
    monkeypatch.setenv("DIGEST_STORE", str(tmp_path))
    assert cli.main(["send", "--week", WEEK, "--content", str(content.root)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_smtp_refuses_the_placeholder_sender_and_unsubscribe_service(store, content, monkeypatch, capsys):
    monkeypatch.setenv("DIGEST_STORE", str(store.path))
    monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
    assert cli.main(["send", "--week", WEEK, "--to", "smtp", "--content", str(content.root)]) == 2
    assert "DIGEST_FROM is the embedded placeholder" in capsys.readouterr().err


# --- to a real SMTP server ---

def test_every_subscriber_gets_one_message_that_parses_and_links_right(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(8)
    subscribers = subscribe(store, emails)
    template = template_for(content, store)
    counts = smtp_send(store, template, port)
    assert counts["sent"] == 8
    received_once_each(recorder, emails)
    for subscriber in subscribers:
        (got,) = recorder.to(subscriber.address)
        assert got.mail_from == "bounces@example.org"
        message = email.message_from_bytes(got.data, policy=email.policy.default)
        assert message["To"] == subscriber.address
        assert message["Subject"] == "[ML 읽기 노트] 이번 주는 강화학습과 역전파"
        https = re.search(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))[1]
        assert verify_token(store.secret(), "unsubscribe", https.rsplit("/", 1)[1]) == subscriber.id
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert https in text and https in html
        assert "https://notes.example.org/notes/2016/backprop-gates/" in text
    perl = perl_parse(recorder.to(emails[0])[0].data)  # a second parser, from another ecosystem
    assert perl["subject"] == "[ML 읽기 노트] 이번 주는 강화학습과 역전파" and perl["to"] == emails[0]
    assert "게이트로 보는 역전파" in perl["parts"][0]["body"] and "게이트로 보는 역전파" in perl["parts"][1]["body"]


def test_unsubscribing_through_the_headers_token_takes_effect_before_the_next_send(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(3)
    subscribe(store, emails)
    smtp_send(store, template_for(content, store), port)
    message = email.message_from_bytes(recorder.to(emails[1])[0].data, policy=email.policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = re.search(r"/unsubscribe/([^>]+)>", str(message["List-Unsubscribe"]))[1]
    assert store.set_status(verify_token(store.secret(), "unsubscribe", token), "unsubscribed")
    counts = smtp_send(store, template_for(content, store, "2016-W26"), port)
    assert counts["sent"] == 2
    assert len(recorder.to(emails[1])) == 1 and len(recorder.to(emails[0])) == 2


def test_unsubscribing_after_a_run_stopped_skips_the_reader_on_resume(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(3)
    subscribers = subscribe(store, emails)
    store.queue(WEEK, "smtp")  # as a run that stopped before sending anything leaves the ledger
    store.set_status(subscribers[1].id, "unsubscribed")
    counts = smtp_send(store, template_for(content, store), port)
    assert (counts["sent"], counts["skipped"]) == (2, 1)
    assert recorder.to(emails[1]) == [] and recorder.connections == 1  # skipped before, not withdrawn midway


def test_a_bad_address_that_got_into_the_store_fails_alone_and_injects_nothing(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(3)
    subscribe(store, emails)
    store.db.execute("UPDATE subscribers SET address=? WHERE id=2", ("x@example.org\r\nBcc: victim@example.org",))
    logs: list[str] = []
    counts = smtp_send(store, template_for(content, store), port, SendSettings(progress_every=0,
                                                                               bounce_threshold=0.5), log=logs)
    assert (counts["sent"], counts["failed"]) == (2, 1)
    assert all(b"victim" not in m.data and m.rcpt_tos != ["victim@example.org"] for m in recorder.messages)
    assert store.deliveries(WEEK, "smtp", "failed")[0].reply.startswith("address refused")
    assert not any("victim" in line for line in logs)


def test_topics_skip_readers_with_nothing_for_them(store, content, smtp_server):
    recorder, port = smtp_server
    subscribe(store, ["rl@example.org"], ("reinforcement-learning",))
    subscribe(store, ["tools@example.org"], ("tools",))
    counts = smtp_send(store, template_for(content, store, "2016-W26"), port)  # W26: one note, on tools
    assert counts["sent"] == 1 and counts["skipped"] == 1
    assert not recorder.to("rl@example.org") and len(recorder.to("tools@example.org")) == 1


def test_temporary_replies_are_retried_with_backoff_and_sent_once(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(4)
    subscribe(store, emails)
    recorder.rules[emails[1]] = ["451", "451"]
    recorder.rules[emails[2]] = ["data451"]
    counts = smtp_send(store, template_for(content, store), port)
    assert counts["sent"] == 4
    received_once_each(recorder, emails)
    attempts = {d.address: d.attempts for d in store.deliveries(WEEK, "smtp")}
    assert attempts[emails[0]] == 1 and attempts[emails[1]] == 1 and attempts[emails[2]] == 2


def test_a_recipient_deferred_past_every_retry_stays_pending_for_the_next_run(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(3)
    subscribe(store, emails)
    recorder.rules[emails[0]] = ["451"] * 4
    logs: list[str] = []
    counts = smtp_send(store, template_for(content, store), port, SendSettings(retries=3, backoff=0.01,
                                                                               progress_every=0), log=logs)
    assert (counts["sent"], counts["pending"]) == (2, 1)
    assert any(line.startswith("deferred ") for line in logs)
    counts = smtp_send(store, template_for(content, store), port)
    assert counts["sent"] == 3
    received_once_each(recorder, emails)


def test_permanent_replies_fail_the_recipient_and_sending_goes_on(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(30)
    subscribe(store, emails)
    recorder.rules[emails[3]] = ["550"]
    recorder.rules[emails[4]] = ["data554"]
    logs: list[str] = []
    lenient = SendSettings(backoff=0.01, progress_every=0, bounce_threshold=0.1)  # 2 of 30 stays under it
    counts = smtp_send(store, template_for(content, store), port, lenient, log=logs)
    assert (counts["sent"], counts["failed"]) == (28, 2)
    failed = {d.address: d.reply for d in store.deliveries(WEEK, "smtp", "failed")}
    assert failed[emails[3]] == "550 5.1.1 <recipient>: no such user"
    assert failed[emails[4]] == "554 5.7.1 message refused"
    assert not any("@" in line for line in logs)  # logs carry keyed hashes, never addresses
    assert any(keyed_hash(store.secret(), emails[3]) in line for line in logs)
    report = "\n".join(status_lines(store, WEEK, "smtp"))
    assert re.search(r"failed\s+2", report) and "550 5.1.1 <recipient>: no such user" in report and "@" not in report


def test_dropped_connections_reconnect_and_lose_nobody(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(6)
    subscribe(store, emails)
    recorder.rules[emails[1]] = ["drop", "drop"]  # at RCPT, twice: before the message, so retried
    recorder.rules[emails[3]] = ["drop-data"]  # after the message's end, not accepted: the client cannot tell
    counts = smtp_send(store, template_for(content, store), port)
    assert (counts["sent"], counts["ambiguous"]) == (5, 1)
    received_once_each(recorder, [a for a in emails if a != emails[3]])
    assert recorder.to(emails[3]) == [] and recorder.connections == 4
    assert store.deliveries(WEEK, "smtp", "ambiguous")[0].address == emails[3]


def test_a_reply_lost_after_the_message_is_ambiguous_and_not_resent_unless_asked(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(4)
    subscribe(store, emails)
    recorder.rules[emails[2]] = ["accept-drop"]  # accepted, but the line drops before the reply
    template = template_for(content, store)
    counts = smtp_send(store, template, port)
    assert (counts["sent"], counts["ambiguous"]) == (3, 1)
    assert smtp_send(store, template, port) == counts  # rerun: nothing new
    assert len(recorder.to(emails[2])) == 1
    report = "\n".join(status_lines(store, WEEK, "smtp"))
    assert re.search(r"ambiguous\s+1\s+maybe delivered", report)
    counts = smtp_send(store, template, port, resend_ambiguous=True)
    assert counts["sent"] == 4 and len(recorder.to(emails[2])) == 2  # the operator chose to resend


def test_too_many_permanent_failures_pause_sending_until_told_to_go_on(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(20)
    subscribe(store, emails)
    for address in emails[:5]:
        recorder.rules[address] = ["550"]
    guard = SendSettings(backoff=0.01, progress_every=0, bounce_threshold=0.1, bounce_window=20)
    template = template_for(content, store)
    with pytest.raises(SendPaused, match=r"3 of the first 3 recipients were refused permanently, over 10%"):
        smtp_send(store, template, port, guard)
    counts = store.counts(WEEK, "smtp")
    assert counts["failed"] == 3 and counts["pending"] == 17 and counts["sent"] == 0
    with pytest.raises(SendPaused):  # a rerun remembers the failures
        smtp_send(store, template, port, guard)
    counts = smtp_send(store, template, port, guard, ignore_bounces=True)
    assert (counts["sent"], counts["failed"]) == (15, 5)


def test_several_connections_send_everyone_exactly_once(store, content, smtp_server):
    recorder, port = smtp_server
    emails = addresses(40)
    subscribe(store, emails)
    counts = smtp_send(store, template_for(content, store), port, SendSettings(concurrency=3, progress_every=0))
    assert counts["sent"] == 40
    received_once_each(recorder, emails)
    assert recorder.connections == 3


def test_a_second_sender_of_the_same_issue_is_refused(store, content, smtp_server):
    _, port = smtp_server
    subscribe(store, addresses(1))
    with store.claim(WEEK, "smtp"), pytest.raises(SendInProgress, match="another `digest send`"):
        smtp_send(store, template_for(content, store), port)


# --- DKIM ---

@pytest.fixture(scope="module")
def dkim_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_messages_are_dkim_signed_and_dkimpy_verifies_them(store, content, smtp_server, dkim_key):
    recorder, port = smtp_server
    emails = addresses(3)
    subscribe(store, emails)
    env = mail_env(DIGEST_DKIM_KEY=dkim_key.decode(), DIGEST_DKIM_SELECTOR="weekly")
    template = template_for(content, store, env=env)
    smtp_send(store, template, port)
    record = template.signer.public_record().encode()
    looked_up = []

    def dns(name, timeout=5):
        looked_up.append(name)
        return record

    for address in emails:
        data = recorder.to(address)[0].data
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=weekly;")
        assert dkim.verify(data, dnsfunc=dns)
        signed = re.search(rb"h=([^;]+);", data)[1].decode().split(":")
        assert {"from", "to", "subject", "list-unsubscribe", "list-unsubscribe-post"} <= set(signed)
        tampered = data.replace(b"unsubscribe/", b"unsubscribX/", 1)
        assert not dkim.verify(tampered, dnsfunc=dns)
        body_changed = data[:-40] + data[-40:].replace(b"--", b"- ", 1)
        assert not dkim.verify(body_changed, dnsfunc=dns)
    assert set(looked_up) == {b"weekly._domainkey.example.org."}


def test_our_body_hash_matches_dkimpys_and_dkimpy_verifies_our_signature(dkim_key):
    signer = DkimSigner(dkim_key, "weekly", "example.org")
    headers = [(b"From", b"From: a@example.org\r\n"), (b"To", b"To: b@example.org\r\n"),
               (b"Subject", b"Subject: =?utf-8?b?7ZWc6rWt7Ja0?=\r\n")]
    body = b"line one\r\nline two\r\n"
    ours = signer.sign(headers, body, now=1_468_800_000)
    message = b"".join(line for _, line in headers) + b"\r\n" + body
    theirs = dkim.DKIM(message)
    theirs_line = theirs.sign(b"weekly", b"example.org", dkim_key, canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=[h for h in signer.headers])
    ours_b = re.sub(rb"\s+", b"", re.search(rb"b=([^;]+)$", ours)[1])
    theirs_fields = dict(re.findall(rb"(\w+)=([^;]*)", re.sub(rb"\s+", b"", theirs_line.split(b":", 1)[1])))
    ours_fields = dict(re.findall(rb"(\w+)=([^;]*)", re.sub(rb"\s+", b"", ours.split(b":", 1)[1])))
    assert ours_fields[b"bh"] == theirs_fields[b"bh"]
    assert dkim.verify(ours + message, dnsfunc=lambda name, timeout=5: signer.public_record().encode())
    assert len(ours_b) == len(theirs_fields[b"b"])


@pytest.mark.parametrize("key, problem", [(b"not a key", "not an unencrypted PEM"), (b"", "not an unencrypted PEM")])
def test_a_bad_dkim_key_stops_before_anything_is_sent(key, problem):
    with pytest.raises(MailSettingsError, match=problem):
        DkimSigner(key, "weekly", "example.org")



def test_send_skip_empty_makes_a_week_without_notes_a_quiet_success(store, content, monkeypatch, capsys):
    monkeypatch.setenv("DIGEST_STORE", str(store.path))
    args = ["send", "--week", "2016-W30", "--content", str(content.root)]
    assert cli.main(args) == 2 and "weeks with notes: 2016-W28, 2016-W26" in capsys.readouterr().err
    assert cli.main([*args, "--skip-empty"]) == 0 and "nothing sent" in capsys.readouterr().out
