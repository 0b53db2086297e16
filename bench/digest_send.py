"""How fast the weekly digest composes and sends, next to a bare smtplib loop (issue 7's figures).

    (a) compose N personalized messages to bytes, ready to send      goal ≥ 2,000 msg/s, one core
    (b) `deliver.send` with the SQLite ledger to an aiosmtpd sink     goal b/c ≥ 0.8
    (c) a bare smtplib loop sending pre-rendered bytes to that sink  (the ceiling: the sink's CPU)
    (d) (b) with DKIM signing on                                      goal ≥ 400 signed msg/s
        and, to tell our side's cost from the sink's, (d) to a transport that discards

The sink is `python -m aiosmtpd` with its discarding Sink handler, in its own process.
Run: .venv/bin/python bench/digest_send.py [--count 10000] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from digest.mail.compose import SEOUL, IsoWeek, compose, render  # noqa: E402
from digest.mail.deliver import Outcome, SendSettings, SmtpSettings, SmtpTransport, send  # noqa: E402
from digest.mail.message import mail_settings  # noqa: E402
from digest.pipeline.check import load_content  # noqa: E402
from digest.subscribers.store import SqliteStore, Subscriber  # noqa: E402

WEEK = "2016-W28"
TAGS = ("reinforcement-learning", "backprop", "generative-models", "tools")
ENV = {"DIGEST_FROM": "ML 읽기 노트 <digest@example.org>", "DIGEST_SITE_URL": "https://notes.example.org/",
       "DIGEST_SERVICE_URL": "https://subscribe.example.org/"}
SUMMARY = ("화면 픽셀만 보고 퐁을 배우는 정책 경사 에이전트를 만들고, 보상이 드문 환경에서 학습이 왜 느린지, "
           "기준선과 할인율이 분산을 어떻게 줄이는지 실험으로 확인한다. ")


def write_content(root: Path, notes: int = 6) -> Path:
    """One busy week (2016-W28) of ``notes`` notes: messages of about 30 KB, like the issue's figures."""
    content = root / "content"
    (content / "notes" / "2016").mkdir(parents=True)
    (content / "tags.yml").write_text("".join(f"{t}:\n  name: 태그 {t}\n" for t in TAGS), encoding="utf-8")
    (content / "people.yml").write_text("ada:\n  ko: 에이다\n  en: Ada\n", encoding="utf-8")
    for i in range(notes):
        (content / "notes" / "2016" / f"note-{i}.yml").write_text(
            f'title: "합성 노트 {i}번: 픽셀에서 배우는 강화학습과 역전파"\nslug: note-{i}\n'
            f"date: 2016-07-{11 + i % 7}\nkind: paper\ntags: [{TAGS[i % 4]}, {TAGS[(i + 1) % 4]}]\n"
            "people: [ada]\nsources:\n  - url: https://arxiv.org/abs/1606.04080\n    title: Source\n"
            f"summary: {SUMMARY * 2}\nbody: 본문.\n", encoding="utf-8")
    return content


def subscribers(count: int, rng: random.Random) -> list[Subscriber]:
    choices = [(), (), (TAGS[0],), (TAGS[1], TAGS[2]), (TAGS[3],)]
    return [Subscriber(i + 1, f"reader{i}@example.org", rng.choice(choices)) for i in range(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink() -> tuple[subprocess.Popen, int]:
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                             "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink, port
        except OSError:
            time.sleep(0.05)
    sink.kill()
    raise SystemExit("the aiosmtpd sink did not start")


def bench_compose(template, readers) -> tuple[float, float, int]:
    """(msg/s wall, msg/s CPU, mean bytes): every message built, nothing sent."""
    cpu, wall = time.process_time(), time.perf_counter()
    sizes = [len(template.message(r) or b"") for r in readers]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(readers) / wall, len(readers) / cpu, int(statistics.mean(s for s in sizes if s))


class NullTransport:
    """Takes every message at once: what the ledger, composing and signing cost on their own."""

    def deliver(self, sender, recipient, message, commit, ended=None):
        commit()
        if ended is not None:  # as SmtpTransport records the final '.' written
            ended()
        return Outcome("sent", "250 discarded")

    def resolve(self, subscriber_id):
        return None

    def close(self):
        pass


def bench_send(template, readers, port, folder: Path, concurrency: int) -> tuple[float, float]:
    """(msg/s, msg/s of this process's CPU) of `deliver.send` with the ledger, from queueing to the last
    reply; port None: to a transport that discards."""
    store = SqliteStore(folder / f"store-{time.monotonic_ns()}.sqlite3")
    store.add_many([(r.address, r.topics, "confirmed") for r in readers], source="bench")
    template.secret = store.secret()
    smtp = SmtpSettings("127.0.0.1", port or 0, security="none", timeout=30)
    factory = (lambda: SmtpTransport(smtp)) if port else NullTransport
    start, cpu = time.perf_counter(), time.process_time()
    counts = send(store, template, "smtp", factory,
                  SendSettings(concurrency=concurrency, progress_every=0), "bounces@example.org", log=lambda _: None)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    store.close()
    done = counts["sent"] + counts["skipped"]
    assert done == len(readers), counts
    return counts["sent"] / elapsed, counts["sent"] / cpu


def bench_bare(messages: list[tuple[str, bytes]], port: int) -> float:
    """msg/s of one smtplib connection sending pre-rendered bytes, no ledger."""
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for address, data in messages:
            smtp.sendmail("bounces@example.org", [address], data)
    return len(messages) / (time.perf_counter() - start)


def bench_dkimpy(template, reader, key: bytes, n: int = 20) -> float:
    """dkimpy's own signer (pure-Python RSA), for comparison."""
    import dkim

    message = template.message(reader)
    start = time.perf_counter()
    for _ in range(n):
        dkim.sign(message, b"bench", b"example.org", key, include_headers=[b"from", b"to", b"subject"])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1, help="SMTP connections for (b) and (d)")
    args = parser.parse_args()
    rng = random.Random(7)
    now = dt.datetime(2016, 7, 18, 9, tzinfo=SEOUL)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        content, _ = load_content(write_content(folder))
        settings = mail_settings(ENV, {})
        issue = compose(content, IsoWeek.parse(WEEK), settings.site_url)
        readers = subscribers(args.count, rng)
        template = render(issue, content, settings, b"bench secret", now)

        a_wall, a_cpu, size = bench_compose(template, readers)
        print(f"(a) compose {args.count:,} personalized messages to bytes: {a_wall:,.0f} msg/s "
              f"({a_cpu:,.0f} msg/s of CPU), {size / 1024:.1f} KB each       goal ≥ 2,000")

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        signed_settings = mail_settings({**ENV, "DIGEST_DKIM_KEY": key.decode()}, {})
        signed = render(issue, content, signed_settings, b"bench secret", now)
        s_wall, s_cpu, _ = bench_compose(signed, readers[:2000])
        print(f"    ... with DKIM (RSA-2048 via OpenSSL): {s_wall:,.0f} msg/s; dkimpy's own signer: "
              f"{bench_dkimpy(signed, readers[0], key):,.0f} msg/s")

        null = bench_send(signed, readers, None, folder, args.concurrency)
        sink, port = start_sink()
        try:
            messages = [(r.address, m) for r in readers if (m := template.message(r)) is not None]
            c = bench_bare(messages, port)
            b = bench_send(template, readers, port, folder, args.concurrency)
            d = bench_send(signed, readers, port, folder, args.concurrency)
        finally:
            sink.terminate()
            sink.wait()
        (b, b_cpu), (d, d_cpu), (null, null_cpu) = b, d, null
        print(f"(b) deliver.send with the ledger, {args.concurrency} connection(s): {b:,.0f} msg/s "
              f"({b_cpu:,.0f} msg/s of our CPU)")
        print(f"(c) bare smtplib loop, 1 connection, pre-rendered bytes: {c:,.0f} msg/s  → b/c = {b / c:.2f}"
              "   goal ≥ 0.8")
        print(f"(d) deliver.send with DKIM signing on: {d:,.0f} signed msg/s ({d_cpu:,.0f} msg/s of our CPU), "
              f"d/c = {d / c:.2f}   goal ≥ 400")
        print(f"    the same to a transport that discards: {null:,.0f} signed msg/s ({null_cpu:,.0f} msg/s of CPU): "
              "ledger + composing + signing alone")
        print(f"    load average while measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
              f"{os.cpu_count()} cores")
        if len(messages) < args.count:
            print(f"    ({len(messages):,} of {args.count:,} readers get the issue; the rest chose other topics)")


if __name__ == "__main__":
    main()
