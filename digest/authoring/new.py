"""`digest new`: scaffold a note whose only problem is the template text left for its writer.

Every field comes from flags, answers or fetched metadata and passes `digest check`; the body
is a skeleton of headings and instructions, which `digest check` reports until they are
replaced (so a note cannot be published with instructions instead of content).

Values come from flags; missing ones are asked for when a terminal is
attached. Unknown tag, person or kind ids are refused with the nearest id, so
the contributor fixes them before any file exists.

``--arxiv ID`` and ``--url URL`` fetch the title, authors and date first
(``digest.authoring.metadata``): the source is filled, authors found in people.yml are
listed, and unknown authors are proposed as registry entries (``--add-people``
appends them). Every check and fetch happens before anything is written, and
files are written whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from digest.authoring import authors as people_registry
from digest.authoring.metadata import ARXIV_URL_RE, Metadata, fetch_arxiv, fetch_page, parse_arxiv_id
from digest.authoring.romanize import slugify
from digest.content.load import NOTES_DIR, PEOPLE_FILE, SourceFile, load
from digest.content.model import KINDS, SLUG_RE, Person, Source, Tag
from digest.content.validate import SEOUL, TEMPLATE_BODY, TEMPLATE_SUMMARY, _registry, _suggest, unknown_id, url_problem
from digest.content.yamlread import Map, Scalar
from digest.errors import FetchError, UsageError
from digest.files import beside
from digest.templates import environment


@dataclass
class NewNote:
    title: str
    kind: str
    date: dt.date
    slug: str
    summary: str
    tags: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    new_people: list[people_registry.NewPerson] = field(default_factory=list)


def _ask(prompt: str, interactive: bool, default: str = "") -> str:
    if not interactive:
        return default
    shown = f" [{default}]" if default else ""
    answer = input(f"{prompt}{shown}: ").strip()
    return answer or default


def _ask_until(prompt: str, interactive: bool, default: str, problem: Callable[[str], str | None],
               given: str | None = None) -> str:
    """A flag's value, else an answer; an answer with a problem is asked again (the answers before it
    stay), a flag's or a default's fails the command with the problem."""
    if given or not interactive:
        value = given or default
        if (found := problem(value)) is not None:
            raise UsageError(found)
        return value
    while (found := problem(answer := _ask(prompt, interactive, default))) is not None:
        print(f"  {found}", file=sys.stderr)
    return answer


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _unknown(registry: dict, what: str, registry_file: str) -> Callable[[str], str | None]:
    def problem(text: str) -> str | None:
        ident = next((i for i in _split(text) if i not in registry), None)
        return None if ident is None else "{}: {}".format(*unknown_id(ident, registry, what, registry_file))
    return problem


def _kind_problem(kind: str) -> str | None:
    return None if kind in KINDS else f"unknown kind '{kind}': {_suggest(kind, KINDS) or 'one of ' + ', '.join(KINDS)}"


def _slug_problem(slug: str) -> str | None:
    return None if SLUG_RE.match(slug or "") else f"slug '{slug}' must be lowercase letters, digits and hyphens"


def _urls_problem(text: str) -> str | None:
    return next((f"source '{url}' {problem}" for url in _split(text) if (problem := url_problem(url))), None)


def collect(args, tags: dict, people: dict, interactive: bool, meta: Metadata | None = None) -> NewNote:
    """The note to write, from flags, answers and fetched ``meta``; refuses what `digest check` would."""
    title = args.title or _ask("제목 (title, 한국어로)", interactive, meta.title if meta else "")
    if not title:
        raise UsageError("a title is needed: --title '...'")
    kind = _ask_until(f"종류 (kind: {', '.join(KINDS)})", interactive, "paper", _kind_problem, args.kind)
    date_text = args.date or dt.datetime.now(SEOUL).date().isoformat()
    try:
        date = dt.date.fromisoformat(date_text)
    except ValueError:
        raise UsageError(f"--date '{date_text}' is not a date; write YYYY-MM-DD") from None
    slug = _ask_until("slug (URL 이름)", interactive, slugify(meta.title if meta else title), _slug_problem, args.slug)
    found, unknown = people_registry.match(meta.authors, people) if meta else ([], [])
    # Without an answer the summary is the template's placeholder, which `digest check` reports until
    # it is replaced; --no-input fails instead, as its help says ("fail on missing values").
    summary = args.summary or (_ask("요약 (summary)", interactive, TEMPLATE_SUMMARY) if interactive else "")
    if not summary:
        raise UsageError("a summary is needed: --summary '한두 문장 요약' (one or two sentences)")
    listed = (", ".join(args.person + [i for i in found if i not in args.person]) if args.person else None)
    note = NewNote(
        title=title, kind=kind, date=date, slug=slug, summary=summary,
        tags=_split(_ask_until("태그 id, 쉼표로 구분 (tags)", interactive, "", _unknown(tags, "tag", "tags.yml"),
                               ", ".join(args.tag))),
        people=_split(_ask_until("인물 id, 쉼표로 구분 (people)", interactive, ", ".join(found),
                                 _unknown(people, "person", "people.yml"), listed)),
    )
    if args.source:  # a URL may hold a comma: flags are checked one by one, not joined
        urls = args.source
        for url in urls:
            if problem := url_problem(url):
                raise UsageError(f"source '{url}' {problem}")
    else:  # fetched metadata is a source already: ask for no more
        urls = _split(_ask_until("원문 URL, 쉼표로 구분 (sources)", interactive and meta is None, "", _urls_problem))
    fetched = [Source(url=meta.url, title=meta.title, arxiv=meta.arxiv, date=meta.date)] if meta else []
    note.sources = fetched + [Source(url=url, title=url) for url in urls]
    if not note.sources:
        raise UsageError("at least one source link is needed: --source URL")
    _new_people(note, unknown, getattr(args, "add_people", False), people, interactive)
    return note


def _new_people(note: NewNote, unknown: list[str], add: bool, people: dict, interactive: bool) -> None:
    """Authors missing from people.yml become proposed entries; with ``add`` they join the note too."""
    ko_names = {name: _ask(f"{name}의 한글 이름 (ko)", interactive, name) for name in unknown} if add else {}
    note.new_people = people_registry.propose(unknown, people, ko_names)
    if add:
        note.people += [p.id for p in note.new_people if p.id not in note.people]


def fetch_metadata(args) -> Metadata | None:
    """Metadata for --arxiv or --url, or None; a bad id fails before any request."""
    try:
        return _fetch_metadata(args)
    except FetchError as exc:  # offline, or the site is down: the note can still be written by hand
        source = f"https://arxiv.org/abs/{args.arxiv}" if getattr(args, "arxiv", None) else args.url
        raise FetchError(f"{exc}; or write it without fetching: digest new --title \"…\" --kind paper "
                         f"--source {source}") from None


def _fetch_metadata(args) -> Metadata | None:
    if getattr(args, "arxiv", None):
        return fetch_arxiv(parse_arxiv_id(args.arxiv))
    if getattr(args, "url", None):
        if problem := url_problem(args.url):
            raise UsageError(f"--url '{args.url}' {problem}")
        if ARXIV_URL_RE.match(args.url):  # an arXiv page: the API knows more than its HTML
            return fetch_arxiv(parse_arxiv_id(args.url))
        return fetch_page(args.url)
    return None


def render(note: NewNote, path: str) -> str:
    # the body's sentences are the ones `digest check` reports until the writer replaces them
    return environment().get_template("note.yml.j2").render(path=path, placeholders=TEMPLATE_BODY, **note.__dict__)


def note_path(content_root: Path, note: NewNote) -> Path:
    return content_root / NOTES_DIR / str(note.date.year) / f"{note.slug}.yml"


def write_new(content_root: Path, note: NewNote, add_people: bool = False) -> Path:
    """Write the note (and, with ``add_people``, the grown people.yml): both whole, or neither."""
    path = note_path(content_root, note)
    if path.exists():
        raise UsageError(f"{path} already exists; choose another --slug")
    people_file = content_root / PEOPLE_FILE
    people_text = None
    if add_people and note.new_people:
        people_text = people_registry.appended_text(people_file, note.new_people)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = beside(path, render(note, path.as_posix()))
    try:
        if people_text is not None:
            os.replace(beside(people_file, people_text), people_file)
        os.replace(tmp, path)  # never leave a half-written note
    finally:
        tmp.unlink(missing_ok=True)
    return path


def used_slugs(notes: list[SourceFile]) -> dict[str, str]:
    """slug -> path of the note using it, from every note of every year (its field, else its file name)."""
    used = {}
    for source in notes:
        used.setdefault(PurePosixPath(source.path).stem, source.path)
        node = source.node.entries.get("slug", (None, None))[1] if isinstance(source.node, Map) else None
        if isinstance(node, Scalar) and node.value:
            used[node.value] = source.path
    return used


def refuse_used_slug(slug: str, notes: list[SourceFile]) -> None:
    """A slug names one note's URL for good: refuse one that any note (of any year) already has."""
    used = used_slugs(notes)
    if slug not in used:
        return
    free = next(f"{slug}-{n}" for n in range(2, len(used) + 3) if f"{slug}-{n}" not in used)
    raise UsageError(f"slug '{slug}' is already used by {used[slug]}; choose another slug, e.g. --slug {free} "
                     "or a word that tells the two notes apart")


def new_note_from_args(args) -> Path:
    raw = load(args.content)
    tags = _registry(raw.tags, Tag, [])
    people = _registry(raw.people, Person, [])
    interactive = sys.stdin.isatty() and not args.no_input
    meta = fetch_metadata(args)
    note = collect(args, tags, people, interactive, meta)
    refuse_used_slug(note.slug, raw.notes)
    add_people = getattr(args, "add_people", False)
    path = write_new(args.content, note, add_people)
    _report_people(note, args.content / PEOPLE_FILE, add_people)
    return path


def _report_people(note: NewNote, people_file: Path, added: bool) -> None:
    if not note.new_people:
        return
    names = ", ".join(p.en for p in note.new_people)
    if added:
        print(f"added {len(note.new_people)} person(s) to {people_file}: {names}")
        if any(p.ko_missing for p in note.new_people):
            print(f"  write their Hangul names in 'ko:' of {people_file} (marked '한글 이름으로 바꾸세요')")
        return
    print(f"{len(note.new_people)} author(s) are not in {people_file}: {names}")
    print(f"to credit them, paste this into {people_file}, write each 'ko:' in Hangul, and add the ids "
          "to the note's people (next time, --add-people does this):")
    print(people_registry.render(note.new_people), end="")
