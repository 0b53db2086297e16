"""Stage: compose — one ISO week's notes → the issue records → a message template and previews.

    IsoWeek, Issue, IssueNote    typed records; weeks are ISO weeks in Asia/Seoul
    compose(content, week)       the issue of a week (UsageError naming the weeks that have notes)
    render(issue, settings)      Jinja2 templates in templates/email/, rendered once, CSS inlined once
                                 (css-inline), split into a MessageTemplate filled per recipient
    write_outbox(...)            outbox/<yyyy>-W<ww>/issue.html|txt|eml|json: a preview to nobody real
    web_pages / issues_feed      the site's page per issue and the Atom feed of issues (pure functions)
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import unicodedata
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import css_inline

from digest.content.model import SEOUL, WEEK_FILE_RE, Content, Note
from digest.errors import UsageError
from digest.files import write_atomic
from digest.mail.message import MailSettings, Marks, MessageTemplate, fold_address, header_text
from digest.subscribers.store import Subscriber
from digest.templates import environment

WIDTH = 72  # terminal columns of the text part; Hangul counts two
PREVIEW = Subscriber(0, "preview@example.invalid")
PREVIEW_TO = fold_address("To", "미리보기", PREVIEW.address)  # nobody real
BLANK_LINES = re.compile(r"\n{3,}")  # the text part: never more than one blank line in a row
PREVIEW_SECRET = b"preview: links in previews unsubscribe nobody"


@dataclass(frozen=True, order=True)
class IsoWeek:
    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        found = WEEK_FILE_RE.fullmatch(text.strip())
        try:
            if found:
                dt.date.fromisocalendar(int(found[1]), int(found[2]), 1)
                return cls(int(found[1]), int(found[2]))
        except ValueError:
            pass
        raise UsageError(f"'{text}' is not an ISO week; write it like 2016-W28")

    @classmethod
    def of(cls, date: dt.date) -> IsoWeek:
        year, week, _ = date.isocalendar()
        return cls(year, week)

    @property
    def name(self) -> str:
        return f"{self.year}-W{self.week:02d}"

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 1)

    @property
    def sunday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 7)

    @property
    def label(self) -> str:
        """'2016년 7월 11일~17일', or across months '2016년 6월 27일~7월 3일'."""
        a, b = self.monday, self.sunday
        end = f"{b.day}일" if a.month == b.month else f"{b.month}월 {b.day}일"
        if a.year != b.year:
            end = f"{b.year}년 {end}"
        return f"{a.year}년 {a.month}월 {a.day}일~{end}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class IssueNote:
    slug: str
    title: str
    kind: str
    kind_label: str
    date: dt.date
    summary: str
    url: str  # absolute
    tag_ids: tuple[str, ...]
    tags: tuple[str, ...]  # names

    @property
    def date_label(self) -> str:
        return f"{self.date.year}년 {self.date.month}월 {self.date.day}일"


@dataclass(frozen=True)
class Issue:
    week: IsoWeek
    notes: tuple[IssueNote, ...]
    headline: str | None  # the editor's title, if any
    intro: tuple[str, ...]  # paragraphs
    site_url: str
    web_url: str  # this issue's page on the site
    preheader: str  # the line mail clients show after the subject

    @property
    def id(self) -> str:
        return self.week.name

    @property
    def title(self) -> str:
        """The editor's headline, else the first note's title."""
        return self.headline or (self.notes[0].title if self.notes else f"{self.week.label}의 다이제스트")


def current_week(today: dt.date | None = None) -> IsoWeek:
    return IsoWeek.of(today or dt.datetime.now(SEOUL).date())


def finished_week(today: dt.date | None = None) -> IsoWeek:
    """The latest week whose Sunday is over in Seoul: what the Monday mailing sends. Sending the
    current week instead would mail Monday's notes and drop the six days after them for good."""
    return IsoWeek.of((today or dt.datetime.now(SEOUL).date()) - dt.timedelta(days=7))


def weeks_with_notes(content: Content) -> list[IsoWeek]:
    """Newest first."""
    return sorted({IsoWeek.of(n.date) for n in content.published}, reverse=True)


def default_week(content: Content, today: dt.date | None = None) -> IsoWeek:
    """This week if it has notes, else the latest week that has some (what `digest build` composes)."""
    week, weeks = current_week(today), weeks_with_notes(content)
    return week if week in weeks or not weeks else weeks[0]


def issue_page(week: IsoWeek) -> str:
    """Page path of an issue in the site's docs tree."""
    return f"digest/{week.name}.md"


def _paragraphs(text: str) -> tuple[str, ...]:
    return tuple(header_text(p, limit=2000) for p in text.split("\n\n") if p.strip())


def _issue_note(note: Note, content: Content, site_url: str) -> IssueNote:
    return IssueNote(slug=note.slug, title=header_text(note.title), kind=note.kind, kind_label=note.kind_label,
                     date=note.date, summary=header_text(note.summary, limit=600), url=site_url + note.url,
                     tag_ids=note.tags, tags=tuple(header_text(content.tags[t].name) for t in note.tags))


ALLOW_EMPTY = "pass --allow-empty to compose an issue anyway"


def compose(content: Content, week: IsoWeek, site_url: str, allow_empty: bool = False,
            if_empty: str = ALLOW_EMPTY) -> Issue:
    """The issue of ``week``: its published notes, oldest first, and the editor's intro if any.

    ``if_empty`` ends the error for a week without notes: the way out the calling command offers.
    """
    notes = [n for n in content.published if IsoWeek.of(n.date) == week]
    if not notes and not allow_empty:
        weeks = weeks_with_notes(content)
        shown = ", ".join(w.name for w in weeks[:8]) + (" ..." if len(weeks) > 8 else "")
        raise UsageError(f"no notes are dated in {week.name} ({week.label}); weeks with notes: {shown or 'none'}; "
                         + if_empty)
    return _issue(content, week, notes, site_url)


def _issue(content: Content, week: IsoWeek, notes: list[Note], site_url: str) -> Issue:
    items = tuple(_issue_note(n, content, site_url) for n in sorted(notes, key=lambda n: (n.date, n.slug)))
    intro = content.intros.get(week.name)
    headline = header_text(intro.title) if intro and intro.title else None
    paragraphs = _paragraphs(intro.intro) if intro else ()
    preheader = paragraphs[0] if paragraphs else (items[0].summary if items else "")
    return Issue(week, items, headline, paragraphs, site_url, site_url + f"digest/{week.name}/",
                 header_text(preheader, limit=140))


# --- text helpers ----------------------------------------------------------------------------

def width(text: str) -> int:
    """Terminal columns: wide and full-width characters (Hangul, emoji) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, indent: int = 0, first: bool = True, columns: int = WIDTH) -> str:
    """Word-wrap by display width; long words (URLs) stay whole on their own line."""
    pad = " " * indent
    lines, line, used = [], [], indent if first else 0
    for word in text.split():
        w = width(word)
        if line and used + 1 + w > columns:
            lines.append(" ".join(line))
            line, used = [], indent
        used += w + (1 if line else 0)
        line.append(word)
    if line:
        lines.append(" ".join(line))
    return "\n".join((pad if (i or first) else "") + s for i, s in enumerate(lines))


# --- rendering -------------------------------------------------------------------------------

@cache
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def _subject(issue: Issue, prefix: str):
    def subject(selected: tuple[int, ...]) -> str:
        if issue.headline or not selected:
            return f"[{prefix}] {header_text(issue.title, limit=90)}"
        more = f" 외 {len(selected) - 1}편" if len(selected) > 1 else ""
        return f"[{prefix}] {header_text(issue.notes[selected[0]].title, limit=70)}{more}"
    return subject


def _heading(issue: Issue):
    """The editor's headline for everyone; without one, the first note the reader gets."""
    def heading(selected: tuple[int, ...]) -> tuple[dict[str, bytes], dict[str, bytes]]:
        title, preheader = issue.title, issue.preheader
        if not issue.headline and selected:
            first = issue.notes[selected[0]]
            title, preheader = first.title, header_text(first.summary, limit=140)
        return ({"title": wrap(title).encode(), "preheader": preheader.encode()},
                {"title": _escape(title).encode(), "preheader": _escape(preheader).encode()})
    return heading


def _topics(content: Content):
    def topics(chosen: tuple[str, ...]) -> tuple[str, str]:
        if not chosen:
            text = "모든 주제의 새 노트를 보내 드립니다."
        else:
            names = [header_text(content.tags[t].name) if t in content.tags else t for t in chosen]
            text = "관심 주제: " + ", ".join(names)
        return text, _escape(text)
    return topics


CHARSET_META = '<meta charset="utf-8">'


def _charset_first(html: str) -> str:
    """The charset declaration first in <head>: the inliner puts the kept @media rules ahead of it,
    and a browser opening issue.html looks for it in the first 1,024 bytes only."""
    if CHARSET_META not in html:
        return html
    return html.replace(CHARSET_META, "", 1).replace("<head>", "<head>" + CHARSET_META, 1)


def _crlf(text: str) -> str:
    """Canonical text/* line ends (RFC 2046), as parts are base64-encoded as they are."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def render(issue: Issue, content: Content, settings: MailSettings, secret: bytes,
           now: dt.datetime | None = None, link_key: bytes | None = None) -> MessageTemplate:
    """Render both parts once (CSS inlined once) and keep them as layouts for every recipient.

    ``secret`` is the store's log key (Message-IDs); ``link_key`` signs the unsubscribe and
    preferences links: the store's current signing key (``store.keyring().current``). Left out
    (previews, tests), the links are signed with ``secret``, which a store never rotated still
    verifies."""
    marks = Marks(secrets.token_hex(8))
    context = {"issue": issue, "settings": settings, "begin": marks.begin, "end": marks.end, "slot": marks.slot,
               "wrap": wrap, "rule": "─" * (WIDTH // 2)}
    env = environment()
    html = _crlf(_charset_first(_inliner().inline(env.get_template("email/issue.html.j2").render(**context)))
                 .rstrip() + "\n")
    text = _crlf(BLANK_LINES.sub("\n\n", env.get_template("email/issue.txt.j2").render(**context)))
    return MessageTemplate(
        issue=issue.id, text=marks.parse(text), html=marks.parse(html),
        note_tags=tuple(frozenset(n.tag_ids) for n in issue.notes),
        subject=_subject(issue, settings.list_name), topics=_topics(content), heading=_heading(issue),
        settings=settings,
        secret=secret, link_key=secret if link_key is None else link_key,
        date=now or dt.datetime.now(SEOUL).replace(microsecond=0), signer=settings.signer)


# --- outbox ----------------------------------------------------------------------------------

def issue_record(issue: Issue, template: MessageTemplate) -> dict:
    """What went into the issue, as issue.json shows it."""
    record = asdict(issue)
    record["title"] = issue.title
    record["week"] = issue.week.name
    record["label"] = issue.week.label
    record["subject"] = template.subject(template.select(()))
    for note in record["notes"]:
        note["date"] = note["date"].isoformat()
    return record


def write_outbox(issue: Issue, content: Content, settings: MailSettings, outbox: Path,
                 now: dt.datetime | None = None) -> Path:
    """outbox/<week>/issue.html|txt|eml|json, addressed to nobody real, links to no real subscriber."""
    template = render(issue, content, settings, PREVIEW_SECRET, now)
    folder = Path(outbox) / issue.id
    folder.mkdir(parents=True, exist_ok=True)
    text, html = (part.replace("\r\n", "\n") for part in template.parts(PREVIEW))  # files for people to open
    files = {"issue.html": html.encode(), "issue.txt": text.encode(),
             "issue.eml": template.message(PREVIEW, to=PREVIEW_TO) or b"",
             "issue.json": (json.dumps(issue_record(issue, template), ensure_ascii=False, indent=2) + "\n").encode()}
    for name, data in files.items():
        write_atomic(folder / name, data)
    return folder


# --- the site's pages and feed ---------------------------------------------------------------

def all_issues(content: Content, site_url: str) -> list[Issue]:
    """Every week with notes, newest first (one pass over the notes: a site has a thousand weeks)."""
    by_week: dict[IsoWeek, list[Note]] = {}
    for note in content.published:
        by_week.setdefault(IsoWeek.of(note.date), []).append(note)
    return [_issue(content, week, by_week[week], site_url) for week in sorted(by_week, reverse=True)]


def web_page(issue: Issue) -> str:
    """The site's page of one issue: Markdown with the site's front matter."""
    return environment().get_template("email/web.md.j2").render(issue=issue, esc=_escape)


def web_index(issues: list[Issue]) -> str:
    return environment().get_template("email/web_index.md.j2").render(issues=issues, esc=_escape)


def issues_feed(issues: list[Issue], site_url: str, updated: dt.datetime | None = None) -> str:
    """Atom feed of issues (newest first); ``updated`` defaults to the newest issue's Sunday."""
    def stamp(date: dt.date) -> str:
        return dt.datetime.combine(date, dt.time(9), SEOUL).isoformat()

    def content_html(issue: Issue) -> str:  # plain str: the template's autoescape escapes it once, for XML
        return "".join(f'<h2><a href="{_escape(n.url)}">{_escape(n.title)}</a></h2><p>{_escape(n.summary)}</p>'
                       for n in issue.notes)

    newest = issues[0].week.sunday if issues else dt.date(2000, 1, 1)
    return environment().get_template("email/feed.xml.j2").render(
        issues=issues, site_url=site_url, feed_url=site_url + "digest/feed.xml",
        updated=updated.isoformat() if updated else stamp(newest), stamp=stamp, content_html=content_html)


def web_pages(issues: list[Issue], site_url: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(pages, files) for the site from ``all_issues``: digest/index.md, digest/<week>.md, and digest/feed.xml."""
    pages = [("digest/index.md", web_index(issues))] + [(issue_page(i.week), web_page(i)) for i in issues]
    return pages, [("digest/feed.xml", issues_feed(issues, site_url))]
