"""`digest new`: scaffold a note that passes `digest check` as written.

Values come from flags; missing ones are asked for when a terminal is
attached. Unknown tag, person or kind ids are refused with the nearest id, so
the contributor fixes them before any file exists.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .load import NOTES_DIR, load
from .model import KINDS, SLUG_RE, Person, Tag
from .romanize import slugify
from .templates import environment
from .validate import SEOUL, _registry, _suggest, url_problem


@dataclass
class NewNote:
    title: str
    kind: str
    date: dt.date
    slug: str
    summary: str
    tags: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _ask(prompt: str, interactive: bool, default: str = "") -> str:
    if not interactive:
        return default
    shown = f" [{default}]" if default else ""
    answer = input(f"{prompt}{shown}: ").strip()
    return answer or default


def _ask_list(prompt: str, interactive: bool) -> list[str]:
    return [x.strip() for x in _ask(prompt, interactive).split(",") if x.strip()]


def _known(ids: list[str], registry: dict, what: str, registry_file: str) -> None:
    for ident in ids:
        if ident not in registry:
            hint = _suggest(ident, registry) or f"add it to content/{registry_file} first"
            raise UsageError(f"unknown {what} '{ident}': {hint}")


def collect(args, tags: dict, people: dict, interactive: bool) -> NewNote:
    title = args.title or _ask("제목 (title)", interactive)
    if not title:
        raise UsageError("a title is needed: --title '...'")
    kind = args.kind or _ask(f"종류 (kind: {', '.join(KINDS)})", interactive, "paper")
    if kind not in KINDS:
        raise UsageError(f"unknown kind '{kind}': {_suggest(kind, KINDS) or 'one of ' + ', '.join(KINDS)}")
    date_text = args.date or dt.datetime.now(SEOUL).date().isoformat()
    try:
        date = dt.date.fromisoformat(date_text)
    except ValueError:
        raise UsageError(f"--date '{date_text}' is not a date; write YYYY-MM-DD") from None
    slug = args.slug or _ask("slug (URL 이름)", interactive, slugify(title))
    if not SLUG_RE.match(slug or ""):
        raise UsageError(f"slug '{slug}' must be lowercase letters, digits and hyphens; pass --slug")
    note = NewNote(
        title=title, kind=kind, date=date, slug=slug,
        summary=args.summary or _ask("요약 (summary)", interactive, "한두 문장으로 요약을 쓰세요."),
        tags=args.tag or _ask_list("태그 id, 쉼표로 구분 (tags)", interactive),
        people=args.person or _ask_list("인물 id, 쉼표로 구분 (people)", interactive),
        sources=args.source or _ask_list("원문 URL, 쉼표로 구분 (sources)", interactive),
    )
    _known(note.tags, tags, "tag", "tags.yml")
    _known(note.people, people, "person", "people.yml")
    if not note.sources:
        raise UsageError("at least one source link is needed: --source URL")
    for url in note.sources:
        if problem := url_problem(url):
            raise UsageError(f"source '{url}' {problem}")
    return note


def render(note: NewNote, path: str) -> str:
    return environment().get_template("note.yml.j2").render(path=path, **note.__dict__)


def write_new(content_root: Path, note: NewNote) -> Path:
    path = content_root / NOTES_DIR / str(note.date.year) / f"{note.slug}.yml"
    if path.exists():
        raise UsageError(f"{path} already exists; choose another --slug")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(note, path.as_posix())
    tmp = path.with_suffix(".yml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # never leave a half-written note
    return path


def new_note_from_args(args) -> Path:
    raw = load(args.content)
    tags = _registry(raw.tags, Tag, [])
    people = _registry(raw.people, Person, [])
    interactive = sys.stdin.isatty() and not args.no_input
    note = collect(args, tags, people, interactive)
    return write_new(args.content, note)
