"""`digest bounces` against a real IMAP server: Debian's Dovecot on loopback (tests/imapkit.py),
STARTTLS with a certificate made for the test, a static test user. Messages are appended by
IMAP, read, applied and moved to 'digest-processed' (created by the run), never deleted."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import sys

import bouncekit
import imapkit
import pytest
from mailkit import ROOT, mail_env

from digest.mail.bounces import BounceSettings, ImapSettings, ImapSource, process
from digest.mail.message import mail_settings
from digest.subscribers.store import open_store

ENV = mail_env(DIGEST_BOUNCE_DOMAIN="bounces.example.org", DIGEST_UNSUBSCRIBE_MAILTO="unsubscribe@example.org")


@pytest.fixture(scope="module")
def dovecot():
    try:
        with imapkit.running_dovecot() as server:
            yield server
    except imapkit.ImapUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def imap(dovecot):
    """A client logged in over STARTTLS, with INBOX emptied and no digest-processed folder."""
    from imapclient import IMAPClient

    port, cafile, *_ = dovecot
    client = IMAPClient("127.0.0.1", port, ssl=False, timeout=10)
    client.starttls(ssl.create_default_context(cafile=str(cafile)))
    client.login(imapkit.USER, imapkit.PASSWORD)
    for folder in ("digest-processed",):
        if client.folder_exists(folder):
            client.delete_folder(folder)
    client.select_folder("INBOX")
    client.delete_messages(client.search("ALL"))
    client.expunge()
    yield client
    client.logout()


def run_bounces(dovecot, store_path, **extra):
    port, cafile, *_ = dovecot
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT), "DIGEST_IMAP_HOST": "127.0.0.1", "DIGEST_IMAP_PORT": str(port),
           "DIGEST_IMAP_SECURITY": "starttls", "DIGEST_IMAP_USERNAME": imapkit.USER,
           "DIGEST_IMAP_PASSWORD": imapkit.PASSWORD, "DIGEST_IMAP_CAFILE": str(cafile), **extra}
    return subprocess.run([sys.executable, "-m", "digest", "bounces", "--store", str(store_path)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def count(client, folder):
    client.noop()  # the selected INBOX's count is the session's until it hears of others' changes
    return client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"]


def test_an_imap_run_applies_every_message_once_and_moves_it(dovecot, imap, tmp_path):
    store = open_store(tmp_path / "subscribers.sqlite3")
    settings = mail_settings(ENV, {})
    readers = {k: store.add(f"{k}@reader.example")[0] for k in ("hard", "soft", "complaint", "unsub", "kept", "huge")}
    plan = {"hard--gmail-no-such-user.eml": "hard", "hard--outlook-recipient-not-found.eml": "hard",
            "soft--outlook-5.7.515-auth.eml": "soft", "complaint--arf-redacted-recipient.eml": "complaint",
            "unsubscribe--gmail-mailto-empty-body.eml": "unsub", "autoreply--korean-absence.eml": "kept",
            "forged--tampered-verp-token.eml": "kept", "malformed--multipart-without-boundary.eml": "kept"}
    for name, who in plan.items():
        raw = bouncekit.fill((bouncekit.CORPUS / name).read_bytes(),
                             bouncekit.values_for(store.keyring(), readers[who], settings))
        imap.append("INBOX", raw)
    huge = bouncekit.fill((bouncekit.CORPUS / "hard--exim-no-such-user.eml").read_bytes(),
                          bouncekit.values_for(store.keyring(), readers["huge"], settings))
    huge = huge.replace(b"(body omitted)", base64.encodebytes(os.urandom(3 * 1024 * 1024)))
    imap.append("INBOX", huge)  # a 4 MB bounce: only its first MAX_BYTES are fetched
    store.close()

    done = run_bounces(dovecot, tmp_path / "subscribers.sqlite3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(plan) + 2 and "@" not in done.stdout
    assert lines[-1].startswith("digest bounces: 9 message(s): hard 3 · soft 1 · complaint 1 · unsubscribe 1")
    assert "KB read of a larger message" in done.stdout
    store = open_store(tmp_path / "subscribers.sqlite3")
    try:
        assert store.suppression_counts() == {"unsubscribed": 1, "bounced": 2, "complained": 1}
        assert {k: store.get(r.id).status for k, r in readers.items()} == {
            "hard": "unsubscribed", "soft": "confirmed", "complaint": "unsubscribed", "unsub": "unsubscribed",
            "kept": "confirmed", "huge": "unsubscribed"}  # kept: the forged token and the auto-reply changed nothing
        assert store.suppression("soft@reader.example") is None and store.suppression("kept@reader.example") is None
    finally:
        store.close()
    imap.noop()
    assert count(imap, "INBOX") == 0 and count(imap, "digest-processed") == len(plan) + 1  # moved, none deleted
    again = run_bounces(dovecot, tmp_path / "subscribers.sqlite3")
    assert again.stdout.strip() == "digest bounces: 0 message(s): none; nothing changed"


def test_a_wrong_password_is_one_clear_line_and_changes_nothing(dovecot, imap, tmp_path):
    open_store(tmp_path / "subscribers.sqlite3").close()
    imap.append("INBOX", b"Subject: hi\r\n\r\nbody\r\n")
    done = run_bounces(dovecot, tmp_path / "subscribers.sqlite3", DIGEST_IMAP_PASSWORD="wrong")
    assert done.returncode != 0 and "refused our login" in done.stderr and "wrong" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert count(imap, "INBOX") == 1


def test_an_unknown_certificate_is_refused(dovecot, imap, tmp_path):
    open_store(tmp_path / "subscribers.sqlite3").close()
    done = run_bounces(dovecot, tmp_path / "subscribers.sqlite3", DIGEST_IMAP_CAFILE="")
    assert done.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in done.stderr


def test_imaps_on_its_own_port_reads_the_mailbox_too(dovecot, imap, tmp_path):
    store = open_store(tmp_path / "subscribers.sqlite3")
    reader = store.add("reader@reader.example")[0]
    imap.append("INBOX", bouncekit.fill((bouncekit.CORPUS / "complaint--arf-abuse-verp.eml").read_bytes(),
                                        bouncekit.values_for(store.keyring(), reader, mail_settings(ENV, {}))))
    store.close()
    done = run_bounces(dovecot, tmp_path / "subscribers.sqlite3", DIGEST_IMAP_SECURITY="tls",
                       DIGEST_IMAP_PORT=str(dovecot[3]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "digest bounces: 1 message(s): complaint 1; suppressed 1"
    store = open_store(tmp_path / "subscribers.sqlite3")
    assert store.suppression("reader@reader.example") == "complained"
    store.close()


class StopsAfterApplying(ImapSource):
    """Stops (as a killed process would) after applying the first message, before moving it."""

    def done(self, item):
        raise KeyboardInterrupt


def test_an_imap_run_stopped_before_moving_applies_nothing_twice(dovecot, imap, tmp_path):
    store = open_store(tmp_path / "subscribers.sqlite3")
    settings = mail_settings(ENV, {})
    reader = store.add("reader@reader.example")[0]
    for n in (1, 2):
        imap.append("INBOX", bouncekit.fill((bouncekit.CORPUS / "soft--gmail-over-quota.eml").read_bytes(),
                                            bouncekit.values_for(store.keyring(), reader, settings))
                    .replace(b"Date: Fri", f"X-N: {n}\r\nDate: Fri".encode()))
    port, cafile, *_ = dovecot
    imap_settings = ImapSettings("127.0.0.1", port, "starttls", imapkit.USER, imapkit.PASSWORD, cafile=str(cafile))
    lines: list[str] = []
    source = StopsAfterApplying(imap_settings)
    with pytest.raises(KeyboardInterrupt):
        process(store, source, settings, BounceSettings(2, 30), lines.append)
    source.close()
    assert lines == [] and count(imap, "INBOX") == 2 and store.get(reader.id).status == "confirmed"
    store.close()
    done = run_bounces(dovecot, tmp_path / "subscribers.sqlite3", DIGEST_SOFT_BOUNCE_LIMIT="2")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()[:2]
    assert first.endswith(": already applied") and second.endswith(": suppressed")  # the 2nd soft bounce, once
    assert count(imap, "INBOX") == 0 and count(imap, "digest-processed") == 2
