"""Confirmation emails outlive the process that accepted the sign-up: kill -9 while a slow relay
takes them one by one, start again, and every acknowledged sign-up gets exactly one confirmation.
Before the store's outbox they waited in memory: 18 of 20 were lost, and asking again sent nothing
for the rest of the 10-minute window."""

from __future__ import annotations

import signal
import time

import pytest
from mailkit import Recorder, write_content
from servekit import csrf_of, start_server
from smtpkit import running_smtp

from digest.subscribers.store import open_store

SIGN_UPS = 20


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_a_slow_drain_loses_no_confirmation_and_sends_none_twice(backend, request, tmp_path):
    location = (str(tmp_path / "var" / "subscribers.sqlite3") if backend == "sqlite"
                else request.getfixturevalue("postgres_dsn"))
    content = write_content(tmp_path)
    addresses = [f"signup{i}@example.org" for i in range(SIGN_UPS)]
    with running_smtp(Recorder(reply_delay=0.5)) as (recorder, port):
        lease = {"DIGEST_SERVE_CONFIRM_LEASE": "3"}  # a dead sender's claims lapse after 3 s
        server = start_server(tmp_path, content, location, port, **lease)
        with server.client() as client:
            for address in addresses:
                csrf = csrf_of(client.get("subscribe").text)
                assert client.post("subscribe", data={"email": address, "csrf": csrf}).status_code == 200
        time.sleep(1.2)  # a few went out; one is likely between its final '.' and the relay's reply
        server.stop(signal.SIGKILL)
        sent_before = len(recorder.messages)
        assert 0 < sent_before < SIGN_UPS
        again = start_server(tmp_path, content, location, port, **lease)
        store = open_store(location)
        try:
            deadline = time.monotonic() + 60
            while (store.outbox_counts()["pending"] or store.outbox_counts()["sending"]) and \
                    time.monotonic() < deadline:
                time.sleep(0.2)
            counts = store.outbox_counts()
        finally:
            again.stop()
            store.close()
    assert counts["pending"] == counts["sending"] == 0 and counts["sent"] + counts["ambiguous"] == SIGN_UPS
    assert counts["ambiguous"] <= 1  # the one the kill cut between '.' and the reply, if any: not resent
    assert sorted(len(recorder.to(address)) for address in addresses) == [1] * SIGN_UPS
    assert "Traceback" not in again.log_text()
