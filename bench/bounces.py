"""How fast `digest bounces` classifies, and how often it agrees with a person (issue 27's figures).

    (a) classify N messages read from a Maildir generated from the committed corpus
        (tests/mail/bounces/: DSNs of Postfix, Exim, qmail, Gmail, Outlook/Exchange, ARF reports,
        mailto unsubscribes, auto-replies, forged, foreign and broken mail), each filled in for a
        random one of 2,000 subscribers                                 goal >= 1,000 msg/s, one core
    (b) the share classified as a person would: the kind the file's name gives and, for the
        kinds that act, the right subscriber                            goal >= 98 %, every miss listed
    (c) the whole run, `process`: classify, apply to the SQLite store once, move each file

The corpus was written for the tests, so (b) on it shows that nothing regressed, not how a new
sender's bounces would fare. Run: .venv/bin/python bench/bounces.py [--count 10000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import bouncekit  # noqa: E402

from digest.mail.bounces import BounceSettings, Classifier, MaildirSource, process  # noqa: E402
from digest.mail.message import mail_settings  # noqa: E402
from digest.subscribers.store import open_store  # noqa: E402

ENV = {"DIGEST_FROM": "ML 읽기 노트 <digest@example.org>", "DIGEST_SITE_URL": "https://notes.example.org/",
       "DIGEST_SERVICE_URL": "https://subscribe.example.org/", "DIGEST_BOUNCE_DOMAIN": "bounces.example.org",
       "DIGEST_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org"}
ACTS = ("hard", "soft", "complaint", "unsubscribe")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--subscribers", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(27)
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-bounces-"))
    store = open_store(folder / "subscribers.sqlite3")
    readers = []
    for start in range(0, args.subscribers, 1000):
        store.add_many([(f"reader{i}@mail{i % 50}.example", (), "confirmed")
                        for i in range(start, min(args.subscribers, start + 1000))], source="bench")
    readers = store.subscribers()
    settings = mail_settings(ENV, {})
    keyring = store.keyring()
    corpus = bouncekit.corpus()
    maildir = folder / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    expected = {}
    for n in range(args.count):
        name, kind, template = corpus[n % len(corpus)] if n < len(corpus) else rng.choice(corpus)
        reader = rng.choice(readers)
        values = bouncekit.values_for(keyring, reader, settings)
        values["mid"] = f"<bench.{n}.{reader.id}@example.org>"
        raw = bouncekit.fill(template, values)
        file_name = f"{n:06d}.{name}"
        (maildir / "new" / file_name).write_bytes(raw)
        expected[file_name] = (kind, reader.id if kind in ACTS else None)
    total_bytes = sum(f.stat().st_size for f in (maildir / "new").iterdir())
    print(f"generated {args.count} messages ({total_bytes / 1e6:.1f} MB) from {len(corpus)} corpus files, "
          f"{len(readers)} subscribers, in {maildir}")

    def find(address):
        found = store.find(address)
        return found.id if found else None

    classifier = Classifier(keyring, find, settings)
    source = MaildirSource(maildir)
    items = list(source.messages())
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    started = time.perf_counter()
    verdicts = {item.name: classifier.classify(source.read(item)) for item in items}
    elapsed = time.perf_counter() - started
    print(f"(a) classify: {len(items)} messages in {elapsed:.2f} s = {len(items) / elapsed:,.0f} msg/s on one core "
          f"(goal >= 1,000)")
    misses = [(name, expected[name], (v.kind, v.subscriber_id)) for name, v in verdicts.items()
              if (v.kind, v.subscriber_id) != expected[name]]
    share = 1 - len(misses) / len(items)
    kinds = Counter(v.kind for v in verdicts.values())
    print(f"(b) classified as a person would: {len(items) - len(misses)} of {len(items)} = {share:.2%} (goal >= 98 %)")
    print("    by kind: " + " · ".join(f"{k} {n}" for k, n in kinds.most_common()))
    for name, want, got in misses:
        print(f"    miss: {name}: expected {want}, got {got}")
    started = time.perf_counter()
    counts = process(store, source, settings, BounceSettings(), lambda line: None)
    elapsed = time.perf_counter() - started
    print(f"(c) process (classify, apply once to SQLite, move): {len(items)} in {elapsed:.2f} s = "
          f"{len(items) / elapsed:,.0f} msg/s; suppressed {counts['suppressed']}, unsubscribed "
          f"{counts['unsubscribed']}, already suppressed {counts['already suppressed']}; store now "
          f"{store.suppression_counts()}")
    store.close()
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
