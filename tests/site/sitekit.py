"""Helpers of the built-site tests (tests/site/): building, constants, HTML parsing."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "site"  # gitignored; other suites write beside it
BASE_PATH = "/ml-notes/"  # the path of site_url in mkdocs.yml
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def mkdocs_build(site_dir: Path, content: Path | None = None, extra_args: tuple[str, ...] = (),
                 config: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` in a subprocess, as a user runs it; content/ may be another folder,
    ``env`` adds environment variables."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", **(env or {}))
    if content is not None:
        env["DIGEST_CONTENT"] = str(content)
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config or ROOT / "mkdocs.yml"),
               "-d", str(site_dir), *extra_args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


class Elements(HTMLParser):
    """Every start tag of a page with its attributes; end tags as ("/name", {})."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        self.tags.append(("/" + tag, {}))
