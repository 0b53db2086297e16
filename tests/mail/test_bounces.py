"""`digest bounces` on a Maildir (#27 items 2-4 and "Bad input"): every message of the corpus is
classified as a person would; hard bounces and complaints suppress at once, soft ones at the limit
within the window, mailto unsubscribes unsubscribe; the send then skips them; hostile mail is
reported in one line and skipped; a run that stops halfway applies nothing twice."""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import re
import time
import urllib.parse

import bouncekit
import mailkit
import pytest
from mailkit import INTRO, WEEK, mail_env, write_content

from digest import cli
from digest.mail.bounces import MAX_BYTES, BounceSettings, Classifier, MaildirSource, process
from digest.mail.compose import IsoWeek, compose, render
from digest.mail.deliver import OutboxTransport, SendSettings, SmtpSettings, SmtpTransport, send
from digest.mail.message import mail_settings
from digest.pipeline.check import load_content
from digest.subscribers.store import open_store

smtp_server = mailkit.smtp_server
ENV = mail_env(DIGEST_BOUNCE_DOMAIN="bounces.example.org", DIGEST_UNSUBSCRIBE_MAILTO="unsubscribe@example.org")
APPLIES = ("hard", "soft", "complaint", "unsubscribe")


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "var" / "subscribers.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def maildir(tmp_path):
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def deliver(maildir, name: str, raw: bytes) -> None:
    (maildir / "new" / name).write_bytes(raw)


def finder(store):
    def find(address):
        found = store.find(address)
        return found.id if found else None
    return find


def run_cli(capsys, store, maildir, monkeypatch, **env):
    for key, value in {**ENV, **env}.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["bounces", "--maildir", str(maildir), "--store", str(store.path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out.splitlines()


@pytest.mark.parametrize("name,kind,template", bouncekit.corpus(), ids=[n for n, _, _ in bouncekit.corpus()])
def test_each_corpus_message_is_classified_as_a_person_would(store, name, kind, template):
    settings = mail_settings(ENV, {})
    reader = store.add("reader@reader.example")[0]
    store.add("someone.else@reader.example")
    verdict = Classifier(store.keyring(), finder(store), settings).classify(
        bouncekit.fill(template, bouncekit.values_for(store.keyring(), reader, settings)))
    assert verdict.kind == kind, verdict
    assert verdict.subscriber_id == (reader.id if kind in APPLIES else None), verdict


def test_without_verp_a_dsn_is_matched_by_its_recipient_when_it_returns_our_list(store):
    settings = mail_settings(mail_env(), {})  # no bounce domain: bounces come back to the From address
    reader = store.add("reader@reader.example")[0]
    values = {**bouncekit.values_for(store.keyring(), reader, mail_settings(ENV, {})), "verp": "digest@example.org"}
    classifier = Classifier(store.keyring(), finder(store), settings)
    for name in ("hard--postfix-user-unknown.eml", "hard--gmail-no-such-user.eml", "hard--qmail-no-mailbox.eml"):
        verdict = classifier.classify(bouncekit.fill((bouncekit.CORPUS / name).read_bytes(), values))
        assert (verdict.kind, verdict.subscriber_id) == ("hard", reader.id), (name, verdict)
        assert verdict.how in ("recipient", "unsubscribe-token")


def test_with_verp_a_dsn_naming_a_reader_without_a_token_suppresses_nobody(store):
    settings = mail_settings(ENV, {})  # a bounce domain: every message of ours carries a token
    reader = store.add("reader@reader.example")[0]
    values = {**bouncekit.values_for(store.keyring(), reader, settings), "verp": "digest@example.org"}
    classifier = Classifier(store.keyring(), finder(store), settings)
    for name in ("hard--postfix-user-unknown.eml", "hard--gmail-no-such-user.eml"):  # anybody can write these
        raw = bouncekit.fill((bouncekit.CORPUS / name).read_bytes(), values)
        raw = raw.replace(b"List-Unsubscribe:", b"X-Removed:")  # nor a signed link to fall back on
        verdict = classifier.classify(raw)
        assert (verdict.kind, verdict.subscriber_id) == ("forged", None), (name, verdict)
    assert store.get(reader.id).status == "confirmed"


def corpus_for(store, readers: dict[str, object], names: dict[str, str]) -> dict[str, bytes]:
    """{file name: bytes}: each corpus message ``names`` maps to a reader key, filled for that reader."""
    settings = mail_settings(ENV, {})
    return {name: bouncekit.fill((bouncekit.CORPUS / name).read_bytes(),
                                 bouncekit.values_for(store.keyring(), readers[who], settings))
            for name, who in names.items()}


def test_a_maildir_run_suppresses_unsubscribes_and_moves_everything_once(store, maildir, capsys, monkeypatch,
                                                                         tmp_path):
    readers = {k: store.add(f"{k}@reader.example")[0] for k in ("hard", "complaint", "unsub", "soft", "auto", "kept")}
    messages = corpus_for(store, readers, {
        "hard--postfix-user-unknown.eml": "hard", "complaint--arf-abuse-verp.eml": "complaint",
        "unsubscribe--mailto-subject.eml": "unsub", "soft--gmail-over-quota.eml": "soft",
        "autoreply--vacation-auto-submitted.eml": "auto", "forged--tampered-verp-token.eml": "kept",
        "foreign--bounce-for-another-list.eml": "kept", "delayed--postfix-delayed.eml": "kept",
        "malformed--binary-garbage.eml": "kept"})
    for name, raw in messages.items():
        deliver(maildir, name, raw)
    lines = run_cli(capsys, store, maildir, monkeypatch)
    assert len(lines) == len(messages) + 1  # one line a message, and the summary
    assert not any("@" in line for line in lines)  # never an address, only keyed hashes
    assert lines[-1].startswith("digest bounces: 9 message(s)")
    assert store.suppression_counts() == {"unsubscribed": 1, "bounced": 1, "complained": 1}
    status = {k: store.get(r.id).status for k, r in readers.items()}
    assert status == {"hard": "unsubscribed", "complaint": "unsubscribed", "unsub": "unsubscribed",
                      "soft": "confirmed", "auto": "confirmed", "kept": "confirmed"}
    assert store.suppression("hard@reader.example") == "bounced"
    assert store.suppression("complaint@reader.example") == "complained"
    assert store.suppression("kept@reader.example") is None  # the forged token suppressed nobody
    assert list((maildir / "new").iterdir()) == [] and list((maildir / "cur").iterdir()) == []
    assert sorted(p.name for p in (maildir / ".digest-processed" / "cur").iterdir()) == sorted(messages)
    # the send skips them: three confirmed readers fewer get the next issue
    content = load_content(write_content(tmp_path, intro=INTRO))[0]
    settings = mail_settings(ENV, {})
    template = render(compose(content, IsoWeek.parse(WEEK), settings.site_url), content, settings, store.secret(),
                      link_key=store.keyring().current)
    counts = send(store, template, "outbox", lambda: OutboxTransport(tmp_path / "out", store.secret()),
                  SendSettings(progress_every=0), settings.sender, log=[].append)
    assert counts["sent"] == 3
    again = run_cli(capsys, store, maildir, monkeypatch)  # nothing left to read: nothing read twice
    assert again == ["digest bounces: 0 message(s): none; nothing changed"]


def soft(store, reader, n: int) -> bytes:
    """The n-th soft bounce of one reader (each a different message)."""
    raw = bouncekit.fill((bouncekit.CORPUS / "soft--postfix-mailbox-full-expired.eml").read_bytes(),
                         bouncekit.values_for(store.keyring(), reader, mail_settings(ENV, {})))
    return raw.replace(b"Message-Id: <", f"Message-Id: <{n}.".encode())


def test_soft_bounces_suppress_at_the_limit_within_the_window_only(store, maildir, capsys, monkeypatch):
    reader, other = store.add("soft@reader.example")[0], store.add("old@reader.example")[0]
    month = 86400 * 31
    store.apply_bounce("an-old-one", "soft", other.id, 2, 30, now=time.time() - month)  # outside the window
    deliver(maildir, "1", soft(store, other, 1))
    deliver(maildir, "2", soft(store, reader, 1))
    deliver(maildir, "3", soft(store, reader, 2))
    lines = run_cli(capsys, store, maildir, monkeypatch, DIGEST_SOFT_BOUNCE_LIMIT="3", DIGEST_SOFT_BOUNCE_DAYS="30")
    assert "counted 1 of 3" in lines[0] and "counted 2 of 3" in lines[2]
    assert store.get(reader.id).status == "confirmed" and store.suppression_counts()["bounced"] == 0
    deliver(maildir, "4", soft(store, reader, 3))
    deliver(maildir, "5", soft(store, reader, 3))  # the same message twice: counted once
    lines = run_cli(capsys, store, maildir, monkeypatch, DIGEST_SOFT_BOUNCE_LIMIT="3", DIGEST_SOFT_BOUNCE_DAYS="30")
    assert lines[0].endswith(": suppressed") and lines[1].endswith(": already applied")
    assert store.get(reader.id).status == "unsubscribed" and store.suppression("soft@reader.example") == "bounced"
    assert store.get(other.id).status == "confirmed"  # 2 soft bounces, but a month apart


class Crashing(MaildirSource):
    """Stops (as a killed process would) after applying the second message, before moving it."""

    def __init__(self, path):
        super().__init__(path)
        self.moved = 0

    def done(self, item):
        if self.moved == 1:
            raise KeyboardInterrupt
        self.moved += 1
        super().done(item)


def test_a_run_stopped_between_applying_and_moving_applies_nothing_twice(store, maildir, capsys, monkeypatch):
    reader, hard = store.add("soft@reader.example")[0], store.add("hard@reader.example")[0]
    deliver(maildir, "1", soft(store, reader, 1))
    deliver(maildir, "2", soft(store, reader, 2))
    deliver(maildir, "3", corpus_for(store, {"h": hard}, {"hard--exim-no-such-user.eml": "h"})[
        "hard--exim-no-such-user.eml"])
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        process(store, Crashing(maildir), mail_settings(ENV, {}), BounceSettings(3, 30), lines.append)
    assert len(lines) == 1 and sorted(p.name for p in (maildir / "new").iterdir()) == ["2", "3"]
    again = run_cli(capsys, store, maildir, monkeypatch)
    assert again[0].startswith("2: soft") and again[0].endswith("already applied")  # not counted again
    assert again[1].endswith(": suppressed")
    deliver(maildir, "4", soft(store, reader, 4))
    assert run_cli(capsys, store, maildir, monkeypatch)[0].endswith(": suppressed")  # the third, not a fourth
    assert store.get(reader.id).status == "unsubscribed" and store.suppression("soft@reader.example") == "bounced"
    assert sorted(p.name for p in (maildir / ".digest-processed" / "cur").iterdir()) == ["1", "2", "3", "4"]


def dsn_with(store, reader, extra_part: bytes) -> bytes:
    raw = corpus_for(store, {"r": reader}, {"hard--postfix-user-unknown.eml": "r"})["hard--postfix-user-unknown.eml"]
    closing = b"--4Q7XkL2mZNz9sWc.1468800764/mx.example.org--"
    return raw.replace(closing, b"--4Q7XkL2mZNz9sWc.1468800764/mx.example.org\r\n" + extra_part + b"\r\n" + closing)


def test_hostile_mail_is_reported_in_one_line_and_skipped(store, maildir, capsys, monkeypatch):
    reader, victim = store.add("reader@reader.example")[0], store.add("victim@reader.example")[0]
    third = store.add("third@reader.example")[0]
    huge = base64.encodebytes(b"\x00" * (6 * 1024 * 1024))
    bomb = gzip.compress(b"\x00" * (200 * 1024 * 1024))  # 200 MB of zeros in about 200 KB
    nesting = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(3000))
    forged = corpus_for(store, {"v": victim}, {"forged--tampered-verp-token.eml": "v",
                                               "foreign--bounce-for-another-list.eml": "v",
                                               "forged--arf-forged-unsubscribe-link.eml": "v"})
    hostile = {
        "huge-attachment": dsn_with(store, reader, b"Content-Type: application/octet-stream\r\n"
                                                   b"Content-Transfer-Encoding: base64\r\n\r\n" + huge),
        "gzip-bomb": b"From: x@attacker.example\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
                     b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: application/gzip\r\n"
                     b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(bomb) + b"\r\n--z--\r\n",
        "nesting-bomb": b"From: x@attacker.example\r\nSubject: nested\r\nMIME-Version: 1.0\r\n" + nesting,
        "many-parts": b"From: x@attacker.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=p"
                      b"\r\n\r\n" + b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 20000 + b"--p--\r\n",
        "no-headers": b"\r\n\r\njust a body",
        "header-bomb": b"Subject: " + b"a" * 300000 + b"\r\n\r\nbody",
        "bad-encoded-words": b"From: =?utf-8?b?////?= <x@y>\r\nSubject: =?x-unknown?q?=FF=FE?=\r\n\r\nbody",
        "address-in-action": corpus_for(store, {"t": third}, {"hard--postfix-user-unknown.eml": "t"})[
            "hard--postfix-user-unknown.eml"].replace(b"Action: failed", b"Action: failed victim@x.example"),
        "address-in-feedback-type": b"From: x@attacker.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report;"
                                    b" report-type=feedback-report; boundary=q\r\n\r\n--q\r\nContent-Type: message/"
                                    b"feedback-report\r\n\r\nFeedback-Type: abuse victim@x.example\r\n\r\n--q--\r\n",
        **forged,
    }
    for name, raw in hostile.items():
        deliver(maildir, name, raw)
    started = time.monotonic()
    lines = run_cli(capsys, store, maildir, monkeypatch)
    elapsed = time.monotonic() - started
    assert len(lines) == len(hostile) + 1 and not any("@" in line for line in lines)
    by_name = {line.split(":", 1)[0]: line for line in lines[:-1]}
    assert "hard" in by_name["huge-attachment"] and "KB read of a larger message" in by_name["huge-attachment"]
    assert store.get(reader.id).status == "unsubscribed"  # the report before the attachment still counts
    assert store.get(victim.id).status == "confirmed" and store.suppression("victim@reader.example") is None
    for name in ("forged--tampered-verp-token.eml", "forged--arf-forged-unsubscribe-link.eml"):
        assert ": forged (" in by_name[name]
    assert ": foreign (" in by_name["foreign--bounce-for-another-list.eml"]
    for name in ("gzip-bomb", "nesting-bomb", "many-parts", "no-headers", "header-bomb", "bad-encoded-words"):
        assert re.search(r": (malformed|ignored)\b", by_name[name]), by_name[name]
    assert store.suppression_counts() == {"unsubscribed": 0, "bounced": 2, "complained": 0}  # reader and third
    assert ": hard (5.1.1) #" in by_name["address-in-action"]  # the odd Action is not echoed
    assert ": unknown (complaint: names no subscriber" in by_name["address-in-feedback-type"]
    assert elapsed < 20, elapsed  # nothing decompressed, nothing read past MAX_BYTES
    assert len(list((maildir / ".digest-processed" / "cur").iterdir())) == len(hostile)
    assert MAX_BYTES < len(hostile["huge-attachment"])


def test_the_mailto_in_list_unsubscribe_unsubscribes_in_one_run(store, maildir, smtp_server, capsys, monkeypatch,
                                                                 tmp_path):
    recorder, port = smtp_server
    readers = [store.add(f"reader{i}@reader.example")[0] for i in range(3)]
    content = load_content(write_content(tmp_path, intro=INTRO))[0]

    def send_week(week):
        settings = mail_settings(ENV, {})
        template = render(compose(content, IsoWeek.parse(week), settings.site_url), content, settings,
                          store.secret(), link_key=store.keyring().current)
        smtp = SmtpSettings("127.0.0.1", port, security="none", timeout=5)
        return send(store, template, "smtp", lambda: SmtpTransport(smtp), SendSettings(progress_every=0),
                    settings.sender, log=[].append)

    assert send_week(WEEK)["sent"] == 3
    message = email.message_from_bytes(recorder.to(readers[1].address)[0].data, policy=email.policy.default)
    links = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    assert links[0].startswith("https://subscribe.example.org/unsubscribe/") and links[1].startswith("mailto:")
    mailto = urllib.parse.urlsplit(links[1])
    subject = urllib.parse.parse_qs(mailto.query)["subject"][0]
    # what a mail client sends for the reader when they press "unsubscribe"
    deliver(maildir, "unsubscribe-mail", (f"From: {readers[1].address}\r\nTo: {mailto.path}\r\nSubject: {subject}\r\n"
                                          "Date: Mon, 18 Jul 2016 10:00:00 +0900\r\n\r\n").encode())
    lines = run_cli(capsys, store, maildir, monkeypatch)
    assert lines[0].endswith(": unsubscribed") and "unsubscribe" in lines[0]
    assert store.get(readers[1].id).status == "unsubscribed"
    assert store.suppression(readers[1].address) == "unsubscribed"
    assert send_week("2016-W26")["sent"] == 2 and len(recorder.to(readers[1].address)) == 1
