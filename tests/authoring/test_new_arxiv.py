"""`digest new --arxiv/--url` against a loopback HTTP server replaying recorded arXiv answers.

The server plays arXiv's Atom API from tests/authoring/fixtures/arxiv/ (see its README) and,
per test, rate limits, errors, slow answers and web pages. Every failure must be one
line on stderr, a non-zero exit, and no file written or changed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from loopback import reply

from digest.authoring.authors import fold, match, person_id
from digest.authoring.metadata import parse_arxiv_id
from digest.cli import main
from digest.content.model import Person, Source
from digest.content.validate import TEMPLATE_BODY
from digest.content.yamlread import parse
from digest.errors import UsageError
from digest.pipeline.check import check, load_content

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "arxiv"
TODAY = dt.date(2026, 1, 1)


class Replay(ThreadingHTTPServer):
    """arXiv's /api/query from recorded files; ``plan[key]`` overrides answers in order.

    A plan entry is (status, headers, body bytes, seconds to wait before answering);
    the last entry repeats. ``key`` is the id_list for /api/query, else the path.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan: dict[str, list[tuple]] = {}
        self.requests: list[tuple[float, str, str]] = []  # (monotonic time, path, user agent)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):  # a client that timed out and left: not our problem
        pass


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: Replay = self.server
        url = urlsplit(self.path)
        server.requests.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
        key = parse_qs(url.query).get("id_list", [""])[0] if url.path == "/api/query" else url.path
        steps = server.plan.get(key)
        if steps:
            status, headers, body, delay = steps.pop(0) if len(steps) > 1 else steps[0]
        elif url.path == "/api/query":
            recorded = FIXTURES / f"{re.sub(r'v[0-9]+$', '', key).replace('/', '_')}.xml"
            body = (recorded if recorded.is_file() else FIXTURES / "no-results.xml").read_bytes()
            status, headers, delay = 200, {"Content-Type": "application/atom+xml; charset=utf-8"}, 0
        else:
            status, headers, body, delay = 404, {"Content-Type": "text/plain"}, b"not found", 0
        time.sleep(delay)
        reply(self, status, headers, body)

    def log_message(self, *args):
        pass


@pytest.fixture
def arxiv(monkeypatch):
    server = Replay()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("DIGEST_ARXIV_API", f"{server.base}/api/query")
    monkeypatch.setenv("DIGEST_HTTP_TIMEOUT", "5")
    yield server
    server.shutdown()
    server.server_close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def new(*args: str) -> int:
    return main(["new", "--no-input", "--date", "2016-08-15", "--summary", "논문을 한 문장으로 요약했다.", *args])


TEMPLATE_LINES = TEMPLATE_BODY  # the sentences digest new writes for the writer to replace


def the_note(project: Path):
    """The one note, after its writer replaced the body template's sentences (check reports them until then)."""
    for path in (project / "notes").rglob("*.yml"):
        text = path.read_text(encoding="utf-8")
        for line in TEMPLATE_LINES:
            text = text.replace(line, "직접 쓴 문장이다.")
        path.write_text(text, encoding="utf-8")
    content, _ = load_content(project, today=TODAY)
    assert len(content.notes) == 1
    return content, content.notes[0]


# --- the happy paths ---------------------------------------------------------------------------


def test_arxiv_fills_title_source_date_and_known_author(project, arxiv, capsys):
    assert new("--arxiv", "1606.04080", "--tag", "google-brain") == 0
    out = capsys.readouterr().out
    assert "created content/notes/2016/matching-networks-for-one-shot-learning.yml" in out
    _, note = the_note(project)
    assert note.title == "Matching Networks for One Shot Learning"
    assert note.kind == "paper"
    assert note.sources == (Source(url="https://arxiv.org/abs/1606.04080",
                                   title="Matching Networks for One Shot Learning",
                                   arxiv="1606.04080", date=dt.date(2016, 6, 13)),)
    assert note.people == ("oriol-vinyals",)
    result = check(project, today=TODAY)
    assert result.ok and result.diagnostics == [], result.lines()
    assert [urlsplit(p).path for _, p, _ in arxiv.requests] == ["/api/query"]
    assert parse_qs(urlsplit(arxiv.requests[0][1]).query)["id_list"] == ["1606.04080"]
    assert arxiv.requests[0][2].startswith("digest/")


def test_unknown_authors_are_printed_as_registry_entries_to_paste(project, arxiv, capsys):
    before = (project / "people.yml").read_bytes()
    assert new("--arxiv", "1606.04080") == 0
    out = capsys.readouterr().out
    assert "4 author(s) are not in" in out and "Charles Blundell, Timothy Lillicrap" in out
    assert (project / "people.yml").read_bytes() == before
    pasted = out[out.index("charles-blundell:"):out.index("created ")]
    entries = parse("pasted", pasted).entries
    assert list(entries) == ["charles-blundell", "timothy-lillicrap", "koray-kavukcuoglu", "daan-wierstra"]
    assert entries["daan-wierstra"][1].entries["en"][1].value == "Daan Wierstra"


def test_add_people_appends_entries_and_credits_every_author(project, arxiv, capsys):
    before = (project / "people.yml").read_text(encoding="utf-8")
    assert new("--arxiv", "arXiv:1606.04080", "--title", "매칭 네트워크로 원샷 학습하기",
               "--slug", "matching-networks", "--add-people") == 0
    out = capsys.readouterr().out
    assert "added 4 person(s)" in out and "Hangul" in out
    after = (project / "people.yml").read_text(encoding="utf-8")
    assert after.startswith(before)
    content, note = the_note(project)
    assert note.title == "매칭 네트워크로 원샷 학습하기" and note.slug == "matching-networks"
    assert note.people == ("oriol-vinyals", "charles-blundell", "timothy-lillicrap", "koray-kavukcuoglu",
                           "daan-wierstra")
    assert content.people["koray-kavukcuoglu"].en == "Koray Kavukcuoglu"
    result = check(project, today=TODAY)  # passes, and reminds: the new people's ko names are Latin still
    assert result.ok and [d.message.split("'")[1] for d in result.diagnostics] == [
        "Charles Blundell", "Timothy Lillicrap", "Koray Kavukcuoglu", "Daan Wierstra"], result.lines()


def test_korean_title_keeps_a_readable_slug_from_the_paper_title(project, arxiv):
    assert new("--arxiv", "1606.04080", "--title", "매칭 네트워크로 원샷 학습하기") == 0
    _, note = the_note(project)
    assert note.slug == "matching-networks-for-one-shot-learning" and note.title == "매칭 네트워크로 원샷 학습하기"


def test_authors_match_registry_despite_accents_and_folded_titles(project, arxiv, capsys):
    assert new("--arxiv", "https://arxiv.org/abs/1601.06759v3", "--slug", "pixel-rnn") == 0
    _, note = the_note(project)
    assert note.people == ("aaron-van-den-oord",)
    assert note.sources[0].arxiv == "1601.06759v3" and note.sources[0].date == dt.date(2016, 1, 25)
    (project / "notes" / "2016" / "pixel-rnn.yml").unlink()
    assert new("--arxiv", "1511.06434", "--slug", "dcgan") == 0
    _, note = the_note(project)
    assert note.title == "Unsupervised Representation Learning with Deep Convolutional Generative " \
                         "Adversarial Networks"
    assert note.people == ("alec-radford", "soumith-chintala")
    assert "1 author(s) are not in" in capsys.readouterr().out


def test_person_matching_rules():
    people = {"richard-sutton": Person(ko="리처드 서튼", en="Richard S. Sutton"),
              "aaron-van-den-oord": Person(ko="아론 판 덴 오르트", en="Aäron van den Oord")}
    assert match(["Richard Sutton", "AARON VAN DEN OORD", "Andrew G. Barto"], people) == (
        ["richard-sutton", "aaron-van-den-oord"], ["Andrew G. Barto"])
    assert fold("Łukasz Kaiser") == "lukasz kaiser"
    assert person_id("Richard Sutton", {"richard-sutton"}) == "richard-sutton-2"


@pytest.mark.parametrize("text, expected", [
    ("1606.04080", "1606.04080"), ("arXiv:1606.04080v2", "1606.04080v2"),
    ("https://arxiv.org/abs/1606.04080", "1606.04080"), ("http://arxiv.org/pdf/1606.04080v1.pdf", "1606.04080v1"),
    ("hep-th/9901001", "hep-th/9901001"),
])
def test_arxiv_id_forms(text, expected):
    assert parse_arxiv_id(text) == expected


# --- failures: one line, non-zero, nothing written ---------------------------------------------

ATOM = {"Content-Type": "application/atom+xml"}


def _fail(project, capsys, *args, progress: int = 0) -> tuple[int, str]:
    """Run a `digest new` that must fail: exit code and its one-line error (after ``progress`` lines)."""
    before = snapshot(project)
    code = new(*args)
    captured = capsys.readouterr()
    assert snapshot(project) == before, "a failed `digest new` must not write or change any file"
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and len(lines) == progress + 1, captured.err
    return code, lines[-1]


def test_bad_id_is_refused_before_any_request(project, arxiv, capsys):
    code, err = _fail(project, capsys, "--arxiv", "1606.0408x")
    assert code == 2 and "'1606.0408x' is not an arXiv id" in err
    assert arxiv.requests == []


@pytest.mark.parametrize("plan, expected", [
    ([(200, ATOM, (FIXTURES / "no-results.xml").read_bytes(), 0)],
     "arXiv has no paper 1606.04080; check the id at https://arxiv.org/abs/1606.04080"),
    ([(200, ATOM, (FIXTURES / "error-entry.xml").read_bytes(), 0)],
     "arXiv refused 1606.04080: incorrect id format for 1606.99999"),
    ([(200, ATOM, (FIXTURES / "truncated.xml").read_bytes(), 0)], "not valid XML"),
    ([(200, {"Content-Type": "text/html"}, b"<html><body>Bad gateway</body></html>", 0)],
     "not an Atom feed (<html>)"),
    ([(200, ATOM, (FIXTURES / "1511.06434.xml").read_bytes(), 0)], "arXiv answered with http://arxiv.org/abs/1511"),
    ([(500, {}, b"oops", 0)], "answered HTTP 500 Internal Server Error; try again later"),
    ([(429, {"Retry-After": "3600"}, b"slow down", 0)], "is busy (HTTP 429) and asks to wait 3600 s; try again after"),
    ([(429, {}, b"slow down", 0)], "is busy (HTTP 429) and did not say for how long"),
], ids=["no-such-paper", "error-entry", "truncated-xml", "html-not-atom", "wrong-entry", "http-500",
        "429-long-wait", "429-no-retry-after"])
def test_bad_answers_give_one_clear_line(project, arxiv, capsys, plan, expected):
    arxiv.plan["1606.04080"] = plan
    code, err = _fail(project, capsys, "--arxiv", "1606.04080", "--add-people")
    assert code == 3
    assert err.startswith("digest new: ") and expected in err, err


def test_long_retry_after_is_not_waited_for(project, arxiv, capsys):
    arxiv.plan["1606.04080"] = [(503, {"Retry-After": "3600"}, b"busy", 0)]
    started = time.monotonic()
    code, err = _fail(project, capsys, "--arxiv", "1606.04080")
    assert code == 3 and time.monotonic() - started < 2 and len(arxiv.requests) == 1
    at = err.rsplit("try again after ", 1)[1].split(";")[0]
    assert len(at) == 5 and at[2] == ":"


def test_short_retry_after_is_waited_for_then_retried(project, arxiv, capsys):
    arxiv.plan["1606.04080"] = [(429, {"Retry-After": "1"}, b"slow down", 0),
                                (200, ATOM, (FIXTURES / "1606.04080.xml").read_bytes(), 0)]
    assert new("--arxiv", "1606.04080") == 0
    assert "asks to wait 1 s (HTTP 429); retrying (1/2)" in capsys.readouterr().err
    times = [t for t, _, _ in arxiv.requests]
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_retries_are_bounded(project, arxiv, capsys):
    arxiv.plan["1606.04080"] = [(503, {"Retry-After": "1"}, b"busy", 0)]
    code, err = _fail(project, capsys, "--arxiv", "1606.04080", progress=2)
    assert code == 3 and "is busy (HTTP 503)" in err
    assert len(arxiv.requests) == 3


def test_wrong_api_address_is_a_404(project, arxiv, capsys, monkeypatch):
    monkeypatch.setenv("DIGEST_ARXIV_API", f"{arxiv.base}/no/api/here")
    code, err = _fail(project, capsys, "--arxiv", "1606.04080")
    assert code == 3 and "/no/api/here?id_list=1606.04080&max_results=1 was not found (HTTP 404)" in err


def test_timeout(project, arxiv, capsys, monkeypatch):
    monkeypatch.setenv("DIGEST_HTTP_TIMEOUT", "0.3")
    arxiv.plan["1606.04080"] = [(200, ATOM, (FIXTURES / "1606.04080.xml").read_bytes(), 5)]
    started = time.monotonic()
    code, err = _fail(project, capsys, "--arxiv", "1606.04080")
    assert code == 3 and time.monotonic() - started < 3  # the answer would take 5 s
    assert "did not answer within 0.3 s; try again later (or set DIGEST_HTTP_TIMEOUT" in err


def test_network_failure(project, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DIGEST_ARXIV_API", f"http://127.0.0.1:{port}/api/query")
    code, err = _fail(project, capsys, "--arxiv", "1606.04080")
    assert code == 3 and f"cannot reach 127.0.0.1:{port} (" in err and "check your network connection" in err
    # and the way on without the network, with the source filled in
    by_hand = 'digest new --title "…" --kind paper --source https://arxiv.org/abs/1606.04080'
    assert f"or write it without fetching: {by_hand}" in err


def test_existing_note_is_refused_and_people_left_alone(project, arxiv, capsys):
    assert new("--arxiv", "1606.04080", "--slug", "taken") == 0
    capsys.readouterr()
    code, err = _fail(project, capsys, "--arxiv", "1606.04080", "--slug", "taken", "--add-people")
    assert code == 2 and "slug 'taken' is already used by content/notes/2016/taken.yml" in err


# --- web pages ---------------------------------------------------------------------------------

PAGE = """<!doctype html><html><head>
<meta charset="utf-8"><title>ignored &amp; shorter</title>
<meta property="og:title" content="Deep Reinforcement Learning: Pong from Pixels">
<meta name="author" content="Andrej Karpathy">
<meta property="article:published_time" content="2016-05-31T10:00:00+00:00">
</head><body><p>hello</p></body></html>"""


def test_url_reads_open_graph_title_author_and_date(project, arxiv, capsys):
    arxiv.plan["/2016/05/31/rl/"] = [(200, {"Content-Type": "text/html; charset=utf-8"}, PAGE.encode(), 0)]
    url = f"{arxiv.base}/2016/05/31/rl/"
    assert new("--url", url, "--kind", "tutorial", "--title", "퐁을 픽셀로 배우기", "--slug", "pong") == 0
    _, note = the_note(project)
    assert note.sources == (Source(url=url, title="Deep Reinforcement Learning: Pong from Pixels",
                                   date=dt.date(2016, 5, 31)),)
    assert note.people == ("andrej-karpathy",) and note.kind == "tutorial"


def test_url_reads_highwire_citation_tags(project, arxiv):
    page = """<html><head><title>Proceedings page</title>
    <meta name="citation_title" content="Pixel Recurrent Neural Networks">
    <meta name="citation_author" content="van den Oord, Aaron">
    <meta name="citation_author" content="Kalchbrenner, Nal">
    <meta name="citation_publication_date" content="2016/06/19">
    </head></html>"""
    arxiv.plan["/paper"] = [(200, {"Content-Type": "text/html; charset=utf-8"}, page.encode(), 0)]
    assert new("--url", f"{arxiv.base}/paper", "--slug", "pixel-rnn") == 0
    _, note = the_note(project)
    assert note.sources[0].title == "Pixel Recurrent Neural Networks"
    assert note.sources[0].date == dt.date(2016, 6, 19) and note.people == ("aaron-van-den-oord",)


def test_url_of_an_arxiv_page_asks_the_api(project, arxiv):
    assert new("--url", "https://arxiv.org/abs/1606.04080", "--slug", "mn") == 0
    assert [urlsplit(p).path for _, p, _ in arxiv.requests] == ["/api/query"]
    _, note = the_note(project)
    assert note.sources[0].arxiv == "1606.04080"


def test_url_follows_redirects_and_decodes_euc_kr(project, arxiv, capsys):
    korean = '<html><head><meta charset="euc-kr"><title>강화학습 입문</title></head></html>'.encode("euc-kr")
    arxiv.plan["/old"] = [(301, {"Location": "/new"}, b"", 0)]
    arxiv.plan["/new"] = [(200, {"Content-Type": "text/html"}, korean, 0)]
    assert new("--url", f"{arxiv.base}/old", "--slug", "rl-intro") == 0
    assert "redirected to" in capsys.readouterr().err
    _, note = the_note(project)
    assert note.title == "강화학습 입문" and note.sources[0].url == f"{arxiv.base}/new"


def test_url_that_is_not_a_page(project, arxiv, capsys):
    arxiv.plan["/paper.pdf"] = [(200, {"Content-Type": "application/pdf"}, b"%PDF-1.4", 0)]
    code, err = _fail(project, capsys, "--url", f"{arxiv.base}/paper.pdf")
    assert code == 3 and "is application/pdf, not a web page; use --source" in err


def test_arxiv_and_url_are_exclusive(project, capsys):
    with pytest.raises(SystemExit) as exit_:
        new("--arxiv", "1606.04080", "--url", "https://example.org/")
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_bad_timeout_setting(project, arxiv, capsys, monkeypatch):
    monkeypatch.setenv("DIGEST_HTTP_TIMEOUT", "soon")
    code, err = _fail(project, capsys, "--arxiv", "1606.04080")
    assert code == 2 and "DIGEST_HTTP_TIMEOUT='soon' is not a number of seconds" in err


def test_usage_error_class_is_what_bad_ids_raise():
    with pytest.raises(UsageError):
        parse_arxiv_id("not an id")


# --- the contributor, end to end ---------------------------------------------------------------

BODY = """body: |
  ## 무엇인가

  오리올 비냘스(Oriol Vinyals) 등은 [Matching Networks](https://arxiv.org/abs/1606.04080)에서 예시 몇 개만
  보고 새 부류를 알아보는 신경망을 제안했다.

  ## 왜 중요한가

  학습과 시험을 같은 조건(에피소드)으로 맞추는 생각은 이후 메타 학습 연구의 출발점이 되었다.
"""


def feed_titles(path: Path) -> list[str]:
    """Entry titles of an Atom feed or a JSON Feed, in feed order."""
    if path.suffix == ".json":
        return [item["title"] for item in json.loads(path.read_text(encoding="utf-8"))["items"]]
    atom = "{http://www.w3.org/2005/Atom}"
    return [entry.findtext(f"{atom}title") for entry in ET.parse(path).getroot().iter(f"{atom}entry")]


# Not state/: a reference's checkpoints are committed, and a clone has them (a continuing run's finished
# results are published only beside the checkpoints it continues).
CLONE_IGNORES = (".git", ".venv", "site", "outbox", ".cache", "var", "__pycache__", "*.egg-info",
                 ".pytest_cache", ".hypothesis", ".ruff_cache", "node_modules")


def _run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1", **env})


def test_contributor_adds_a_paper_note_end_to_end(tmp_path, arxiv):
    """CONTRIBUTING.md's path on a fresh copy: new tag, `digest new --arxiv`, edit, check, build, break."""
    clone = tmp_path / "ml-notes"  # the working tree as a fork's clone has it: no build outputs or caches
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(*CLONE_IGNORES))
    tag = re.findall(r"```yaml\n(.*?)```", (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"), re.DOTALL)[1]
    with (clone / "content" / "tags.yml").open("a", encoding="utf-8") as tags:  # as CONTRIBUTING.md shows
        tags.write(tag)

    made = _run(["digest", "new", "--no-input", "--arxiv", "1606.04080", "--title", "매칭 네트워크로 원샷 학습하기",
                 "--slug", "matching-networks", "--date", "2016-08-15", "--tag", "meta-learning",
                 "--summary", "예시 몇 개로 새 부류를 알아보는 매칭 네트워크를 정리했다.", "--add-people"], clone)
    assert made.returncode == 0, made.stderr
    note = clone / "content" / "notes" / "2016" / "matching-networks.yml"
    text = note.read_text(encoding="utf-8")
    note.write_text(text[:text.index("body: |")] + BODY, encoding="utf-8")
    people = clone / "content" / "people.yml"  # the marked ko lines, in Hangul as CONTRIBUTING.md asks
    hangul = {"Charles Blundell": "찰스 블런델", "Timothy Lillicrap": "티머시 릴리크랩",
              "Koray Kavukcuoglu": "코라이 카부크추오을루", "Daan Wierstra": "단 비어스트라"}
    people.write_text(re.sub(r"ko: \"?(.+?)\"?  # 한글 이름으로 바꾸세요.*", lambda m: f"ko: {hangul[m[1]]}",
                             people.read_text(encoding="utf-8")), encoding="utf-8")

    checked = _run(["digest", "check"], clone)
    assert checked.returncode == 0, checked.stdout
    assert " 0 error(s)" in checked.stdout.strip().splitlines()[-1]
    # the contributor's files draw no warning (a reference's continuing run may: it is the project's)
    assert all(line.startswith("content/refs/") for line in checked.stdout.strip().splitlines()[:-1]), checked.stdout

    built = _run(["mkdocs", "build", "--quiet", "--site-dir", "site"], clone)
    assert built.returncode == 0, built.stderr
    page = (clone / "site" / "notes" / "2016" / "matching-networks" / "index.html").read_text(encoding="utf-8")
    assert "매칭 네트워크로 원샷 학습하기" in page and "https://arxiv.org/abs/1606.04080" in page
    archive = (clone / "site" / "tags" / "meta-learning" / "index.html").read_text(encoding="utf-8")
    assert "매칭 네트워크로 원샷 학습하기" in archive and "matching-networks/" in archive
    site = clone / "site"
    feeds = [p for p in [*site.glob("*"), *(site / "tags" / "meta-learning").glob("*")]
             if p.suffix in (".xml", ".json") and p.name != "sitemap.xml"]
    assert {p.suffix for p in feeds} == {".xml", ".json"}, feeds  # Atom and JSON Feed, site-wide and per tag
    for feed in feeds:
        assert "매칭 네트워크로 원샷 학습하기" in feed_titles(feed), feed

    broken = text[:text.index("body: |")].replace("tags: [meta-learning]", "tags: [meta-learnig]")
    note.write_text(broken.replace("summary:", "sumary:") + BODY, encoding="utf-8")
    failed = _run(["digest", "check"], clone, GITHUB_ACTIONS="true")
    assert failed.returncode == 1
    annotations = [line for line in failed.stdout.splitlines() if line.startswith("::error ")]
    where = "file=content/notes/2016/matching-networks.yml,line="
    assert any(where in a and "unknown tag 'meta-learnig'" in a and "meta-learning" in a for a in annotations), \
        failed.stdout
    assert any(where in a and "unknown field 'sumary'" in a for a in annotations), failed.stdout


def test_contributing_examples_pass_check(project):
    """The annotated note, tag and person of CONTRIBUTING.md, pasted as they are, pass `digest check`."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    note, tag, person = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    with (project / "tags.yml").open("a", encoding="utf-8") as tags:
        tags.write(tag)
    with (project / "people.yml").open("a", encoding="utf-8") as people:
        people.write(person)
    (project / "notes" / "2016").mkdir()
    (project / "notes" / "2016" / "matching-networks.yml").write_text(note, encoding="utf-8")
    result = check(project, today=TODAY)
    assert result.ok and result.diagnostics == [], result.lines()
    _, written = the_note(project)
    assert written.tags == ("meta-learning",) and written.sources[0].arxiv == "1606.04080"
