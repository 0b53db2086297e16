"""The records the site is made of: what ``render_site`` returns and what other stages hand it.

Plain frozen dataclasses, importing nothing of the site, so the search index, the renderer
and the pipeline share them without importing one another.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SiteConfig:
    """What pages need to know about where the site and its sources live."""

    repo_url: str = "https://github.com/example/ml-notes"
    branch: str = "main"
    site_url: str = "https://example.github.io/ml-notes/"
    site_name: str = "ML 읽기 노트"
    page_size: int = 20  # notes per archive page (tag, person, kind, month)
    home_size: int = 12  # cards on the home page
    feed_size: int = 20  # entries per feed
    cache_dir: Path | None = None  # where search analysis is cached by content hash

    def source_url(self, path: str) -> str:
        return f"{self.repo_url.rstrip('/')}/blob/{self.branch}/{path}"

    def edit_url(self, path: str) -> str:
        return f"{self.repo_url.rstrip('/')}/edit/{self.branch}/{path}"

    def absolute(self, url: str) -> str:
        """Absolute address of a site-relative URL such as ``notes/2016/x/``."""
        return self.site_url.rstrip("/") + "/" + url


@dataclass(frozen=True)
class Page:
    """A page: Markdown for the generator, and HTML it places before and after the rendered Markdown.

    Archive pages are all HTML (``text`` holds only their front matter): Python-Markdown
    would spend most of a build parsing their raw HTML for nothing.
    """

    path: str  # source path inside the docs tree, e.g. "notes/2016/slug.md"
    text: str  # Markdown, with YAML front matter
    before: str = ""  # HTML
    after: str = ""  # HTML
    # HTML from our own templates that the sanitizer must not see (it drops forms): the subscribe form.
    trusted_after: str = ""


@dataclass(frozen=True)
class Asset:
    path: str  # path inside the site, e.g. "refs/pong-reinforce/full/learning_curve.svg"
    source: Path  # the file to copy


@dataclass(frozen=True)
class TextFile:
    path: str  # path inside the site, e.g. "feed.xml"
    text: str  # written as is


@dataclass(frozen=True)
class Link:
    """Something another stage publishes, as the home page shows it (e.g. the latest digest issue)."""

    title: str
    path: str  # page path in the docs tree, e.g. "digest/2016-W26.md"
    date: dt.date
    summary: str = ""


@dataclass(frozen=True)
class Extras:
    """What the other products put on the site (``digest.pipeline.publish`` gathers it, so the site
    imports neither): the weekly digest's issue pages, its feed and the latest issue; the service's
    subscribe form.

    Pages are Markdown like ours (and sanitized like ours by the adapter); files
    are written as they are; ``latest_issue`` gets a card on the home page; ``subscribe_form`` is
    an HTML fragment of the service's own template, placed after sanitizing (which drops forms) on
    the home page and /subscribe/; empty: no service, so the pages point to the feeds instead.
    """

    pages: Sequence[Page] = ()
    files: Sequence[TextFile] = ()
    latest_issue: Link | None = None
    subscribe_form: str = ""


@dataclass(frozen=True)
class Site:
    pages: list[Page]
    assets: list[Asset]
    files: list[TextFile] = field(default_factory=list)
