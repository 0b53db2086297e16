"""The only MkDocs-specific module: hooks that feed ``render_site`` pages to MkDocs.

``mkdocs.yml`` names this file under ``hooks:``, so ``mkdocs build`` and
``mkdocs serve`` both work, and a note edit live-reloads. Replacing MkDocs
(Zensical, ProperDocs) means replacing this file alone.

MkDocs runs this file anew for every build, so per-build state lives in module
globals here, and what should outlive a rebuild under ``mkdocs serve`` (Kiwi,
its memo) lives in ``digest.search``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mkdocs.exceptions import Abort, PluginError
from mkdocs.structure.files import File

from digest import compose, sanitize, search
from digest.check import load_content
from digest.errors import ContentInvalid, DigestError
from digest.site import SiteConfig, render_site

CONTENT_DIR = "content"
CONTENT_ENV = "DIGEST_CONTENT"  # another content folder (benchmarks, tests): same site, other notes
CACHE_DIR = ".cache/search"  # beside the content folder, gitignored

_generated_pages: dict = {}  # docs path → digest.site.Page, for the pages made from content/ in this build


def on_startup(command, dirty):
    """Under `mkdocs serve`, Kiwi stays loaded between rebuilds (this file is re-run for each rebuild;
    digest.search is not, so the flag lives there)."""
    search.keep_analyzer = command == "serve"


class SiteBuildError(DigestError):
    """Raised when MkDocs refuses to build (content errors, broken config, strict warnings)."""


def _project_root(config) -> Path:
    return Path(config.config_file_path).parent


def _content_root(config) -> Path:
    other = os.environ.get(CONTENT_ENV)
    return Path(other).resolve() if other else _project_root(config) / CONTENT_DIR


def on_files(files, config):
    """Add every generated page, asset and file as a virtual file; content errors stop the build."""
    try:
        content, refs = load_content(_content_root(config))
        site = render_site(content, refs, _site_config(config), compose.site_extras(content, config.site_url or ""))
        if not search.keep_analyzer:
            search.release_analyzer()  # the peak memory of a 10,000-note build: Kiwi or pages, not both
    except ContentInvalid as exc:
        lines = "\n".join(d.format() for d in exc.diagnostics if d.severity == "error")
        raise PluginError(f"content has errors:\n{lines}") from None
    except DigestError as exc:
        raise PluginError(str(exc)) from None
    _generated_pages.clear()
    for page in site.pages:
        _refuse_existing(files, page.path)
        files.append(File.generated(config, page.path, content=page.text))
        _generated_pages[page.path] = page
    for asset in site.assets:
        _refuse_existing(files, asset.path)
        files.append(File.generated(config, asset.path, abs_src_path=str(asset.source)))
    for file in site.files:
        _refuse_existing(files, file.path)
        files.append(File.generated(config, file.path, content=file.text))
    return files


def on_page_content(html, page, config, files):
    """Put a generated page's HTML parts around its rendered Markdown, and sanitize it all.

    Note bodies are untrusted Markdown; the parts come from auto-escaping templates,
    but one allow-list over the whole page is simpler to trust than two rules.
    """
    generated = _generated_pages.get(page.file.src_uri)
    if generated is None:
        return html
    cleaned = sanitize.clean("\n".join(part for part in (generated.before, html, generated.after) if part))
    return cleaned + generated.trusted_after  # our own template's form, which the allow-list would drop


def _refuse_existing(files, path: str) -> None:
    if files.get_file_from_path(path) is not None:
        raise PluginError(f"{path} is generated from content/ and must not exist in docs/")


def _site_config(config) -> SiteConfig:
    extra = config.extra or {}
    return SiteConfig(
        repo_url=extra.get("repo_url") or config.repo_url or SiteConfig.repo_url,
        branch=extra.get("repo_branch") or SiteConfig.branch,
        site_url=config.site_url or SiteConfig.site_url,
        site_name=config.site_name or SiteConfig.site_name,
        cache_dir=_content_root(config).parent / CACHE_DIR,
        service_url=os.environ.get("DIGEST_SERVICE_URL") or extra.get("subscribe_url") or SiteConfig.service_url,
    )


def on_serve(server, config, builder):
    """Rebuild when a note, registry or reference result changes."""
    server.watch(str(_content_root(config)))
    return server


def build(config_file: str = "mkdocs.yml", site_dir: str | None = None, strict: bool = True) -> None:
    """``mkdocs build`` from Python, for ``digest build``."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # the EOL notice is ours to track, not the reader's
    overrides = {"site_dir": site_dir} if site_dir else {}
    config = load_config(config_file, strict=strict, **overrides)
    try:
        mkdocs_build(config)
    except (PluginError, Abort) as exc:
        raise SiteBuildError(str(exc)) from None
