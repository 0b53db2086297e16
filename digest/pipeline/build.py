"""`digest build`: the main job, on embedded defaults: content → site/ + this week's digest.

Pelican-style: every stage builds its records first, then writes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from digest.pipeline.check import load_content
from digest.refs.engine import is_fresh, load_references, run_reference


def _step(message: str) -> float:
    print(f"digest build: {message}", file=sys.stderr, flush=True)
    return time.perf_counter()


def refresh_references(content_root: Path) -> None:
    """Run the quick profile of every reference whose quick results are missing or stale.

    Results are cached by code hash: an unchanged reference is not run again.
    Full results are never rerun here (hours); stale ones fail the check below.
    """
    for ref in load_references(content_root).values():
        if "quick" in ref.manifest.profiles and not is_fresh(ref, "quick"):
            run_reference(ref, "quick")
        else:
            _step(f"{ref.name}: results are current (cached by code hash)")


# How the site is built from checked content: (site folder, content folder, (content, references)).
# The CLI passes the engine adapter's (digest.mkdocs_adapter.build_site): the pipeline names no engine.
SiteBuilder = Callable[[Path, Path, tuple], None]


def build(content_root: Path, site_dir: Path, outbox: Path, build_site: SiteBuilder) -> None:
    start = _step("running references whose results are missing or stale")
    refresh_references(content_root)
    _step("checking content")
    content, refs = load_content(content_root)
    _step(f"{len(content.published)} notes valid; building site into {site_dir}/")
    build_site(site_dir, content_root, (content, refs))
    issue = compose_digest(content, outbox)
    _step(f"done in {time.perf_counter() - start:.1f}s. To look at what was built:")
    print(f"  the site: {site_dir}/ (to browse it: .venv/bin/mkdocs serve)", file=sys.stderr)
    if issue is not None:
        print(f"  the email: {issue}/issue.html in a browser, {issue}/issue.eml in a mail client", file=sys.stderr)


def compose_digest(content, outbox: Path) -> Path | None:
    """This week's email issue, or the latest week's with notes, into outbox/<week>/ (a preview);
    returns that folder, or None when no week has notes."""
    from digest.mail.compose import compose, default_week, weeks_with_notes, write_outbox
    from digest.mail.message import mail_settings

    if not weeks_with_notes(content):
        _step("no published notes: no digest issue to compose")
        return None
    week = default_week(content)
    settings = mail_settings()
    folder = write_outbox(compose(content, week, settings.site_url), content, settings, outbox)
    _step(f"digest issue {week.name} ({week.label}) composed into {folder}/")
    return folder
