"""A relay that goes away and comes back (#27 item 9): the send waits for it, with backoff and jitter,
for DIGEST_SMTP_RECONNECT_FOR seconds, and every reader gets exactly one message.

The relay is a real aiosmtpd server on 127.0.0.1: stopped in the middle of a send (its listening
socket closed first, so reconnecting meets ECONNREFUSED, then the open connection dropped while the
sender waits for the reply to MAIL FROM, i.e. before any message's end), and started again on the
same port a second later.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from mailkit import INTRO, WEEK, Recorder, mail_env, write_content
from smtpkit import free_port

from digest import cli
from digest.errors import DeliveryError
from digest.mail.compose import IsoWeek, compose, render
from digest.mail.deliver import SendSettings, SmtpSettings, SmtpTransport, send
from digest.mail.message import mail_settings
from digest.pipeline.check import load_content
from digest.subscribers.store import open_store

READERS = [f"reader{i:02d}@example.org" for i in range(12)]
FAST = SendSettings(backoff=0.01, progress_every=0)


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


def template_for(store, content):
    loaded, _ = load_content(content)
    settings = mail_settings(mail_env(), {})
    return render(compose(loaded, IsoWeek.parse(WEEK), settings.site_url), loaded, settings, store.secret())


class HoldsTheFifthMail(Recorder):
    """Records as Recorder does; at the 5th MAIL FROM it says so and never answers."""

    def __init__(self):
        super().__init__()
        self.mails = 0
        self.held = threading.Event()
        self.transport = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails += 1
        if self.mails == 5:
            self.transport = server.transport
            self.held.set()
            await asyncio.sleep(60)
        envelope.mail_from = address
        return "250 OK"


def controller_for(handler, port: int) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.loop.set_exception_handler(lambda loop, context: None)
    controller.start()
    return controller


def restart_when_held(handler: HoldsTheFifthMail, controller: Controller, port: int, down: float, out: dict):
    """Stop the relay as a restart does (no new connections, the open one dropped), start it again."""
    assert handler.held.wait(30)
    loop = controller.loop
    loop.call_soon_threadsafe(controller.server.close)  # connecting now: ECONNREFUSED
    time.sleep(0.05)
    loop.call_soon_threadsafe(handler.transport.close)  # the sender waiting for MAIL's reply: dropped
    controller.stop()
    out["stopped"] = time.monotonic()
    time.sleep(down)
    out["controller"] = controller_for(handler, port)
    out["started"] = time.monotonic()


def test_a_relay_restart_mid_send_reaches_every_reader_exactly_once(store, content):
    handler, port = HoldsTheFifthMail(), free_port()
    first = controller_for(handler, port)
    timing: dict = {}
    restarter = threading.Thread(target=restart_when_held, args=(handler, first, port, 1.0, timing))
    restarter.start()
    smtp = SmtpSettings("127.0.0.1", port, security="none", timeout=5)  # reconnect_for: its default, 60 s
    transports: list[SmtpTransport] = []

    def factory():
        transports.append(SmtpTransport(smtp))
        return transports[-1]

    logs: list[str] = []
    began = time.monotonic()
    try:
        counts = send(store, template_for(store, content), "smtp", factory, FAST, "bounces@example.org",
                      log=logs.append)
    finally:
        restarter.join(30)
        if "controller" in timing:
            timing["controller"].stop()
    took = time.monotonic() - began
    assert counts["sent"] == len(READERS) and counts["pending"] == counts["ambiguous"] == 0, counts
    received = sorted(m.rcpt_tos[0] for m in handler.messages)
    assert received == READERS  # every reader exactly once: nobody twice, nobody skipped
    assert took >= 1.0 and timing["started"] - timing["stopped"] >= 1.0
    probe, transport = transports  # send() asks a probe first (it settles nothing on SMTP)
    assert transport.reconnects == 1  # one connection reconnected, after a few refused tries
    attempts = {d.address: d.attempts for d in store.deliveries(WEEK, "smtp")}
    assert sorted(attempts.values()) == [1] * len(READERS)  # nobody's retries were spent on the outage
    print(f"relay down {timing['started'] - timing['stopped']:.2f} s; send of {len(READERS)} took {took:.2f} s")


def test_no_relay_at_all_is_retried_for_the_setting_then_paused_with_everyone_pending(
        store, content, monkeypatch, capsys):
    port = free_port()  # nobody listens
    for name, value in mail_env(DIGEST_STORE=str(store.path), DIGEST_SMTP_HOST="127.0.0.1",
                                DIGEST_SMTP_PORT=str(port), DIGEST_SMTP_SECURITY="none",
                                DIGEST_SMTP_RECONNECT_FOR="1.5", DIGEST_SEND_PROGRESS_EVERY="0").items():
        monkeypatch.setenv(name, value)
    began = time.monotonic()
    code = cli.main(["send", "--week", WEEK, "--to", "smtp", "--content", str(content)])
    took = time.monotonic() - began
    err = capsys.readouterr().err
    assert code == 75, err
    assert 1.5 <= took < 5, took  # it waited for the relay: today's code gave up within 0.42 s
    last = err.strip().splitlines()[-1]
    tries = int(last.split(" tries over ")[0].rsplit(" ", 1)[1])
    assert 3 <= tries <= 10 and "DIGEST_SMTP_RECONNECT_FOR=1.5" in last and "nothing is lost" in last, last
    counts = store.counts(WEEK, "smtp")
    assert counts["pending"] == len(READERS) and counts["sent"] == counts["failed"] == 0
    attempts = {d.attempts for d in store.deliveries(WEEK, "smtp")}
    assert attempts == {0}  # the failures were the connection's, not any reader's


def test_backoff_grows_with_jitter_and_stops_at_the_deadline(monkeypatch):
    smtp = SmtpSettings("127.0.0.1", free_port(), security="none", timeout=1, reconnect_for=3.0)
    transport = SmtpTransport(smtp)
    waits: list[float] = []
    clock = [0.0]
    monkeypatch.setattr("digest.mail.deliver.time.monotonic", lambda: clock[0])

    def sleep(seconds):
        waits.append(seconds)
        clock[0] += seconds
        return False

    transport.sleep = sleep
    with pytest.raises(DeliveryError, match=r"after \d+ tries over 3\.0 s"):
        transport._connection()
    assert abs(sum(waits) - 3.0) < 1e-9  # waited exactly the setting, in all
    assert [round(w, 3) for w in waits[:4]] != [0.2, 0.4, 0.8, 1.6]  # drawn, not fixed
    for n, wait in enumerate(waits[:-1]):  # each within the upper half of its doubling ceiling
        ceiling = min(SmtpTransport.BACKOFF_MAX, SmtpTransport.BACKOFF_FIRST * 2 ** n)
        assert ceiling / 2 <= wait <= ceiling


def test_a_stopping_run_ends_the_reconnect_wait_at_once():
    smtp = SmtpSettings("127.0.0.1", free_port(), security="none", timeout=1, reconnect_for=60)
    transport = SmtpTransport(smtp)
    transport.sleep = lambda seconds: True  # the dispatcher says the run is stopping
    began = time.monotonic()
    with pytest.raises(ConnectionError):
        transport._connection()
    assert time.monotonic() - began < 1


def start_sender(store, content, port: int, **extra) -> subprocess.Popen:
    env = {**os.environ, **mail_env(DIGEST_STORE=str(store.path), DIGEST_SMTP_HOST="127.0.0.1",
                                    DIGEST_SMTP_PORT=str(port), DIGEST_SMTP_SECURITY="none",
                                    DIGEST_SEND_PROGRESS_EVERY="0", **extra)}
    return subprocess.Popen([sys.executable, "-m", "digest", "send", "--week", WEEK, "--to", "smtp", "--content",
                             str(content)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_digest_send_rides_out_a_one_second_relay_restart(store, content):
    for i in range(len(READERS), 25):
        store.add(f"reader{i:02d}@example.org")
    handler, port = HoldsTheFifthMail(), free_port()
    first = controller_for(handler, port)
    timing: dict = {}
    restarter = threading.Thread(target=restart_when_held, args=(handler, first, port, 1.0, timing))
    restarter.start()
    began = time.monotonic()
    sender = start_sender(store, content, port)
    try:
        out, err = sender.communicate(timeout=120)
    finally:
        restarter.join(30)
        if "controller" in timing:
            timing["controller"].stop()
    took = time.monotonic() - began
    assert sender.returncode == 0, err.decode()[-2000:]
    assert "sent 25" in out.decode()
    received = sorted(m.rcpt_tos[0] for m in handler.messages)
    assert received == sorted(d.address for d in store.deliveries(WEEK, "smtp")) and len(set(received)) == 25
    print(f"digest send: relay down {timing['started'] - timing['stopped']:.2f} s; 25 readers in {took:.2f} s, "
          "exit 0, each exactly once")


def test_sigterm_while_waiting_for_the_relay_stops_at_once_and_loses_nobody(store, content):
    sender = start_sender(store, content, free_port(), DIGEST_SMTP_RECONNECT_FOR="60")
    time.sleep(1.5)  # start-up, then reconnecting
    assert sender.poll() is None
    stopped = time.monotonic()
    sender.send_signal(signal.SIGTERM)
    _, err = sender.communicate(timeout=30)
    assert sender.returncode == 130, err.decode()
    assert time.monotonic() - stopped < 3  # not the 60 s of DIGEST_SMTP_RECONNECT_FOR
    counts = store.counts(WEEK, "smtp")
    assert counts["pending"] == len(READERS) and counts["sent"] == counts["sending"] == 0
