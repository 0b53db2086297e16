"""The only MkDocs-specific module: hooks that feed ``render_site`` pages to MkDocs.

``mkdocs.yml`` names this file under ``hooks:``, so ``mkdocs build`` and
``mkdocs serve`` both work, and a note edit live-reloads. Replacing MkDocs
(Zensical, ProperDocs) means replacing this file alone.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.exceptions import Abort, PluginError
from mkdocs.structure.files import File

from digest.check import load_content
from digest.errors import ContentInvalid, DigestError
from digest.site import SiteConfig, render_site

CONTENT_DIR = "content"


class SiteBuildError(DigestError):
    """Raised when MkDocs refuses to build (content errors, broken config, strict warnings)."""


def _content_root(config) -> Path:
    return Path(config.config_file_path).parent / CONTENT_DIR


def on_files(files, config):
    """Add every generated page as a virtual file; content errors stop the build."""
    try:
        content, refs = load_content(_content_root(config))
        site = render_site(content, refs, _site_config(config))
    except ContentInvalid as exc:
        lines = "\n".join(d.format() for d in exc.diagnostics if d.severity == "error")
        raise PluginError(f"content has errors:\n{lines}") from None
    except DigestError as exc:
        raise PluginError(str(exc)) from None
    for page in site.pages:
        _refuse_existing(files, page.path)
        files.append(File.generated(config, page.path, content=page.text))
    for asset in site.assets:
        _refuse_existing(files, asset.path)
        files.append(File.generated(config, asset.path, abs_src_path=str(asset.source)))
    return files


def _refuse_existing(files, path: str) -> None:
    if files.get_file_from_path(path) is not None:
        raise PluginError(f"{path} is generated from content/ and must not exist in docs/")


def _site_config(config) -> SiteConfig:
    return SiteConfig(repo_url=config.repo_url or SiteConfig.repo_url)


def on_serve(server, config, builder):
    """Rebuild when a note, registry or reference result changes."""
    server.watch(str(_content_root(config)))
    return server


def build(config_file: str = "mkdocs.yml", site_dir: str | None = None, strict: bool = True) -> None:
    """``mkdocs build`` from Python, for ``digest build``."""
    import os

    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # the EOL notice is ours to track, not the reader's
    overrides = {"site_dir": site_dir} if site_dir else {}
    config = load_config(config_file, strict=strict, **overrides)
    try:
        mkdocs_build(config)
    except (PluginError, Abort) as exc:
        raise SiteBuildError(str(exc)) from None
