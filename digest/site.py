"""Stage 4, render site: content records → Markdown pages, with no MkDocs in sight.

``render_site`` is a pure function; ``digest.mkdocs_adapter`` feeds its pages to
MkDocs as virtual files. Moving to another generator (Zensical, ProperDocs)
means a new adapter, not new rendering.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from . import directives
from .errors import DigestError, ReferenceRunError
from .model import Content, Note
from .refs import Reference
from .templates import environment


@dataclass(frozen=True)
class SiteConfig:
    """What pages need to know about where the site and its sources live."""

    repo_url: str = "https://github.com/example/ml-notes"
    branch: str = "main"

    def source_url(self, path: str) -> str:
        return f"{self.repo_url.rstrip('/')}/blob/{self.branch}/{path}"


@dataclass(frozen=True)
class Page:
    path: str  # source path inside the docs tree, e.g. "notes/2016/slug.md"
    text: str  # Markdown


@dataclass(frozen=True)
class Asset:
    path: str  # path inside the site, e.g. "refs/pong-reinforce/full/learning_curve.svg"
    source: Path  # the file to copy


@dataclass(frozen=True)
class Site:
    pages: list[Page]
    assets: list[Asset]


class DuplicatePageError(DigestError):
    """Raised when two pages would be written to one path (Pelican's writer rule)."""


def note_page(note: Note) -> str:
    return f"notes/{note.date.year}/{note.slug}.md"


def tag_page(tag_id: str) -> str:
    return f"tags/{tag_id}.md"


def _render(template: str, here: str, **context) -> str:
    """Render a page template; ``link(target)`` gives a link relative to ``here``."""

    def link(target: str) -> str:
        return posixpath.relpath(target, posixpath.dirname(here) or ".")

    def body_of(note: Note) -> str:
        """The note's Markdown with result directives expanded, and the provenance of each."""
        results = _NoteResults(note, context.get("refs", {}), context["config"], here, link)
        body = directives.expand(note.body, results.render)
        return body + ("\n\n" + results.provenance() if results.cited else "")

    return environment().get_template(f"site/{template}").render(
        link=link, note_page=note_page, tag_page=tag_page, body_of=body_of, **context
    )


def notes_by_tag(content: Content) -> dict[str, list[Note]]:
    by_tag: dict[str, list[Note]] = defaultdict(list)
    for note in content.published:  # already newest first
        for tag in note.tags:
            by_tag[tag].append(note)
    return by_tag


def figure_path(name: str, profile: str, file: str) -> str:
    return f"refs/{name}/{profile}/{file}"


def _figure_file(files: list[str]) -> str:
    """SVG for crisp plots, GIF/WebP for animations, PNG otherwise."""
    for suffix in (".svg", ".gif", ".webp", ".png"):
        for file in files:
            if file.endswith(suffix):
                return file
    return files[0]


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
        src = self.link(figure_path(found.name, shown.profile, _figure_file(files)))
        return _render_fragment("ref_figure.md.j2", src=src, stem=found.item, ref=ref, results=shown)

    def provenance(self) -> str:
        return _render_fragment("provenance.md.j2", cited=self.cited, config=self.config)


def _render_fragment(template: str, **context) -> str:
    return environment().get_template(f"site/{template}").render(**context).strip()


def render_site(content: Content, refs: dict[str, Reference] | None = None,
                config: SiteConfig | None = None) -> Site:
    """Every generated page and asset of the site; refuses to produce one path twice."""
    refs = refs or {}
    config = config or SiteConfig()
    pages: dict[str, Page] = {}

    def add(path: str, template: str, **context) -> None:
        if path in pages:
            raise DuplicatePageError(f"two pages would be written to {path}")
        pages[path] = Page(path, _render(template, path, content=content, config=config, **context))

    published = content.published
    add("index.md", "home.md.j2", notes=published[:20])
    for note in published:
        add(note_page(note), "note.md.j2", note=note, refs=refs)
    by_tag = notes_by_tag(content)
    for tag_id, tag in content.tags.items():
        add(tag_page(tag_id), "tag.md.j2", tag=tag, notes=by_tag.get(tag_id, []))
    add("tags/index.md", "tags.md.j2", by_tag=by_tag)
    return Site(list(pages.values()), reference_assets(refs))


def reference_assets(refs: dict[str, Reference]) -> list[Asset]:
    """The figures of the results each reference shows."""
    assets = []
    for ref in refs.values():
        shown = ref.shown()
        if shown is None:
            continue
        for files in shown.figures.values():
            for file in files:
                source = ref.results_dir(shown.profile) / file
                assets.append(Asset(figure_path(ref.name, shown.profile, file), source))
    return assets
