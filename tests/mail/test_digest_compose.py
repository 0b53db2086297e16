"""Composing the weekly issue: which notes, the email's parts and headers, the files, the site's pages."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import pytest
from mailkit import INTRO, ROOT, WEEK, mail_env, perl_parse, write_content

from digest import cli
from digest.errors import UsageError
from digest.mail.compose import (
    PREVIEW,
    SEOUL,
    IsoWeek,
    all_issues,
    compose,
    current_week,
    default_week,
    finished_week,
    issues_feed,
    render,
    web_page,
    web_pages,
    width,
    write_outbox,
)
from digest.mail.message import POLICY, mail_settings
from digest.pipeline.build import compose_digest
from digest.pipeline.check import check, load_content
from digest.subscribers.store import Subscriber, verify_token

GOLDEN = Path(__file__).parent / "golden" / "email"
NOW = dt.datetime(2016, 7, 18, 9, 0, tzinfo=SEOUL)
SECRET = b"test secret"


def golden(name: str, actual: str | bytes) -> None:
    """Compare with tests/mail/golden/email/<name>; `make golden` (DIGEST_UPDATE_GOLDEN=1) rewrites it."""
    path = GOLDEN / name
    text = (actual.decode("ascii") if isinstance(actual, bytes) else actual).replace("\r\n", "\n")
    if os.environ.get("DIGEST_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        return
    assert path.exists(), f"{path} is missing; run `make golden` and review the new file"
    expected = path.read_text(encoding="utf-8").replace("\r\n", "\n")  # whatever git did to line ends
    assert text == expected, f"{name} changed; if intended, run `make golden` and review the diff"


@pytest.fixture
def content(tmp_path):
    loaded, _ = load_content(write_content(tmp_path, intro=INTRO))
    return loaded


@pytest.fixture
def settings():
    return mail_settings(mail_env(), {})


def issue_of(content, settings, week=WEEK, **kwargs):
    return compose(content, IsoWeek.parse(week), settings.site_url, **kwargs)


# --- which notes ---

def test_the_issue_holds_the_weeks_published_notes_oldest_first(tmp_path, settings):
    draft = ("title: 초안\nslug: draft-note\ndate: 2016-07-12\nkind: news\ntags: [tools]\npeople: []\n"
             "sources:\n  - url: https://example.org/x\n    title: x\nsummary: 초안.\nbody: 초안.\ndraft: true\n")
    loaded, _ = load_content(write_content(tmp_path, {"draft-note.yml": draft}, intro=INTRO))
    issue = issue_of(loaded, settings)
    assert [n.slug for n in issue.notes] == ["pong-from-pixels", "backprop-gates", "tricky-text"]
    assert issue.title == "이번 주는 강화학습과 역전파"
    assert issue.intro[1] == "둘째 문단입니다. 천천히 읽어 보세요."
    assert issue.notes[0].url == "https://notes.example.org/notes/2016/pong-from-pixels/"
    assert issue.web_url == "https://notes.example.org/digest/2016-W28/"


def test_a_week_without_notes_is_an_error_that_names_the_weeks_with_notes(content, settings):
    with pytest.raises(UsageError) as caught:
        issue_of(content, settings, "2016-W30")
    assert "2016-W30" in str(caught.value) and "2016-W28, 2016-W26" in str(caught.value)
    assert "--allow-empty" in str(caught.value)
    empty = issue_of(content, settings, "2016-W30", allow_empty=True)
    text, html = render(empty, content, settings, SECRET, NOW).parts(PREVIEW)
    assert "이번 주에는 새 노트가 없습니다" in text and "이번 주에는 새 노트가 없습니다" in html


@pytest.mark.parametrize("text", ["2016-W54", "2015-W53x", "２０１６-W28", "2016-28", "W28"])
def test_a_week_must_be_an_iso_week(text):
    with pytest.raises(UsageError, match="ISO week"):
        IsoWeek.parse(text)


def test_weeks_are_iso_weeks_in_seoul():
    assert IsoWeek.parse("2015-W53").monday == dt.date(2015, 12, 28)
    assert IsoWeek.parse("2015-W53").label == "2015년 12월 28일~2016년 1월 3일"
    assert IsoWeek.parse("2016-W26").label == "2016년 6월 27일~7월 3일"
    # Sunday 23:30 UTC is Monday 08:30 in Seoul: already the next week there
    assert current_week(dt.datetime(2016, 7, 17, 23, 30, tzinfo=dt.UTC).astimezone(SEOUL).date()).name == "2016-W29"


def test_the_monday_mailing_sends_the_week_that_just_ended():
    monday_9am_seoul = dt.datetime(2026, 12, 7, 0, 0, tzinfo=dt.UTC).astimezone(SEOUL).date()
    assert finished_week(monday_9am_seoul).name == "2026-W49"  # 11월 30일~12월 6일, not the week begun
    assert finished_week(dt.date(2026, 12, 13)).name == "2026-W49"  # on Sunday its own week is not over
    assert finished_week(dt.date(2027, 1, 4)).name == "2026-W53"  # across the year


def test_build_composes_this_week_or_the_latest_week_with_notes(content, tmp_path):
    assert default_week(content, dt.date(2016, 7, 13)).name == WEEK
    assert default_week(content, dt.date(2026, 1, 1)).name == WEEK  # no notes then: the latest week with some
    compose_digest(content, tmp_path / "outbox")
    assert sorted(p.name for p in (tmp_path / "outbox" / WEEK).iterdir()) == \
        ["issue.eml", "issue.html", "issue.json", "issue.txt"]


def test_the_projects_own_content_composes_on_embedded_defaults(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("DIGEST_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(ROOT)
    loaded, _ = load_content(ROOT / "content")
    compose_digest(loaded, tmp_path)
    (folder,) = tmp_path.iterdir()
    record = json.loads((folder / "issue.json").read_text(encoding="utf-8"))
    assert record["week"] == default_week(loaded).name and record["notes"]
    parsed = email.message_from_bytes((folder / "issue.eml").read_bytes(), policy=email.policy.default)
    assert parsed["To"].addresses[0].domain == "example.invalid"  # a preview to nobody real


# --- the editor's intro file ---

@pytest.mark.parametrize("name, text, expected", [
    ("2016-W28.yml", "titel: x\nintro: 안녕\n", "content/digest/2016-W28.yml:1:1: error: unknown field 'titel'"),
    ("2016-W28.yml", "title: x\n", "content/digest/2016-W28.yml:1:1: error: missing required field 'intro'"),
    ("2016-W28.yml", "intro: [a, b]\n", "content/digest/2016-W28.yml:1:8: error: 'intro' must be a single value"),
    ("2016-W28.yml", "title: |\n  한 줄\n  두 줄\nintro: x\n",
     "content/digest/2016-W28.yml:1:8: error: title must be one"),
    ("2016-W28.yml", "intro: " + "가" * 2001 + "\n", "content/digest/2016-W28.yml:1:8: error: intro is 2001"),
    ("2016-W28.yml", "intro: &a x\n", "content/digest/2016-W28.yml:1:8: error: anchor '&a' is not allowed"),
    ("2016-W60.yml", "intro: x\n", "content/digest/2016-W60.yml:1:1: error: '2016-W60' is not an ISO week"),
    ("2016-W30.yml", "intro: x\n", "content/digest/2016-W30.yml:1:1: warning: no published note is dated in 2016-W30"),
])
def test_digest_check_reports_intro_problems_with_file_line_and_column(tmp_path, name, text, expected):
    root = write_content(tmp_path)
    (root / "digest").mkdir()
    (root / "digest" / name).write_text(text, encoding="utf-8")
    lines = check(root).lines()
    assert any(line.startswith(expected) for line in lines), lines


# --- the two parts ---

def test_text_part_wraps_for_a_terminal_and_numbers_its_links(content, settings):
    issue = issue_of(content, settings)
    text, _ = render(issue, content, settings, SECRET, NOW).parts(PREVIEW)
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")  # canonical line ends
    text = text.replace("\r\n", "\n")
    for line in text.splitlines():
        assert width(line) <= 72 or "https://" in line, line
    numbered = re.findall(r"(?m)^(\d+)\. .*\[(\d+)\]$", text)
    assert numbered == [("1", "1"), ("2", "2"), ("3", "3")]
    refs = re.findall(r"(?m)^\[(\d+)\] (\S+)$", text)
    assert refs == [(str(i + 1), n.url) for i, n in enumerate(issue.notes)]
    assert "수신 거부:" in text and "https://subscribe.example.org/unsubscribe/" in text
    assert "<script>" in text  # the plain text shows the title as written, nothing is interpreted


def test_html_part_is_what_mail_clients_need(content, settings):
    _, html = render(issue_of(content, settings), content, settings, SECRET, NOW).parts(PREVIEW)
    assert "<script" not in html.lower() and "&lt;script&gt;" in html
    assert "<link" not in html and "@import" not in html and "@font-face" not in html
    assert all(re.search(r'alt="[^"]+"', tag) for tag in re.findall(r"<img\b[^>]*>", html))  # no tracking pixel
    assert 'width="600"' in html and "prefers-color-scheme: dark" in html and "max-width: 620px" in html
    assert re.search(r'<h2 style="[^"]*font-size: 20px', html)  # CSS inlined at build time
    assert "word-break: keep-all" in html and "Apple SD Gothic Neo" in html
    links = set(re.findall(r'href="([^"]+)"', html))
    assert all(u.startswith(("https://notes.example.org/", "https://subscribe.example.org/")) for u in links)
    assert any("/unsubscribe/" in u for u in links) and any("/preferences/" in u for u in links)


def test_a_title_with_newlines_and_a_huge_summary_stay_one_line_and_short(content, settings):
    note = content.published[0]
    huge = replace(note, title="첫 줄\n둘째 줄\r\nBcc: victim@example.org", summary="요약 " * 500_000)
    bigger = replace(content, notes=(huge,) + content.notes[1:])
    issue = compose(bigger, IsoWeek.of(note.date), settings.site_url)
    template = render(issue, bigger, settings, SECRET, NOW)
    message = template.message(PREVIEW)
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert "첫 줄 둘째 줄 Bcc: victim@example.org" in parsed["Subject"] or len(issue.notes) > 1
    text = parsed.get_body(("plain",)).get_content()
    assert "첫 줄 둘째 줄 Bcc: victim@example.org" in text and "…" in text
    assert len(message) < 200_000  # truncated, not mailed as a megabyte
    assert len(issue.notes) == len([n for n in bigger.published if IsoWeek.of(n.date) == issue.week])  # none lost


# --- headers and personalization ---

def test_a_processed_unsubscribe_mailbox_is_offered_beside_the_one_click_url(content, settings):
    settings = replace(settings, unsubscribe_mailbox="leave@example.org")
    template = render(issue_of(content, settings), content, settings, SECRET, NOW)
    parsed = email.message_from_bytes(template.message(Subscriber(42, "reader@example.org")),
                                      policy=email.policy.default)
    https, mailto = re.findall(r"<([^>]+)>", str(parsed["List-Unsubscribe"]))
    token = https.rsplit("/", 1)[1]
    assert mailto == f"mailto:leave@example.org?subject=unsubscribe%20{token}"


def test_headers_carry_list_unsubscribe_and_one_click_post(content, settings):
    template = render(issue_of(content, settings), content, settings, SECRET, NOW)
    reader = Subscriber(42, "reader@example.org")
    parsed = email.message_from_bytes(template.message(reader), policy=email.policy.default)
    assert parsed["To"] == "reader@example.org"
    assert parsed["From"].addresses[0].display_name == "ML 읽기 노트"
    assert parsed["Subject"] == "[ML 읽기 노트] 이번 주는 강화학습과 역전파"
    assert parsed["List-Id"] == "ML 읽기 노트 <weekly.example.org>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [https] = re.findall(r"<([^>]+)>", str(parsed["List-Unsubscribe"]))  # no mailto nobody reads
    assert https.startswith("https://subscribe.example.org/unsubscribe/")
    token = https.rsplit("/", 1)[1]
    assert verify_token(SECRET, "unsubscribe", token) == 42
    assert verify_token(SECRET, "preferences", token) is None
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    for part in parsed.iter_parts():
        assert https in part.get_content()  # a visible unsubscribe link in both parts
    assert re.fullmatch(r"<2016-W28\.[0-9a-f]{20}@example\.org>", parsed["Message-ID"])
    assert parsed["Date"].datetime == NOW


def test_topics_pick_the_notes_without_rendering_again(content, settings, monkeypatch):
    issue = issue_of(content, settings)
    template = render(issue, content, settings, SECRET, NOW)
    import digest.mail.compose

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again for one recipient")

    monkeypatch.setattr(digest.mail.compose, "environment", no_render)
    monkeypatch.setattr(digest.mail.compose, "_inliner", no_render)
    text, html = template.parts(Subscriber(7, "r@example.org", ("backprop",)))
    text = text.replace("\r\n", "\n")
    assert "게이트로 보는 역전파" in text and "픽셀로 배우는 퐁" not in text
    assert re.findall(r"(?m)^(\d+)\. ", text) == ["1", "2"] and "관심 주제: 역전파" in text
    assert "관심 주제: 역전파" in html and "픽셀로 배우는 퐁" not in html
    assert template.message(Subscriber(8, "s@example.org", ("unknown-topic",))) is None


def test_subject_names_the_first_note_and_how_many_more_without_an_editors_title(tmp_path, settings):
    loaded, _ = load_content(write_content(tmp_path))
    template = render(issue_of(loaded, settings), loaded, settings, SECRET, NOW)
    subject = lambda r: email.message_from_bytes(template.message(r), policy=email.policy.default)["Subject"]  # noqa
    assert subject(Subscriber(1, "a@example.org")) == "[ML 읽기 노트] 픽셀로 배우는 퐁: 정책 경사 입문 외 2편"
    assert subject(Subscriber(2, "b@example.org", ("backprop",))) == "[ML 읽기 노트] 게이트로 보는 역전파 외 1편"


def test_a_topic_readers_heading_and_preview_are_of_the_first_note_they_get(tmp_path, settings):
    loaded, _ = load_content(write_content(tmp_path))  # no editor's title: the first note heads the issue
    template = render(issue_of(loaded, settings), loaded, settings, SECRET, NOW)
    text, html = template.parts(Subscriber(2, "b@example.org", ("backprop",)))  # not on the first note's topic
    summary = "덧셈, 곱셈, 최댓값 게이트가 기울기를 어떻게 흘려보내는지 그림으로 본다."
    assert "<title>게이트로 보는 역전파</title>" in html and re.search(r"<h1[^>]*>게이트로 보는 역전파</h1>", html)
    assert re.search(r'<div class="preheader"[^>]*>' + re.escape(summary), html)
    assert "퐁" not in html.split("<h2", 1)[0] and text.splitlines()[4] == "게이트로 보는 역전파"
    everyone = template.parts(Subscriber(1, "a@example.org"))[1]
    assert re.search(r"<h1[^>]*>픽셀로 배우는 퐁: 정책 경사 입문</h1>", everyone)


def test_fast_message_equals_what_the_email_package_builds(content, settings):
    """Substituted bytes read the same as an EmailMessage built the slow way with the same policy."""
    template = render(issue_of(content, settings), content, settings, SECRET, NOW)
    reader = Subscriber(5, "reader@example.org", ("backprop", "tools"))
    fast = email.message_from_bytes(template.message(reader), policy=email.policy.default)
    text, html = template.parts(reader)
    slow = EmailMessage(policy=POLICY)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                 "List-Unsubscribe-Post"):
        slow[name] = str(fast[name])
    slow.set_content(text)
    slow.add_alternative(html, subtype="html")
    again = email.message_from_bytes(slow.as_bytes(), policy=email.policy.default)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert " ".join(str(fast[name]).split()) == " ".join(str(again[name]).split()), name
    for a, b in zip(fast.iter_parts(), again.iter_parts(), strict=True):
        assert a.get_content_type() == b.get_content_type()
        assert a.get_content().replace("\r\n", "\n") == b.get_content().replace("\r\n", "\n")


def test_a_second_parser_reads_the_same_message(content, settings):
    template = render(issue_of(content, settings), content, settings, SECRET, NOW)
    raw = template.message(Subscriber(3, "reader@example.org"))
    ours = email.message_from_bytes(raw, policy=email.policy.default)
    perl = perl_parse(raw)
    assert perl["subject"] == ours["Subject"] == "[ML 읽기 노트] 이번 주는 강화학습과 역전파"
    assert email.utils.parseaddr(perl["from"]) == ("ML 읽기 노트", "digest@example.org")
    assert perl["to"] == "reader@example.org"
    assert perl["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
    assert [p["type"].split(";")[0] for p in perl["parts"]] == ["text/plain", "text/html"]
    for mine, theirs in zip(ours.iter_parts(), perl["parts"], strict=True):
        assert theirs["body"].replace("\r\n", "\n") == mine.get_content().replace("\r\n", "\n")


# --- outbox files and golden outputs ---

def test_issue_command_writes_the_four_files(tmp_path, monkeypatch, capsys):
    root = write_content(tmp_path, intro=INTRO)
    for name, value in mail_env().items():
        monkeypatch.setenv(name, value)
    assert cli.main(["issue", "--week", WEEK, "--content", str(root), "--outbox", str(tmp_path / "out")]) == 0
    assert "3 note(s)" in capsys.readouterr().out
    assert cli.main(["issue", "--week", "2016-W30", "--content", str(root), "--outbox", str(tmp_path / "out")]) == 2
    assert "weeks with notes: 2016-W28, 2016-W26" in capsys.readouterr().err


def test_golden_issue_files(content, settings, tmp_path):
    folder = write_outbox(issue_of(content, settings), content, settings, tmp_path, now=NOW)
    # a browser opening issue.html looks for the charset in the first 1,024 bytes
    assert 0 < (folder / "issue.html").read_bytes().find(b'<meta charset="utf-8">') < 100
    for name in ("issue.html", "issue.txt", "issue.json"):
        golden(f"{WEEK}/{name}", (folder / name).read_text(encoding="utf-8"))
    message = (folder / "issue.eml").read_bytes()
    assert b"\n" not in message.replace(b"\r\n", b"") and message.isascii()  # CRLF only, 7-bit
    golden(f"{WEEK}/issue.eml", message)


def test_golden_personalized_parts(content, settings):
    template = render(issue_of(content, settings), content, settings, SECRET, NOW)
    text, html = template.parts(Subscriber(7, "reader@example.org", ("backprop",)))
    golden(f"{WEEK}/personalized.txt", text)


def test_golden_web_page_and_feed(content, settings):
    issue = issue_of(content, settings)
    golden(f"{WEEK}/web.md", web_page(issue))
    golden("feed.xml", issues_feed([issue, issue_of(content, settings, "2016-W26")], settings.site_url))


# --- the site's page and feed ---

def test_web_pages_and_atom_feed_of_issues(content, settings):
    pages, files = web_pages(all_issues(content, settings.site_url), settings.site_url)
    assert [p for p, _ in pages] == ["digest/index.md", "digest/2016-W28.md", "digest/2016-W26.md"]
    page = dict(pages)["digest/2016-W28.md"]
    assert page.startswith("---\ntitle: \"이번 주는 강화학습과 역전파\"\n")
    assert "<script>" not in page and "&lt;script&gt;" in page
    (path, xml), = files
    assert path == "digest/feed.xml"
    feed = ET.fromstring(xml)
    atom = "{http://www.w3.org/2005/Atom}"
    entries = feed.findall(f"{atom}entry")
    assert [e.find(f"{atom}id").text for e in entries] == [
        "https://notes.example.org/digest/2016-W28/", "https://notes.example.org/digest/2016-W26/"]
    html = entries[-1].find(f"{atom}content").text  # HTML, escaped once as XML text
    assert html.startswith('<h2><a href="https://notes.example.org/notes/2016/older-week/">지난주의 노트</a>')
    tricky = entries[0].find(f"{atom}content").text
    assert "&lt;script&gt;" in tricky and "<script>" not in tricky  # and the title escaped as HTML in it


def test_the_sites_extras_hook_takes_the_issue_pages_feed_and_latest_issue(content, settings):
    from digest.pipeline.publish import site_extras
    from digest.site.render import render_site

    site = render_site(content, {}, extras=site_extras(content, settings.site_url))
    pages = {p.path: p.text for p in site.pages}
    assert {"digest/index.md", "digest/2016-W28.md", "digest/2016-W26.md"} <= set(pages)
    assert "digest/feed.xml" in {f.path for f in site.files}
    latest = site_extras(content, settings.site_url).latest_issue
    assert (latest.title, latest.path, latest.date) == ("이번 주는 강화학습과 역전파", "digest/2016-W28.md",
                                                        dt.date(2016, 7, 17))
