"""Fixtures of the built-site tests: real `mkdocs build`, a local HTTP server, headless Chromium.

The site is built once per session from the project's own content/ (and once with
Material's default search, for the comparison), served under /ml-notes/ as on
GitHub Pages (site_url's path), and opened in Debian's chromium through Playwright.
Screenshots go to tests/artifacts/site/ (gitignored).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from sitekit import ARTIFACTS, BASE_PATH, CHROMIUM, CHROMIUM_ARGS, DESKTOP, ROOT, mkdocs_build


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The project's site, built once: (site folder, build log)."""
    site = tmp_path_factory.mktemp("site") / "site"
    result = mkdocs_build(site)
    return site, result.stdout + result.stderr


@pytest.fixture(scope="session")
def site_dir(built) -> Path:
    return built[0]


@pytest.fixture(scope="session")
def default_search_site(tmp_path_factory) -> Path:
    """The same site with Material's default search plugin on (for the comparison only)."""
    folder = tmp_path_factory.mktemp("default-search")
    config = ROOT / f".mkdocs-default-search-{os.getpid()}.yml"  # INHERIT resolves beside mkdocs.yml
    config.write_text("INHERIT: mkdocs.yml\nplugins:\n  - search\n", encoding="utf-8")
    try:
        mkdocs_build(folder / "site", config=config)
    finally:
        config.unlink()
    return folder / "site"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a site under BASE_PATH, with its 404.html for missing pages, like GitHub Pages."""

    def log_message(self, *args):  # quiet: the tests report what matters
        pass

    def _local(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        if not path.startswith(BASE_PATH):
            return None
        target = (Path(self.directory) / path[len(BASE_PATH):]).resolve()
        if not target.is_relative_to(Path(self.directory).resolve()):
            return None
        if target.is_dir():
            target = target / "index.html"
        return target if target.is_file() else None

    def do_GET(self):
        target = self._local()
        if target is None:
            body = (Path(self.directory) / "404.html").read_bytes()
            self.send_response(404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(target)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def serve():
    """serve(site_dir) → base URL of a local server for that folder; all stopped at the end."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Handler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}{BASE_PATH}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def base_url(serve, site_dir) -> str:
    return serve(site_dir)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless chromium, driven by Playwright (whose own browser download cannot work here).

    Module scope: Playwright's sync API runs an event loop in this thread while it lives, so it must
    end with each module, before later tests call asyncio.run() ("package" scope would be the
    session here: tests/site/ is not a Python package).
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (installs Debian's chromium) "
                    "or `apt-get install -y chromium fonts-noto-cjk`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = ARTIFACTS
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


class PageWatch:
    """A browser page that records console errors, failed requests and every URL it asked for."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{m.text} @ {m.location.get('url')}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} ({r.status})"))


@pytest.fixture
def open_page(browser):
    """open_page(viewport, dark=False) → PageWatch on a fresh browser context."""
    contexts = []

    def make(viewport=DESKTOP, dark: bool = False) -> PageWatch:
        context = browser.new_context(viewport=viewport, color_scheme="dark" if dark else "light",
                                      locale="ko-KR")
        contexts.append(context)
        return PageWatch(context.new_page())

    yield make
    for context in contexts:
        context.close()
