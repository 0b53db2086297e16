"""`digest links` against loopback HTTP servers serving 200, 301, 404, 500, 405-on-HEAD, 429 and timeouts.

Two servers (127.0.0.1 and 127.0.0.2) play two hosts, so per-host limits can be
seen from the servers' side: how many requests were in flight, and when each started.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from loopback import reply

from digest.authoring.links import body_urls, collect
from digest.cli import main


class Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str):
        super().__init__((host, 0), _Handler)
        self.requests: list[tuple[float, str, str]] = []  # (monotonic start, method, path)
        self.spans: list[tuple[float, float]] = []  # (start, end) of each answered request
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"

    def handle_error(self, request, client_address):  # clients that time out leave broken pipes
        pass


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, head: bool):
        server: Site = self.server
        start = time.monotonic()
        with server.lock:
            server.requests.append((start, self.command, self.path))
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            status, headers, delay = self._route(head)
            time.sleep(delay)
            body = b"" if head else f"<html><title>{status}</title></html>".encode()
            reply(self, status, headers, body)
        finally:
            with server.lock:
                server.in_flight -= 1
                server.spans.append((start, time.monotonic()))

    def _route(self, head: bool) -> tuple[int, dict, float]:
        path = self.path.split("?")[0]
        if path.startswith("/ok") or path.startswith("/person"):
            return 200, {}, 0
        if path == "/moved":
            return 301, {"Location": "/ok/new-home"}, 0
        if path == "/temporary":
            return 302, {"Location": "/ok/elsewhere"}, 0
        if path == "/no-head":
            return (405 if head else 200), {}, 0
        if path == "/error":
            return 500, {}, 0
        if path == "/limited":
            return 429, {"Retry-After": "60"}, 0
        if path == "/slow":
            return 200, {}, 5
        if path.startswith("/hold/"):
            return 200, {}, 0.3
        return 404, {}, 0

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def log_message(self, *args):
        pass


@pytest.fixture
def sites():
    servers = [Site("127.0.0.1"), Site("127.0.0.2")]
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


TAGS = "ml:\n  name: 머신러닝\n  description: 머신러닝 전반\n"


def make_project(tmp_path: Path, note: str, people: str = "") -> Path:
    content = tmp_path / "content"
    (content / "notes" / "2016").mkdir(parents=True)
    (content / "tags.yml").write_text(TAGS, encoding="utf-8")
    (content / "people.yml").write_text(people or "someone:\n  ko: 누군가\n  en: Someone\n", encoding="utf-8")
    (content / "notes" / "2016" / "links.yml").write_text(note, encoding="utf-8")
    return content


def note_linking(a: str, b: str) -> str:
    return f"""title: 링크 모음
slug: links
date: 2016-08-15
kind: news
tags: [ml]
people: []
sources:
  - url: {a}/ok
    title: 잘 되는 링크
  - url: {a}/gone
    title: 사라진 링크
summary: 링크 검사용 노트.
body: |
  [옮겨 간 글]({a}/moved)과 [잠시 옮긴 글]({a}/temporary "제목"),
  ![그림]({b}/error) 그리고 <{b}/no-head> 자동 링크.

  ```text
  코드 안의 링크는 검사하지 않는다: [x]({a}/in-code)
  ```

  `{a}/in-code-span` 도 마찬가지다. [느린 글]({b}/slow)

  같은 링크를 한 번 더: [사라진 링크]({a}/gone)
"""


def run_links(content: Path, *extra: str) -> int:
    return main(["links", "--content", str(content), "--timeout", "0.5", "--delay", "0", *extra])


def test_reports_broken_and_moved_links_at_their_lines(tmp_path, sites, capsys):
    a, b = (s.base for s in sites)
    people = f"someone:\n  ko: 누군가\n  en: Someone\n  url: {b}/person\nother:\n  ko: 다른 이\n  en: Other\n" \
             f"  url: {b}/missing-home\n"
    content = make_project(tmp_path, note_linking(a, b), people)
    started = time.monotonic()
    assert run_links(content, "--no-cache") == 1
    assert time.monotonic() - started < 4  # the slow link (5 s) timed out after 0.5 s
    out = capsys.readouterr().out.splitlines()
    note = "content/notes/2016/links.yml"
    assert out == [
        f"{note}:10: 404 {a}/gone",
        f"{note}:14: 301 {a}/moved -> {a}/ok/new-home",
        f"{note}:14: 302 {a}/temporary -> {a}/ok/elsewhere",
        f"{note}:15: 500 {b}/error",
        f"{note}:21: timeout {b}/slow",
        f"{note}:23: 404 {a}/gone",
        f"content/people.yml:8: 404 {b}/missing-home",
        "digest links failed: 9 link(s) in 2 file(s), 4 broken, 2 moved (0 from cache)",
    ]
    paths = [path for s in sites for _, _, path in s.requests]
    assert not any("in-code" in p for p in paths)
    assert [(m, p) for _, m, p in sites[1].requests if p == "/no-head"] == [("HEAD", "/no-head"), ("GET", "/no-head")]
    assert sum(1 for _, m, p in sites[0].requests if p == "/gone" and m == "HEAD") == 1  # checked once, shown twice


def test_all_good_exits_zero_and_rate_limits_are_not_failures(tmp_path, sites, capsys):
    a, _ = (s.base for s in sites)
    note = note_linking(a, a).split("body: |")[0].replace(f"{a}/gone", f"{a}/limited") + "body: |\n  본문\n"
    content = make_project(tmp_path, note)
    assert run_links(content, "--no-cache") == 0
    out = capsys.readouterr().out
    assert f"content/notes/2016/links.yml:10: 429 {a}/limited (rate limited; checked again next run)" in out
    assert out.strip().endswith("0 broken, 0 moved, 1 rate-limited (0 from cache)")


def test_cache_skips_fresh_good_links_and_rechecks_broken_ones(tmp_path, sites, capsys):
    a, b = (s.base for s in sites)
    content = make_project(tmp_path, note_linking(a, b))
    assert run_links(content) == 1
    cache = tmp_path / ".cache" / "links.json"
    saved = json.loads(cache.read_text(encoding="utf-8"))
    assert saved["version"] == 1
    assert set(saved["links"]) == {f"{a}/ok", f"{a}/moved", f"{a}/temporary", f"{b}/no-head"}
    assert saved["links"][f"{a}/moved"]["final"] == f"{a}/ok/new-home"
    first = [len(s.requests) for s in sites]
    capsys.readouterr()

    assert run_links(content) == 1
    out = capsys.readouterr().out
    assert f"301 {a}/moved -> {a}/ok/new-home" in out  # moved links stay reported from the cache
    assert "(4 from cache)" in out
    again = [p for s, n in zip(sites, first, strict=True) for _, _, p in s.requests[n:]]
    assert sorted(set(again)) == ["/error", "/gone", "/slow"]

    assert run_links(content, "--max-age", "0") == 1
    assert "(0 from cache)" in capsys.readouterr().out


def test_unreadable_cache_is_ignored_with_a_notice(tmp_path, sites, capsys):
    a, _ = (s.base for s in sites)
    content = make_project(tmp_path, note_linking(a, a).split("body: |")[0].replace("/gone", "/ok2") +
                           "body: |\n  본문\n")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "links.json").write_text("{not json", encoding="utf-8")
    assert run_links(content) == 0
    assert "ignoring unreadable link cache" in capsys.readouterr().err
    assert json.loads((tmp_path / ".cache" / "links.json").read_text(encoding="utf-8"))["version"] == 1


def most_overlapping(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_per_host_limit_and_politeness_delay(tmp_path, sites, capsys):
    a, b = (s.base for s in sites)
    sources = "".join(f"  - url: {base}/hold/{n}\n    title: 링크 {n}\n" for base in (a, b) for n in range(4))
    note = note_linking(a, b).split("sources:")[0] + "sources:\n" + sources + "summary: 요약.\nbody: |\n  본문\n"
    content = make_project(tmp_path, note)
    assert run_links(content, "--no-cache", "--per-host", "2", "--timeout", "5") == 0
    assert [s.most_in_flight for s in sites] == [2, 2]
    assert most_overlapping([span for s in sites for span in s.spans]) == 4  # the two hosts in parallel

    for s in sites:
        s.requests.clear()
    assert run_links(content, "--no-cache", "--per-host", "4", "--delay", "0.3", "--timeout", "5") == 0
    starts = sorted(t for t, _, _ in sites[0].requests)  # as the server saw them: allow for scheduling
    assert len(starts) == 4 and starts[-1] - starts[0] >= 0.8
    assert all(later - earlier >= 0.2 for earlier, later in zip(starts, starts[1:], strict=False))
    capsys.readouterr()


def test_github_annotations_and_markdown_report(tmp_path, sites, capsys, monkeypatch):
    a, b = (s.base for s in sites)
    content = make_project(tmp_path, note_linking(a, b))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    report = tmp_path / "links.md"
    assert run_links(content, "--no-cache", "--report", str(report)) == 1
    out = capsys.readouterr().out
    assert "::error file=content/notes/2016/links.yml,line=10,col=1,title=digest links::404 " in out
    assert "::warning file=content/notes/2016/links.yml,line=14,col=1,title=digest links::301 " in out
    text = report.read_text(encoding="utf-8")
    assert f"| `content/notes/2016/links.yml:10` | 깨짐 | 404 {a}/gone |" in text
    assert "옮겨짐" in text and "digest links failed" in text


def test_body_link_extraction():
    body = "\n".join([
        "[a](https://a.example/x_(y)) and ![b](http://b.example/img.png 'title')",
        "<https://c.example/auto> <not a link> [d]: https://d.example/",
        "[ref]: https://e.example/ref",
        "`https://f.example/span` ``[g](https://g.example/)``",
        "~~~",
        "[h](https://h.example/)",
        "~~~",
        '<a href="https://i.example/">i</a> https://bare.example/ is not a Markdown link',
    ])
    assert body_urls(body) == ["https://a.example/x_(y)", "http://b.example/img.png", "https://c.example/auto",
                               "https://e.example/ref", "https://i.example/"]


def test_real_content_links_are_found_with_lines():
    root = Path(__file__).resolve().parents[2] / "content"
    links = collect(root)
    assert len({link.path for link in links}) >= 10
    for link in links:  # each reported line really holds the link
        line = (root.parent / link.path).read_text(encoding="utf-8").split("\n")[link.line - 1]
        assert link.url in line, (link, line)


def test_works_inside_a_running_event_loop(tmp_path, sites, capsys):
    """Called where a loop already runs (Playwright's sync API, a notebook), the check still runs."""
    import asyncio

    a, _ = (s.base for s in sites)
    content = make_project(tmp_path, note_linking(a, a).split("body: |")[0].replace("/gone", "/ok2") +
                           "body: |\n  본문\n")

    async def inside() -> int:
        return run_links(content, "--no-cache")

    codes = []  # a thread of its own, so that this test does not depend on the loops of other tests
    worker = threading.Thread(target=lambda: codes.append(asyncio.run(inside())))
    worker.start()
    worker.join(timeout=30)
    assert codes == [0]
    assert capsys.readouterr().out.strip().endswith("0 broken, 0 moved (0 from cache)")


@pytest.mark.parametrize("flag, value", [("--per-host", "0"), ("--concurrency", "0"), ("--timeout", "0"),
                                         ("--delay", "-1")])
def test_unusable_limits_are_refused(tmp_path, capsys, flag, value):
    content = make_project(tmp_path, note_linking("https://a.example", "https://b.example"))
    assert main(["links", "--content", str(content), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("digest links: --") and "\n" not in err
