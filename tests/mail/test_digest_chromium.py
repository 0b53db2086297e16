"""The HTML part of a message received over SMTP, opened in headless Debian Chromium.

Screenshots at 600 px and 375 px (light and dark) are saved to outbox/screenshots/ for people
to look at; the test checks what a reader would: the notes are there, nothing overflows the
narrow screen, nothing is fetched from the network, and the console stays clean.
"""

from __future__ import annotations

import email
import email.policy
import shutil
from concurrent.futures import ThreadPoolExecutor

import mailkit
import pytest
from mailkit import INTRO, ROOT, WEEK, mail_env, write_content

from digest.mail.compose import IsoWeek, compose, render
from digest.mail.deliver import SendSettings, SmtpSettings, SmtpTransport, send
from digest.mail.message import mail_settings
from digest.pipeline.check import load_content
from digest.subscribers.store import open_store

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SHOTS = ROOT / "outbox" / "screenshots"
smtp_server = mailkit.smtp_server

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason="Debian chromium is not installed (make test installs it)")


@pytest.fixture
def received_html(tmp_path, smtp_server):
    recorder, port = smtp_server
    content, _ = load_content(write_content(tmp_path, intro=INTRO))
    store = open_store(tmp_path / "subscribers.sqlite3")
    store.add("reader@example.org")
    settings = mail_settings(mail_env(), {})
    template = render(compose(content, IsoWeek.parse(WEEK), settings.site_url), content, settings, store.secret())
    smtp = SmtpSettings("127.0.0.1", port, security="none", timeout=5)
    send(store, template, "smtp", lambda: SmtpTransport(smtp), SendSettings(progress_every=0), settings.sender,
         log=lambda line: None)
    (message,) = recorder.messages
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    path = tmp_path / "issue.html"
    path.write_text(parsed.get_body(("html",)).get_content(), encoding="utf-8")
    return path


def test_html_part_renders_the_notes_in_chromium_at_600_and_375_px(received_html):
    pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Its own thread: Playwright's sync API refuses a thread where an asyncio loop runs, and a
    # session-wide browser elsewhere in the suite may keep one running in the main thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(look_at, received_html).result()
    assert (SHOTS / f"{WEEK}-600px.png").stat().st_size > 10_000
    assert (SHOTS / f"{WEEK}-375px.png").stat().st_size > 10_000


def look_at(received_html) -> None:
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for width in (600, 375):
                for scheme in ("light", "dark"):
                    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
                    errors, requests = [], []
                    page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
                    page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                    page.on("request", lambda r, requests=requests: requests.append(r.url))
                    page.goto(received_html.as_uri())
                    text = page.inner_text("body")
                    for title in ("픽셀로 배우는 퐁: 정책 경사 입문", "게이트로 보는 역전파",
                                  "<script>alert(1)</script> & \"따옴표\" 😀 Ünïcödé", "이번 주는 강화학습과 역전파"):
                        assert title in text
                    assert "수신 거부" in text and "웹에서 보기" in text
                    assert errors == [] and requests == [received_html.as_uri()]  # no fonts, pixels or scripts
                    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
                    container = page.evaluate("document.querySelector('.container').getBoundingClientRect().width")
                    assert container == (600 if width == 600 else width)
                    background = page.evaluate("getComputedStyle(document.querySelector('.container')).backgroundColor")
                    assert (background == "rgb(255, 255, 255)") == (scheme == "light")
                    suffix = "" if scheme == "light" else "-dark"
                    page.screenshot(path=str(SHOTS / f"{WEEK}-{width}px{suffix}.png"), full_page=True)
                    page.close()
        finally:
            browser.close()
