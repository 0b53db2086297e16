"""Shared parts of the digest tests, and a check of the recording SMTP server itself.

    Recorder / smtp_server    a real aiosmtpd server on 127.0.0.1 that records every accepted
                              message; per-recipient rules make it answer 4xx, 5xx or drop the line
    write_content             a small content tree with one busy week and tricky text
    mail_env                  the settings a test sends with (no real domain is ever contacted)
    perl_parse                Perl's Email::MIME, a second parser from another ecosystem

Other test modules import these; pytest finds the fixtures through the import.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from smtpkit import free_port, running_smtp  # noqa: F401 - free_port is imported from here

ROOT = Path(__file__).resolve().parent.parent
WEEK = "2016-W28"  # the sample content's busy week: 2016-07-11 .. 2016-07-17


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class Recorder:
    """aiosmtpd handler: records accepted messages; ``rules`` script replies per recipient.

    A rule is a list consumed one item per attempt: "451" / "550" refuse at RCPT, "data451" /
    "data554" refuse after DATA, "drop" closes the connection at RCPT, "drop-data" closes it
    after receiving the message but before accepting it, "accept-drop" records the message and
    closes the connection before the reply (the client cannot know it was accepted).
    """

    messages: list[Received] = field(default_factory=list)
    rules: dict[str, list[str]] = field(default_factory=dict)
    reply_delay: float = 0.0  # seconds between taking a message (recorded) and replying 250: a slow relay
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: int = 0

    def _rule(self, address: str, stage: tuple[str, ...]) -> str:
        with self.lock:
            rules = self.rules.get(address.lower())
            if rules and rules[0] in stage:
                return rules.pop(0)
        return ""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        rule = self._rule(address, ("451", "550", "drop"))
        if rule == "drop":
            server.transport.close()
            return "421 closing"
        if rule:
            return {"451": "451 4.7.1 try again later", "550": f"550 5.1.1 <{address}>: no such user"}[rule]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        address = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        rule = self._rule(address, ("data451", "data554", "drop-data", "accept-drop"))
        if rule == "drop-data":
            server.transport.close()
            return "451 gone"
        if rule in ("data451", "data554"):
            return "451 4.3.0 queue full" if rule == "data451" else "554 5.7.1 message refused"
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        if rule == "accept-drop":
            server.transport.close()
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        return "250 2.0.0 queued"

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1, recording; yields (recorder, port)."""
    with running_smtp(Recorder()) as server:
        yield server


NOTE = """\
title: {title}
slug: {slug}
date: {date}
kind: {kind}
tags: [{tags}]
people: [ada]
sources:
  - url: https://arxiv.org/abs/1606.04080
    title: Source of {slug}
summary: {summary}
body: |
  본문입니다.
"""


def write_content(root: Path, extra_notes: dict[str, str] | None = None, intro: str | None = None) -> Path:
    """A content tree: week 2016-W28 has three notes (one with tricky text); W26 has one."""
    content = root / "content"
    (content / "notes" / "2016").mkdir(parents=True, exist_ok=True)
    (content / "tags.yml").write_text(textwrap.dedent("""\
        reinforcement-learning:
          name: 강화학습
        backprop:
          name: 역전파
        tools:
          name: "도구 & 팁"
        """), encoding="utf-8")
    (content / "people.yml").write_text("ada:\n  ko: 에이다 러브레이스\n  en: Ada Lovelace\n", encoding="utf-8")
    notes = {
        "pong-from-pixels": dict(title="\"픽셀로 배우는 퐁: 정책 경사 입문\"", date="2016-07-11", kind="tutorial",
                                 tags="reinforcement-learning",
                                 summary="화면 픽셀만 보고 퐁을 배우는 정책 경사 에이전트를 130줄 파이썬으로 만든다."),
        "backprop-gates": dict(title="게이트로 보는 역전파", date="2016-07-13", kind="paper", tags="backprop",
                               summary="덧셈, 곱셈, 최댓값 게이트가 기울기를 어떻게 흘려보내는지 그림으로 본다."),
        "tricky-text": dict(title="'<script>alert(1)</script> & \"따옴표\" 😀 Ünïcödé'", date="2016-07-16",
                            kind="news", tags="tools, backprop",
                            summary="'<b>굵게</b> & 아주 긴 요약: " + "가나다라마바사 " * 12 + "끝.'"),
        "older-week": dict(title="지난주의 노트", date="2016-06-30", kind="qa", tags="tools",
                           summary="다른 주에 속한 노트."),
    }
    for slug, fields in notes.items():
        (content / "notes" / "2016" / f"{slug}.yml").write_text(NOTE.format(slug=slug, **fields), encoding="utf-8")
    for name, text in (extra_notes or {}).items():
        (content / "notes" / "2016" / name).write_text(text, encoding="utf-8")
    if intro is not None:
        (content / "digest").mkdir(exist_ok=True)
        (content / "digest" / f"{WEEK}.yml").write_text(intro, encoding="utf-8")
    return content


INTRO = """\
title: 이번 주는 강화학습과 역전파
intro: |
  이번 주에는 픽셀에서 바로 배우는 강화학습과, 역전파를 게이트 단위로 뜯어보는 글을 골랐습니다.

  둘째 문단입니다. 천천히 읽어 보세요.
"""

MAIL_ENV = {
    "DIGEST_FROM": "ML 읽기 노트 <digest@example.org>",
    "DIGEST_SITE_URL": "https://notes.example.org/",
    "DIGEST_SERVICE_URL": "https://subscribe.example.org/",
}


def mail_env(**extra) -> dict:
    return {**MAIL_ENV, **extra}


PERL = r"""
use strict; use warnings; use Email::MIME; use JSON::PP;
local $/; my $raw = <STDIN>;
my $m = Email::MIME->new($raw);
my @parts = map { { type => scalar($_->content_type), body => $_->body_str } } $m->subparts;
print JSON::PP->new->utf8->canonical->encode({
  map({ lc($_) => scalar($m->header_str($_)) } qw(Subject From To Date Message-ID List-Id List-Unsubscribe
                                                  List-Unsubscribe-Post MIME-Version)),
  content_type => scalar($m->content_type), parts => \@parts });
"""


def perl_parse(message: bytes) -> dict:
    """Parse with Perl's Email::MIME (Debian libemail-mime-perl): headers decoded, parts as text."""
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed (make test installs libemail-mime-perl)")
    done = subprocess.run(["perl", "-e", PERL], input=message, capture_output=True, timeout=60)
    if b"Can't locate Email/MIME.pm" in done.stderr:
        pytest.skip("Email::MIME is missing: apt-get install libemail-mime-perl (make test does)")
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)
