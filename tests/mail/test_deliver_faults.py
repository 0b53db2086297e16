"""`kill -9` of a real `digest send` process at random points: nobody twice, nobody skipped.

Each round subscribes 25 readers in a fresh store, then starts `digest send --to smtp` against
a recording aiosmtpd server on 127.0.0.1 and kills it with SIGKILL at random moments: during
start-up, or just after the k-th message was recorded (k random), including inside the server's
10 ms between recording a message and replying, when the sender cannot know it was accepted.
The same command then runs again, until one run finishes. Across at least 20 kills:

  - no reader receives a message twice;
  - every reader received exactly one message, except those the ledger reports ambiguous
    (who received at most one) — and a run that was killed after the message's end and
    before the reply is the only way to become ambiguous.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from mailkit import INTRO, WEEK, Recorder, mail_env, write_content
from smtpkit import running_smtp

from digest.subscribers.store import AMBIGUOUS_AFTER, AMBIGUOUS_BEFORE, open_store

READERS = 25
MIN_KILLS = 20


class SlowRecorder(Recorder):
    """Records a message, then waits 10 ms before saying so: a window where the reply can be lost."""

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(0.01)
        return reply


@pytest.fixture
def slow_server():
    with running_smtp(SlowRecorder()) as server:
        yield server


def start_sender(env: dict, content) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "digest", "send", "--week", WEEK, "--to", "smtp",
                             "--content", str(content)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_at(process: subprocess.Popen, recorder: Recorder, target: int | None, rng: random.Random) -> bool:
    """SIGKILL once ``target`` messages were recorded (None: at a random moment of start-up).

    False when the process finished first.
    """
    if target is None:
        deadline = time.monotonic() + rng.uniform(0.0, 0.6)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.002)
    else:
        start = len(recorder.messages)
        while len(recorder.messages) < start + target and process.poll() is None:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, 0.012))  # now and then inside the reply window
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def test_sigkill_at_random_points_never_sends_twice_or_skips(tmp_path, slow_server):
    recorder, port = slow_server
    seed = int(os.environ.get("DIGEST_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    content = write_content(tmp_path, intro=INTRO)
    kills = mid_send = ambiguous_total = rounds = 0
    by_when: Counter = Counter()  # (before | after the final '.', messages the reader got) -> recipients
    while kills < MIN_KILLS and rounds < 15:
        rounds += 1
        recorder.messages.clear()
        store_path = tmp_path / f"round{rounds}" / "subscribers.sqlite3"
        store = open_store(store_path)
        emails = [f"r{rounds}-{i}@example.org" for i in range(READERS)]
        for address in emails:
            store.add(address)
        env = {**os.environ, **mail_env(), "DIGEST_STORE": str(store_path), "DIGEST_SMTP_HOST": "127.0.0.1",
               "DIGEST_SMTP_PORT": str(port), "DIGEST_SMTP_SECURITY": "none", "DIGEST_SEND_PROGRESS_EVERY": "0"}
        plan = [None] + sorted(rng.sample(range(1, READERS), 3))  # start-up, then after the k-th message
        for target in plan:
            before = len(recorder.messages)
            if kill_at(start_sender(env, content), recorder, None if target is None else target - before, rng):
                kills += 1
                mid_send += 0 < len(recorder.messages) < READERS
        final = start_sender(env, content)
        _, err = final.communicate(timeout=120)
        assert final.returncode == 0, f"seed {seed}: {err.decode()[-2000:]}"
        counts = store.counts(WEEK, "smtp")
        assert counts["pending"] == counts["sending"] == counts["failed"] == counts["skipped"] == 0, (seed, counts)
        states = {d.address: d.state for d in store.deliveries(WEEK, "smtp")}
        for address in emails:
            got = len(recorder.to(address))
            assert got <= 1, f"seed {seed}: {address} received {got} messages"
            if states[address] == "sent":
                assert got == 1, f"seed {seed}: {address} is recorded sent but received nothing"
            else:
                assert states[address] == "ambiguous", (seed, address, states[address])
        ambiguous_total += counts["ambiguous"]
        for row in store.deliveries(WEEK, "smtp", "ambiguous"):  # each says when its sender stopped
            when = "before" if row.reply.startswith(AMBIGUOUS_BEFORE) else "after"
            assert row.reply.startswith((AMBIGUOUS_BEFORE, AMBIGUOUS_AFTER)), row.reply
            by_when[when, len(recorder.to(row.address))] += 1
        store.close()
    print(f"seed {seed}: {rounds} rounds, {kills} kills ({mid_send} while sending), "
          f"{ambiguous_total} ambiguous recipient(s) reported; by (when, received): {dict(by_when)}")
    assert kills >= MIN_KILLS
    assert mid_send >= MIN_KILLS // 2  # most kills landed while messages were going out


def test_sigterm_finishes_the_message_in_flight_stops_cleanly_and_says_the_rerun_continues(tmp_path, slow_server):
    recorder, port = slow_server
    content = write_content(tmp_path, intro=INTRO)
    store_path = tmp_path / "subscribers.sqlite3"
    store = open_store(store_path)
    emails = [f"t{i}@example.org" for i in range(READERS)]
    for address in emails:
        store.add(address)
    env = {**os.environ, **mail_env(), "DIGEST_STORE": str(store_path), "DIGEST_SMTP_HOST": "127.0.0.1",
           "DIGEST_SMTP_PORT": str(port), "DIGEST_SMTP_SECURITY": "none", "DIGEST_SEND_PROGRESS_EVERY": "0"}
    sender = start_sender(env, content)
    while len(recorder.messages) < 3 and sender.poll() is None:
        time.sleep(0.001)
    sender.send_signal(signal.SIGTERM)
    _, err = sender.communicate(timeout=60)
    assert sender.returncode == 130, err.decode()
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("digest send: interrupted; nothing is lost") and "same command" in last, last
    counts = store.counts(WEEK, "smtp")
    assert counts["sending"] == counts["ambiguous"] == 0 and 3 <= counts["sent"] < READERS
    assert counts["sent"] == len(recorder.messages)  # what the ledger says is exactly what arrived
    final = start_sender(env, content)
    final.communicate(timeout=120)
    assert final.returncode == 0
    assert sorted(m.rcpt_tos[0] for m in recorder.messages) == sorted(emails)
