"""Stage 4, render site: content records → Markdown pages, feeds and a search index, with no MkDocs in sight.

``render_site`` is a pure function; ``digest.mkdocs_adapter`` feeds its pages to
MkDocs as virtual files. Moving to another generator (Zensical, ProperDocs)
means a new adapter, not new rendering.

Every page is Markdown whose structure (cards, meta lines, pagers) is HTML written
by the templates in ``templates/site/``, with every YAML field auto-escaped; only
a note's body is Markdown from the note. The adapter sanitizes the HTML that
MkDocs makes of it (``digest.site.sanitize``). Links inside that HTML are relative to
the page's own URL (``href``), so the site works under any base path.

Every page's size is independent of the number of notes: lists are paginated and
notes are kept out of the navigation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import posixpath
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import PIL.Image
from markupsafe import Markup, escape

from digest.content import directives
from digest.content.model import KINDS, Content, Note
from digest.errors import DigestError, ReferenceRunError
from digest.refs.engine import Reference, Results
from digest.site import search
from digest.site.records import Asset, Extras, Page, Site, SiteConfig, TextFile


class DuplicatePageError(DigestError):
    """Raised when two pages would be written to one path (Pelican's writer rule)."""


@dataclass(frozen=True)
class Listing:
    """One page of a paginated list of notes."""

    path: str
    notes: Sequence[Note]
    number: int  # 1-based
    count: int  # pages in the whole list
    first: str  # path of page 1
    pages: tuple[str, ...]  # paths of every page, in order
    total: int  # notes in the whole list

    @property
    def previous(self) -> str | None:
        return self.pages[self.number - 2] if self.number > 1 else None

    @property
    def next(self) -> str | None:
        return self.pages[self.number] if self.number < self.count else None


# --- paths and URLs ---------------------------------------------------------------------------

def note_page(note: Note) -> str:
    return f"notes/{note.date.year}/{note.slug}.md"


def tag_page(tag_id: str) -> str:
    return f"tags/{tag_id}.md"


def person_page(person_id: str) -> str:
    return f"people/{person_id}.md"


def kind_page(kind: str) -> str:
    return f"kinds/{kind}.md"


def month_page(year: int, month: int) -> str:
    return f"archive/{year}/{month:02d}.md"


def year_page(year: int) -> str:
    return f"archive/{year}.md"


def url_of(path: str) -> str:
    """The URL MkDocs gives a page or file (directory URLs): "tags/x.md" → "tags/x/", "index.md" → ""."""
    if not path.endswith(".md"):
        return path
    stem = path[:-3]
    if stem == "index":
        return ""
    if stem.endswith("/index"):
        return stem[: -len("index")]
    return stem + "/"


def relative_url(target: str, here: str) -> str:
    """Link from the page at ``here`` to ``target`` (both docs paths), relative to the page's URL.

    Up to the site's root, then down: not always the shortest link, but one string
    operation per link, and there are tens of thousands of links in a large site.
    """
    return up_to_root(here) + url_of(target) or "./"


def up_to_root(here: str) -> str:
    """From the page at ``here`` back to the site's root: "../" per folder of its URL."""
    return "../" * url_of(here).count("/")


def paginate(base: str, notes: Sequence[Note], size: int) -> list[Listing]:
    """``base`` "tags/x" → "tags/x.md", "tags/x/page/2.md", …; an empty list still gets page 1."""
    count = max(1, -(-len(notes) // size))
    paths = tuple(f"{base}.md" if n == 1 else f"{base}/page/{n}.md" for n in range(1, count + 1))
    return [Listing(paths[i], notes[i * size:(i + 1) * size], i + 1, count, paths[0], paths, len(notes))
            for i in range(count)]


# --- templates --------------------------------------------------------------------------------

def korean_date(date: dt.date) -> str:
    return f"{date.year}년 {date.month}월 {date.day}일"


def http_url(url: str | None) -> str | None:
    """The URL if it is http(s), else None: a source is never linked through another scheme."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def front_matter_value(value) -> Markup:
    """A YAML scalar holding HTML-escaped text: the theme inserts meta values into HTML unescaped."""
    return Markup(json.dumps(str(escape(value)), ensure_ascii=False))


def one_line(value) -> str:
    """Text on one line: a newline in a field must not start a Markdown block."""
    return " ".join(str(value).split())


# What Markdown (emphasis, code, links, images) and the math extension would act on. Not ( ):
# arithmatex reads \( as the start of math.
MARKDOWN_ACTIVE = re.compile(r"([\\`*_\[\]$])")


def md_text(value) -> str:
    """A field inside Markdown syntax (an image's alt text, a caption, a list item), shown as written:
    on one line, with what Markdown would act on escaped (a ']' would end an image's alt text)."""
    return MARKDOWN_ACTIVE.sub(r"\\\1", one_line(value))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("digest", "templates/site"),
        autoescape=True,  # every YAML field is escaped unless a template says otherwise
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,  # Markdown reads 4 leading spaces as code: keep HTML at the margin
        keep_trailing_newline=True,
    )
    env.filters.update(meta=front_matter_value, kdate=korean_date, http_url=http_url, one_line=one_line,
                       md_text=md_text)
    env.globals.update(kinds=KINDS)
    return env


@cache
def _template(name: str) -> jinja2.Template:
    """Loaded once: Jinja would check the file's time at each of the thousands of renders."""
    return environment().get_template(name)


ROOT_MARK = "\x01"  # where a card's links start from the site's root; never in valid content


class _Cards:
    """Each note's card, rendered once per build though it appears on about seven pages (home, tags,
    people, kind, month): its links are written from the site's root, and each page puts its own
    way up in front (``relative_url`` builds every link that way)."""

    def __init__(self, content: Content):
        self.content = content
        self.html: dict[str, str] = {}

    def __call__(self, note: Note, here: str) -> Markup:
        html = self.html.get(note.path)
        if html is None:
            html = self.html[note.path] = _template("_card.md.j2").render(
                note=note, content=self.content, note_page=note_page, kind_page=kind_page, tag_page=tag_page,
                href=lambda target: ROOT_MARK + url_of(target))
        return Markup(html.replace(ROOT_MARK, up_to_root(here)))


def _render(template: str, here: str, **context) -> Page:
    """Render a page template; ``href(target)`` links to another page relative to ``here``."""

    def link(target: str) -> str:
        """Markdown link target, relative to this page's source (MkDocs rewrites it)."""
        return posixpath.relpath(target, posixpath.dirname(here) or ".")

    def href(target: str) -> str:
        return relative_url(target, here)

    def body_of(note: Note) -> Markup:
        """The note's Markdown with result directives expanded, and the provenance of each.

        Markup only for Jinja: it is Markdown, and its HTML is sanitized after MkDocs renders it.
        """
        results = _NoteResults(note, context.get("refs", {}), context["config"], here, link)
        body = directives.expand(note.body, results.render)
        return Markup(body + ("\n\n" + results.provenance() if results.cited else ""))

    rendered = _template(template).render(
        link=link, href=href, here=here, note_page=note_page, tag_page=tag_page, person_page=person_page,
        kind_page=kind_page, url_of=url_of, body_of=body_of, part=_part_marker, **context
    )
    return _split_parts(here, rendered)


def _part_marker(name: str) -> Markup:
    """Where a template's HTML or Markdown part starts; NUL never occurs in valid content."""
    return Markup(f"\x00{name}\x00")


def _split_parts(path: str, rendered: str) -> Page:
    """A rendered template → Page: front matter + Markdown part as text, HTML parts around it."""
    parts = {"front": ""}
    name = "front"
    for i, piece in enumerate(rendered.split("\x00")):
        if i % 2:
            if piece in parts:
                raise DigestError(f"{path}: template part '{piece}' appears twice")
            name = piece
        else:
            parts[name] = parts.get(name, "") + piece
    text = parts["front"] + parts.get("markdown", "")
    return Page(path, text, parts.get("before", "").strip(), parts.get("after", "").strip())


def group_notes(content: Content, keys) -> dict:
    """Published notes grouped by ``keys(note)`` (an iterable of keys), newest first within a group."""
    groups: dict = defaultdict(list)
    for note in content.published:  # already newest first
        for key in keys(note):
            groups[key].append(note)
    return groups


def notes_by_tag(content: Content) -> dict[str, list[Note]]:
    return group_notes(content, lambda note: note.tags)


def notes_by_person(content: Content) -> dict[str, list[Note]]:
    return group_notes(content, lambda note: note.people)


def notes_by_kind(content: Content) -> dict[str, list[Note]]:
    return group_notes(content, lambda note: (note.kind,))


def notes_by_month(content: Content) -> dict[tuple[int, int], list[Note]]:
    return group_notes(content, lambda note: ((note.date.year, note.date.month),))


REFS_PAGE = "refs/index.md"  # every reference, its results and the notes citing it


def figure_path(name: str, profile: str, file: str) -> str:
    return f"refs/{name}/{profile}/{file}"


def progress_folder(profile: str) -> str:
    """Where the site keeps the figures of a profile's progress report (beside its results' folder)."""
    return f"{profile}-progress"


ANIMATED_SUFFIXES = (".gif", ".webp")  # figures that move: shown as they are, never linked


def _figure_file(folder: Path, files: list[str]) -> str:
    """An animation (GIF/WebP) as it is; else the lighter of SVG and PNG.

    Line plots are smaller and crisper as SVG; image-like figures (a grid of weights) are far
    smaller as PNG, so the page weight decides.
    """
    for file in files:
        if file.endswith(ANIMATED_SUFFIXES):
            return file
    still = [f for f in files if f.endswith((".svg", ".png"))] or files
    return min(still, key=lambda f: (folder / f).stat().st_size if (folder / f).exists() else 0)


_SVG_SIZE_RE = re.compile(
    r'<svg\b[^>]*?\bwidth="(?P<w>[\d.]+)(?P<wu>pt|px)?"[^>]*?\bheight="(?P<h>[\d.]+)(?P<hu>pt|px)?"')
_CSS_PX = {"pt": 4 / 3, "px": 1.0, None: 1.0}


def figure_size(path: Path) -> tuple[int, int] | None:
    """A figure's size in CSS pixels, written on its ``<img>`` so the page keeps the figure's
    place while it loads instead of jumping by its height; None when the file does not say.

    PNG, GIF and WebP give their pixels (Pillow reads only the header); matplotlib's SVG gives
    its width and height in points, 4/3 of a CSS pixel each. A missing file is not this
    function's to report: the site's copy of the figures names it.
    """
    try:
        if path.suffix == ".svg":
            with path.open(encoding="utf-8", errors="replace") as svg:
                found = _SVG_SIZE_RE.search(svg.read(4096))
            return found and (round(float(found["w"]) * _CSS_PX[found["wu"]]),
                              round(float(found["h"]) * _CSS_PX[found["hu"]]))
        with PIL.Image.open(path) as image:
            return image.size
    except (FileNotFoundError, PIL.UnidentifiedImageError):
        return None


@dataclass(frozen=True)
class ShownFigure:
    """A figure as a page shows it."""

    path: str  # inside the site
    label: str  # what it shows: alt text and the start of its caption
    size: tuple[int, int] | None  # CSS pixels (figure_size)

    @property
    def animated(self) -> bool:
        return self.path.endswith(ANIMATED_SUFFIXES)


def _shown_figure(ref: Reference, folder: Path, site_folder: str, files: list[str], label: str) -> ShownFigure:
    """The file of one figure that pages show (``_figure_file``), from ``folder`` on disk."""
    file = _figure_file(folder, files)
    return ShownFigure(figure_path(ref.name, site_folder, file), label, figure_size(folder / file))


def _progress_figures(ref: Reference, report: Results) -> list[tuple[str, list[str]]]:
    """(stem, files) of the progress report's figures that ref.yml declares, in the report's order."""
    return [(stem, files) for stem, files in report.figures.items() if stem in ref.manifest.progress.figures]


def _progress_shown(ref: Reference, report: Results) -> list[ShownFigure]:
    """Each figure a progress report shows, in order."""
    folder, labels = ref.progress_dir(report.profile), ref.manifest.progress.figures
    return [_shown_figure(ref, folder, progress_folder(report.profile), files, labels[stem].label)
            for stem, files in _progress_figures(ref, report)]


def progress_values(ref: Reference, report: Results, where: str = "") -> list[tuple[str, str]]:
    """(label, formatted value) of each number ref.yml's ``progress`` declares, in its order."""
    try:
        return [(m.label, directives.format_metric(report.metrics[key], m.fmt))
                for key, m in ref.manifest.progress.metrics.items()]
    except (KeyError, ValueError) as exc:
        raise ReferenceRunError(f"{where}the progress report of '{ref.name}' cannot be shown ({exc}); "
                                f"run: digest refs progress {ref.name} --profile {report.profile}") from None


@dataclass(frozen=True)
class RefOverview:
    """One reference as the references page shows it."""

    ref: Reference
    shown: Results | None  # the results notes show (full, else quick)
    progress: list[tuple[Results, list[tuple[str, str]]]]  # unfinished runs: (report, (label, value) pairs)
    figure: ShownFigure | None  # the newest still figure
    notes: list[Note]  # the notes that cite it, newest first


def reference_overviews(refs: dict[str, Reference], content: Content) -> list[RefOverview]:
    """Every reference by name, with what it shows now and the notes citing it."""
    citing: dict[str, list[Note]] = defaultdict(list)
    for note in content.published:
        for name in dict.fromkeys(d.name for d in directives.scan(note.body) if isinstance(d, directives.Directive)):
            citing[name].append(note)
    return [RefOverview(ref, ref.shown(), _unfinished_runs(ref), _newest_still(ref), citing.get(name, []))
            for name, ref in sorted(refs.items())]


def _unfinished_runs(ref: Reference) -> list[tuple[Results, list[tuple[str, str]]]]:
    reports = [ref.unfinished(profile) for profile in ref.progress]
    return [(report, progress_values(ref, report)) for report in reports if report is not None]


def _newest_still(ref: Reference) -> ShownFigure | None:
    """An unfinished run's first still progress figure, else the first still figure of the shown results."""
    for report in filter(None, (ref.unfinished(profile) for profile in ref.progress)):
        for figure in _progress_shown(ref, report):
            if not figure.animated:
                return figure
    shown = ref.shown()
    for stem in ref.manifest.figures if shown else ():
        files = [f for f in shown.figures.get(stem, []) if f.endswith((".svg", ".png"))]
        if files:
            label = f"{ref.manifest.figures[stem].label} · {ref.manifest.title} ({shown.profile} 프로필)"
            return _shown_figure(ref, ref.results_dir(shown.profile), shown.profile, files, label)
    return None


def share_image(note: Note, refs: dict[str, Reference], config: SiteConfig) -> str | None:
    """The first still figure the note shows (a progress report's while its run is unfinished), as
    the absolute address of its PNG: what link previews (Open Graph: KakaoTalk, Slack, X) show
    beside the title. None when the note shows no PNG figure."""
    for found in directives.scan(note.body):
        ref = refs.get(found.name) if isinstance(found, directives.Directive) else None
        if ref is None or found.kind == "ref":
            continue
        if found.kind == "ref_progress":
            report, folder = ref.unfinished(found.item), progress_folder(found.item)
            figures = [] if report is None else [f for _, files in _progress_figures(ref, report) for f in files]
        else:
            report = ref.shown()
            folder = report.profile if report else ""
            figures = report.figures.get(found.item, []) if report else []
        png = next((f for f in figures if f.endswith(".png")), None)
        if png:
            return config.absolute(figure_path(ref.name, folder, png))
    return None


class _NoteResults:
    """Renders the directives of one note and remembers which references it cited."""

    def __init__(self, note: Note, refs: dict[str, Reference], config: SiteConfig, here: str, link):
        self.note, self.refs, self.config, self.here, self.link = note, refs, config, here, link
        self.cited: dict[str, Reference] = {}

    def results(self, name: str):
        ref = self.refs.get(name)
        shown = ref.shown() if ref else None
        if shown is None:
            raise ReferenceRunError(f"{self.note.path} cites '{name}', which has no results; "
                                    f"run: digest refs run {name}")
        self.cited[name] = ref
        return ref, shown

    def render(self, found: directives.Directive) -> str:
        if found.kind == "ref_progress":
            return self.render_progress(found.name, found.item)
        ref, shown = self.results(found.name)
        if found.kind == "ref":
            if found.item not in shown.metrics:
                raise ReferenceRunError(f"{self.note.path}: results of '{found.name}' have no metric "
                                        f"'{found.item}'; run: digest refs run {found.name}")
            try:
                value = directives.format_metric(shown.metrics[found.item], found.fmt)
            except ValueError as exc:
                raise ReferenceRunError(f"{self.note.path}: {exc}") from None
            return _render_fragment("ref_value.md.j2", value=value, ref=ref, results=shown)
        files = shown.figures.get(found.item)
        if not files:
            raise ReferenceRunError(f"{self.note.path}: results of '{found.name}' have no figure "
                                    f"'{found.item}'; run: digest refs run {found.name}")
        figure = _shown_figure(ref, ref.results_dir(shown.profile), shown.profile, files,
                               ref.manifest.figures[found.item].label)
        return _render_fragment("ref_figure.md.j2", figure=figure, link=self.link, ref=ref, results=shown)

    def render_progress(self, name: str, profile: str) -> str:
        """The last progress report of the profile's unfinished run; nothing once the run has results."""
        ref = self.refs.get(name)
        report = ref.unfinished(profile) if ref else None
        if report is None:
            return ""
        values = progress_values(ref, report, where=f"{self.note.path}: ")
        return _render_fragment("ref_progress.md.j2", ref=ref, report=report, values=values,
                                figures=_progress_shown(ref, report), link=self.link)

    def provenance(self) -> str:
        return _render_fragment("provenance.md.j2", cited=self.cited, config=self.config,
                                refs_page=relative_url(REFS_PAGE, self.here))


def _render_fragment(template: str, **context) -> str:
    return _template(template).render(**context).strip()


# --- the site ---------------------------------------------------------------------------------

class PageMemo:
    """Pages rendered by the last ``render_site`` call that kept them, by everything they are made of.

    Under `mkdocs serve` a one-note edit changes a few pages; the others come from here instead of
    Jinja. Only note and archive pages are kept: their templates read nothing but their own context
    and the tag and person registries (part of the key). A note that cites reference results is
    rendered every time (its key would have to hold the results).
    """

    def __init__(self):
        self.pages: dict[tuple, Page] = {}
        self.next: dict[tuple, Page] = {}

    def get(self, key: tuple) -> Page | None:
        page = self.pages.get(key)
        if page is not None:
            self.next[key] = page
        return page

    def put(self, key: tuple, page: Page) -> None:
        self.next[key] = page

    def turn(self) -> None:
        """End of a render: keep what this one used or made, and forget the rest."""
        self.pages, self.next = self.next, {}


def _frozen(value):
    """A hashable stand-in for a template context value (records are frozen dataclasses already)."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, Listing):
        return (value.path, tuple(value.notes), value.number, value.count, value.pages, value.total)
    return value


class _Pages:
    """Collects rendered pages; refuses to produce one path twice."""

    def __init__(self, content: Content, config: SiteConfig, memo: PageMemo | None = None):
        self.content, self.config = content, config
        self.pages: dict[str, Page] = {}
        self.cards = _Cards(content)
        self.memo = memo
        self.registries = (config, tuple(content.tags.items()), tuple(content.people.items()))

    def add_kept(self, path: str, template: str, **context) -> None:
        """``add``, through the memo when there is one."""
        if self.memo is None:
            return self.add(path, template, **context)
        key = (template, path, self.registries, _frozen(context))
        page = self.memo.get(key)
        if page is None:
            self.add(path, template, **context)
            self.memo.put(key, self.pages[path])
        else:
            self.put(page)

    def put(self, page: Page) -> None:
        if page.path in self.pages:
            raise DuplicatePageError(f"two pages would be written to {page.path}")
        self.pages[page.path] = page

    def add(self, path: str, template: str, **context) -> None:
        card = lambda note: self.cards(note, path)  # noqa: E731
        self.put(_render(template, path, content=self.content, config=self.config, card=card, **context))

    def listing(self, base: str, notes: Sequence[Note], template: str, **context) -> None:
        for listing in paginate(base, notes, self.config.page_size):
            self.add_kept(listing.path, template, listing=listing, **context)


def _embed_subscribe_form(pages: _Pages, form: str) -> None:
    """The subscribe form on the home page and /subscribe/, after sanitizing (it drops forms)."""
    if not form:  # the pages say so and point to the feeds
        return
    for path in ("index.md", "subscribe/index.md"):
        pages.pages[path] = dataclasses.replace(pages.pages[path], trusted_after=form)


def render_site(content: Content, refs: dict[str, Reference] | None = None,
                config: SiteConfig | None = None, extras: Extras | None = None, memo: PageMemo | None = None) -> Site:
    """Every generated page, asset and file of the site; ``memo`` keeps pages for the next call."""
    refs = refs or {}
    config = config or SiteConfig()
    extras = extras or Extras()
    pages = _Pages(content, config, memo)
    published = content.published
    # First: Kiwi, which analyses uncached notes, is freed before the pages take its place in memory.
    search_files = search.index_files(content, config.cache_dir, note_url=lambda n: url_of(note_page(n)))

    pages.add("index.md", "home.md.j2", notes=published[:config.home_size], latest_issue=extras.latest_issue,
              total=len(published), has_form=bool(extras.subscribe_form))
    for i, note in enumerate(published):  # newest first
        newer = published[i - 1] if i > 0 else None
        older = published[i + 1] if i + 1 < len(published) else None
        if directives.OPENING_RE.search(note.body):
            pages.add(note_page(note), "note.md.j2", note=note, refs=refs, newer=newer, older=older,
                      share_image=share_image(note, refs, config))
        else:
            pages.add_kept(note_page(note), "note.md.j2", note=note, refs={}, newer=newer, older=older,
                           share_image=None)

    by_tag = notes_by_tag(content)
    for tag_id, tag in content.tags.items():
        pages.listing(f"tags/{tag_id}", by_tag.get(tag_id, []), "tag.md.j2", tag_id=tag_id, tag=tag)
    pages.add("tags/index.md", "tags.md.j2", by_tag=by_tag)

    by_person = notes_by_person(content)
    for person_id, person in content.people.items():
        pages.listing(f"people/{person_id}", by_person.get(person_id, []), "person.md.j2", person=person)
    pages.add("people/index.md", "people.md.j2", by_person=by_person)

    by_kind = notes_by_kind(content)
    for kind in KINDS:
        pages.listing(f"kinds/{kind}", by_kind.get(kind, []), "kind.md.j2", kind=kind)
    pages.add("kinds/index.md", "kinds.md.j2", by_kind=by_kind)

    by_month = notes_by_month(content)
    years: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for year, month in by_month:  # newest first
        years[year].append((month, len(by_month[(year, month)])))
        pages.listing(f"archive/{year}/{month:02d}", by_month[(year, month)], "month.md.j2",
                      year=year, month=month)
    for year, months in years.items():  # every note of the year by title: one click from the archive
        notes = [(month, by_month[(year, month)]) for month, _ in months]
        pages.add(year_page(year), "year.md.j2", year=year, months=notes, month_page=month_page)
    pages.add("archive/index.md", "archive.md.j2", years=years, month_page=month_page, year_page=year_page)

    pages.add(REFS_PAGE, "refs.md.j2", overviews=reference_overviews(refs, content))

    pages.add("subscribe/index.md", "subscribe.md.j2", has_form=bool(extras.subscribe_form))
    _embed_subscribe_form(pages, extras.subscribe_form)

    for page in extras.pages:
        pages.put(page)

    files = feed_files(content, config, by_tag) + search_files + list(extras.files)
    if memo is not None:
        memo.turn()
    _refuse_duplicates(files)
    return Site(list(pages.pages.values()), reference_assets(refs), files)


def _refuse_duplicates(files: list[TextFile]) -> None:
    seen = set()
    for file in files:
        if file.path in seen:
            raise DuplicatePageError(f"two files would be written to {file.path}")
        seen.add(file.path)


# --- feeds ------------------------------------------------------------------------------------

def _timestamp(date: dt.date) -> str:
    """RFC 3339 at midnight in Korea: notes carry dates, feeds need instants."""
    return f"{date.isoformat()}T00:00:00+09:00"


def feed_files(content: Content, config: SiteConfig, by_tag: dict[str, list[Note]]) -> list[TextFile]:
    """Atom and JSON Feed of all notes (feed.xml, feed.json) and of each tag (tags/<id>/feed.*)."""
    files = _feeds("", config.site_name, "index.md", content.published, content, config)
    for tag_id, tag in content.tags.items():
        title = f"{config.site_name} · 태그: {tag.name}"
        files += _feeds(f"tags/{tag_id}/", title, tag_page(tag_id), by_tag.get(tag_id, []), content, config)
    return files


def _feeds(folder: str, title: str, home: str, notes: Sequence[Note], content: Content,
           config: SiteConfig) -> list[TextFile]:
    entries = list(notes[:config.feed_size])
    updated = max((n.updated or n.date for n in entries), default=dt.date(2016, 1, 1))
    context = dict(
        title=title, entries=entries, content=content, config=config, updated=_timestamp(updated),
        home_url=config.absolute(url_of(home)), atom_url=config.absolute(folder + "feed.xml"),
        note_url=lambda n: config.absolute(url_of(note_page(n))), timestamp=_timestamp,
    )
    atom = _template("feed.xml.j2").render(**context)
    return [TextFile(folder + "feed.xml", atom), TextFile(folder + "feed.json", _json_feed(folder, **context))]


def _json_feed(folder: str, *, title, entries, content, config, home_url, note_url, timestamp, **_) -> str:
    """JSON Feed 1.1 (https://jsonfeed.org/version/1.1): data, so json.dumps rather than a template."""
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": title,
        "home_page_url": home_url,
        "feed_url": config.absolute(folder + "feed.json"),
        "language": "ko",
        "authors": [{"name": config.site_name, "url": config.site_url}],
        "items": [
            {
                "id": note_url(n),
                "url": note_url(n),
                "title": n.title,
                "summary": n.summary,
                "content_text": n.summary,
                "date_published": timestamp(n.date),
                "date_modified": timestamp(n.updated or n.date),
                "tags": [content.tags[t].name for t in n.tags],
                "authors": [{"name": f"{content.people[p].ko} ({content.people[p].en})"} for p in n.people],
            }
            for n in entries
        ],
    }
    return json.dumps(feed, ensure_ascii=False, indent=1) + "\n"


def reference_assets(refs: dict[str, Reference]) -> list[Asset]:
    """The figures of the results each reference shows, and of the progress of its unfinished runs."""
    assets = []
    for ref in refs.values():
        shown = ref.shown()
        if shown is not None:
            assets += _figure_assets(ref.name, shown.profile, ref.results_dir(shown.profile), shown)
        for profile in ref.progress:
            if report := ref.unfinished(profile):
                assets += _figure_assets(ref.name, progress_folder(profile), ref.progress_dir(profile), report)
    return assets


def _figure_assets(name: str, folder_name: str, folder: Path, results: Results) -> list[Asset]:
    return [Asset(figure_path(name, folder_name, file), folder / file)
            for files in results.figures.values() for file in files]
