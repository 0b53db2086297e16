"""Issue 8's acceptance, end to end in real processes on loopback, on SQLite and on PostgreSQL.

The site is built by `mkdocs build` from a small content tree and served over HTTP on 127.0.0.1
with the subscribe form the site embeds in its home page; `digest serve`
runs as its own process; mail goes to a real aiosmtpd server. Headless Debian Chromium fills the
form, the confirmation mail arrives, Chromium opens its link and presses the button; `digest send`
(a process) delivers the week's issue; the one-click POST from that message's List-Unsubscribe
header unsubscribes; the next `digest send` skips the address. Screenshots of the pages go to
tests/artifacts/serve/ (gitignored).
"""

from __future__ import annotations

import email
import email.policy
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import servekit
from mailkit import ROOT, free_port, write_content
from servekit import confirm_link, mails_to, start_server

from digest.service.app import subscribe_form_html
from digest.subscribers.store import open_store

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SHOTS = ROOT / "tests" / "artifacts" / "serve"
recording_smtp = servekit.recording_smtp

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason="Debian chromium is not installed (make test installs it)")


# Where the site's form posts at build time; each test points it at its own `digest serve`.
BUILD_SERVICE_URL = "http://127.0.0.1:9/"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site on 127.0.0.1, its home page with the subscribe form: (folder, url, content)."""
    folder = tmp_path_factory.mktemp("e2e-site")
    content = write_content(folder)
    built = folder / "site"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("DIGEST_")}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(built)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**env, "DIGEST_CONTENT": str(content), "NO_MKDOCS_2_WARNING": "1",
                                 "DIGEST_SERVICE_URL": BUILD_SERVICE_URL})
    assert result.returncode == 0, result.stderr[-3000:]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(_Quiet, directory=str(built)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield built, f"http://127.0.0.1:{server.server_address[1]}/", content
    finally:
        server.shutdown()
        server.server_close()


def embed_form(built, service_url: str, content) -> None:
    """Point the form the site built into its home page at this test's service (its port is new)."""
    home = built / "index.html"
    html = home.read_text(encoding="utf-8")
    form = re.search(r'<form class="digest-subscribe" method="post" action="([^"]*)"', html)
    assert form, "the built home page carries no subscribe form"
    pointed = form.group(0).replace(form.group(1), service_url.rstrip("/") + "/subscribe")
    home.write_text(html.replace(form.group(0), pointed), encoding="utf-8")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "var" / "subscribers.sqlite3")
    return request.getfixturevalue("postgres_dsn")


def send(week: str, server, smtp_port: int, content) -> subprocess.CompletedProcess:
    env = {**server.env, "DIGEST_SERVICE_URL": server.url}
    return subprocess.run([sys.executable, "-m", "digest", "send", "--week", week, "--to", "smtp",
                           "--content", str(content)], cwd=server.cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_subscribe_confirm_receive_one_click_unsubscribe_and_be_skipped(site, location, recording_smtp, tmp_path):
    pytest.importorskip("playwright.sync_api")
    built, site_url, content = site
    recorder, smtp_port = recording_smtp
    server = start_server(tmp_path, content, location, smtp_port, site_url=site_url)
    try:
        embed_form(built, server.url, content)
        control, _ = open_store(location).add("control@example.org")  # subscribed all along
        reader = f"reader-{tmp_path.name[-12:].lower()}@example.org"
        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API wants a thread without an event loop
            backend = "postgresql" if location.startswith("postgresql") else "sqlite"
            pool.submit(browse, site_url, server, recorder, reader, backend).result()
        store = open_store(location)
        subscriber = store.find(reader)
        assert subscriber.status == "confirmed" and subscriber.topics == ("backprop", "tools")

        sent = send("2016-W28", server, smtp_port, content)
        assert sent.returncode == 0, sent.stderr
        (issue,) = [m for m in mails_to(recorder, reader, 2) if "구독" not in m["Subject"]]
        assert issue["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = re.search(r"<(http://[^>]+/unsubscribe/[^>]+)>", str(issue["List-Unsubscribe"]))[1]
        assert url.startswith(server.url) and url in issue.get_body(("plain",)).get_content()
        response = httpx.post(url, content=b"List-Unsubscribe=One-Click",  # what a mail provider sends
                              headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
        assert response.status_code == 200 and store.find(reader).status == "unsubscribed"

        before = len(recorder.to(reader))
        again = send("2016-W26", server, smtp_port, content)
        assert again.returncode == 0, again.stderr
        assert len(recorder.to(reader)) == before  # skipped
        assert len(recorder.to("control@example.org")) >= 2  # while the others still get it
        assert subscriber.id not in {d.subscriber_id for d in store.deliveries("2016-W26", "smtp")}
        assert reader not in server.log_text() and control.address not in server.log_text()
        store.close()
    finally:
        server.stop()


def browse(site_url: str, server, recorder, reader: str, backend: str) -> None:
    from playwright import sync_api

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(site_url)
            form = page.locator("form.digest-subscribe")
            form.scroll_into_view_if_needed()
            page.fill("#digest-subscribe-email", reader)
            page.check("input[name=topic][value=backprop]")
            page.check("input[name=topic][value=tools]")
            page.screenshot(path=str(SHOTS / f"site-form-{backend}.png"))
            with page.expect_navigation():
                page.click("form.digest-subscribe button[type=submit]")
            assert page.url.startswith(server.url) and "메일을 확인해 주세요" in page.inner_text("main")
            page.screenshot(path=str(SHOTS / f"sent-{backend}.png"))

            page.goto(confirm_link(recorder, reader))
            assert "구독 확인" in page.inner_text("h1")
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert "구독되었습니다" in page.inner_text("h1")
            assert "역전파" in page.inner_text("main") and "도구 & 팁" in page.inner_text("main")
            page.screenshot(path=str(SHOTS / f"confirmed-{backend}.png"))
            assert errors == []  # no CSP violation, nothing failed to load
        finally:
            browser.close()


def test_the_form_fragment_is_plain_html_for_the_site():
    html = subscribe_form_html("https://subscribe.example.org", [("backprop", "역전파"), ("tools", "도구 & 팁")])
    assert 'action="https://subscribe.example.org/subscribe"' in html and 'method="post"' in html
    assert 'name="topic" value="tools"' in html and "도구 &amp; 팁" in html
    assert "<script" not in html and "csrf" not in html and " style=" not in html
    parsed = email.message_from_string("x: y\n\n" + html, policy=email.policy.default)  # one piece of text
    assert parsed.get_content().count("<form") == 1
