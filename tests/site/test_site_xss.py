"""Untrusted content is safe: an XSS corpus in every field of notes, tags and people, built for real.

The built pages must contain no executable script from the corpus (checked in the
HTML), and Chromium must run none (a window.__xss trap replaces alert and friends
before any page script runs), nor fetch anything from another host.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import feedparser
import pytest
from sitekit import ROOT, Elements, mkdocs_build

from digest.site import sanitize

CORPUS = Path(__file__).parent / "xss_payloads.txt"
# URLs that pass `digest check` (http, a host, no space) yet try to break out of an attribute.
# Links that `digest check` lets through (quotes are legal in URLs; encoded markup is just text):
# the site must still escape them. Links with raw " < > are refused earlier, by the validator.
URL_PAYLOADS = [
    "https://example.com/'onmouseover='alert(1)",
    "https://example.com/x'onfocus='alert(1)'autofocus='",
    "https://example.com/%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
    "https://example.com/?q=');alert(1)//",
]
REFUSED_URL_PAYLOADS = [
    'https://example.com/"><script>alert(1)</script>',
    "https://example.com/<svg/onload=alert(1)>",
    'https://example.com/x"onfocus="alert(1)"autofocus="',
]
TRAP = """
window.__xss = [];
for (const name of ["alert", "confirm", "prompt", "print"]) {
  window[name] = (...args) => { window.__xss.push(name + ":" + args.join(",")); };
}
"""
# What a reader's mouse and keyboard would do to every element of the content, in one go.
POKE = """() => {
  for (const element of document.querySelectorAll("article *")) {
    for (const type of ["mouseover", "mouseenter", "focus", "toggle", "animationstart", "load", "error"]) {
      element.dispatchEvent(new Event(type));
    }
  }
}"""
# Material's own inline scripts (the theme's, identical on every page): nothing else may be inline.
THEME_INLINE_SCRIPTS = ("__md_scope=new URL(", "var palette=__md_get(", "var target=document.getElementById(")
DANGEROUS_IN_CONTENT = {"script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "form",
                        "input", "button", "textarea", "select", "svg", "math", "base", "link", "meta"}
# Our own subscribe form (digest/templates/serve/subscribe_form.html), added after the sanitizer:
# the only form allowed, on these pages only.
SUBSCRIBE_PAGES = {"index.html", "subscribe/index.html"}
FORM_PARTS = {"form", "input", "button"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "background", "data", "poster", "srcset", "xlink:href",
                  "lowsrc", "dynsrc", "content"}


def payloads() -> list[str]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_corpus_is_large_enough():
    assert len(payloads()) >= 30


@pytest.mark.parametrize("url", REFUSED_URL_PAYLOADS)
def test_validator_refuses_links_with_raw_markup(url):
    from digest.content.validate import url_problem

    assert "percent-encoded" in url_problem(url)


def _yaml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def write_corpus_content(root: Path) -> Path:
    content = root / "content"
    (content / "notes" / "2016").mkdir(parents=True)
    shutil.copy(ROOT / "content" / "tags.yml", content / "tags.yml")
    shutil.copy(ROOT / "content" / "people.yml", content / "people.yml")
    corpus = payloads()
    with (content / "tags.yml").open("a", encoding="utf-8") as tags:
        for i in range(3):
            tags.write(f"xss-tag-{i}:\n  name: {_yaml(corpus[i])}\n  description: {_yaml(corpus[-1 - i])}\n")
    with (content / "people.yml").open("a", encoding="utf-8") as people:
        for i in range(2):
            people.write(f"xss-person-{i}:\n  ko: {_yaml(corpus[3 + i])}\n  en: {_yaml(corpus[5 + i])}\n"
                         f"  url: {_yaml(URL_PAYLOADS[i])}\n")
    for i, payload in enumerate(corpus):
        url = URL_PAYLOADS[i] if i < len(URL_PAYLOADS) else f"https://example.com/xss/{i}"
        body = f"본문 {i}.\n\n{payload}\n\n문장 안의 {payload} 끝.\n\n- 목록 {payload}\n"
        (content / "notes" / "2016" / f"xss-{i:02d}.yml").write_text(
            f"title: {_yaml(f'XSS {i}: {payload}')}\n"
            f"slug: xss-{i:02d}\n"
            f"date: 2016-{1 + i % 12:02d}-{1 + i % 28:02d}\n"
            "kind: paper\n"
            f"tags: [xss-tag-{i % 3}, backprop]\n"
            f"people: [xss-person-{i % 2}]\n"
            "sources:\n"
            f"  - url: {_yaml(url)}\n"
            f"    title: {_yaml(payload)}\n"
            f"summary: {_yaml('요약 ' + payload)}\n"
            f"body: {_yaml(body)}\n",
            encoding="utf-8",
        )
    return content


@pytest.fixture(scope="module")
def xss_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("xss")
    content = write_corpus_content(root)
    mkdocs_build(root / "site", content=content)
    return root / "site"


def _elements(path: Path):
    parser = Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


def _scripts(text: str) -> list[tuple[str, str]]:
    return re.findall(r"<script\b([^>]*)>(.*?)</script>", text, re.S | re.I)


def _dangerous_url(value: str) -> bool:
    plain = re.sub(r"[\x00-\x20]", "", html.unescape(value)).lower()
    return plain.startswith(("javascript:", "vbscript:", "data:"))


def test_built_pages_hold_no_executable_script(xss_site):
    pages = sorted(xss_site.rglob("*.html"))
    notes = [p for p in pages if "/notes/" in p.as_posix()]
    assert len(notes) == len(payloads())
    problems = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(xss_site).as_posix()
        for attrs, body in _scripts(text):
            if "src=" in attrs:
                if not re.fullmatch(r'\s*src="(\.\./)*assets/javascripts/[\w.-]+\.js"\s*', attrs) and \
                        not re.fullmatch(r'\s*src="/ml-notes/assets/javascripts/[\w.-]+\.js"\s*', attrs):
                    problems.append(f"{name}: script {attrs}")
            elif 'type="application/json"' in attrs:
                json.loads(body)  # data, not code: but it must still be the theme's own, intact
            elif not body.strip().startswith(THEME_INLINE_SCRIPTS):
                problems.append(f"{name}: inline script {body[:60]!r}")
        inside = in_own_form = False
        for tag, attrs in _elements(page):
            if tag in ("article", "/article"):
                inside = tag == "article"
            for attribute, value in attrs.items():
                if attribute.startswith("on"):
                    problems.append(f"{name}: <{tag} {attribute}>")
                if attribute in URL_ATTRIBUTES and _dangerous_url(value):
                    problems.append(f"{name}: <{tag} {attribute}={value[:40]!r}>")
            if tag == "form":
                in_own_form = name in SUBSCRIBE_PAGES and attrs.get("class") == "digest-subscribe"
            elif tag == "/form":
                in_own_form = False
            if inside and tag in DANGEROUS_IN_CONTENT and not (in_own_form and tag in FORM_PARTS):
                problems.append(f"{name}: <{tag}> in the content")
            if inside and tag == "img" and re.match(r"\s*(https?:)?//", attrs.get("src", "")):
                problems.append(f"{name}: external image {attrs['src']}")
            if inside and tag != "article" and not in_own_form and (attrs.get("id", "").startswith("__")
                                                or re.search(r"(^|\s)md-", attrs.get("class", ""))):
                problems.append(f"{name}: theme id or class {attrs}")
    assert not problems, problems[:20]


def test_payload_text_survives_as_text(xss_site):
    page = (xss_site / "notes/2016/xss-00/index.html").read_text(encoding="utf-8")
    assert "<h1>XSS 0: &lt;script&gt;alert('xss-1')&lt;/script&gt;</h1>" in page
    assert "<title>XSS 0: &lt;script&gt;" in page


def test_feeds_stay_well_formed(xss_site):
    for path in ("feed.xml", "tags/xss-tag-0/feed.xml"):
        parsed = feedparser.parse((xss_site / path).read_text(encoding="utf-8"))
        assert not parsed.bozo, parsed.bozo_exception
        assert any("<script>" in entry.title for entry in parsed.entries)  # as text, escaped in the XML
    json.loads((xss_site / "feed.json").read_text(encoding="utf-8"))


def test_sanitizer_keeps_what_notes_need():
    kept = sanitize.clean(
        '<h2 id="x">제목<a class="headerlink" href="#x">¶</a></h2><div class="highlight"><pre><span></span>'
        '<code><span class="k">def</span></code></pre></div><span class="arithmatex">\\(a^2\\)</span>'
        '<img alt="그림" src="../../refs/a/quick/b.svg" loading="lazy" class="ref-figure">'
        '<table><tr><th>a</th></tr></table><a href="https://arxiv.org/abs/1">x</a>')
    for piece in ('id="x"', 'class="headerlink"', 'class="highlight"', 'class="k"', 'class="arithmatex"',
                  'src="../../refs/a/quick/b.svg"', 'loading="lazy"', "<table>", 'href="https://arxiv.org/abs/1"'):
        assert piece in kept, piece


def test_chromium_runs_none_of_it(xss_site, serve, browser):
    base = serve(xss_site)
    context = browser.new_context()
    context.add_init_script(TRAP)
    page = context.new_page()
    dialogs, outside = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: not r.url.startswith(base.split("/ml-notes/")[0]) and outside.append(r.url))
    try:
        page.goto(base + "tags/", wait_until="load")  # the trap works: unsanitized markup is caught
        page.evaluate("document.querySelector('article').insertAdjacentHTML('beforeend', "
                      "'<img src=x onerror=alert(7)><b onmouseover=alert(8)>b</b>')")
        page.wait_for_function("window.__xss.length > 0")
        page.evaluate(POKE)
        assert set(page.evaluate("window.__xss")) == {"alert:7", "alert:8"}
        paths = ["", "tags/xss-tag-0/", "tags/xss-tag-1/", "people/xss-person-0/", "people/", "tags/"]
        paths += [f"notes/2016/xss-{i:02d}/" for i in range(len(payloads()))]
        for path in paths:
            page.goto(base + path, wait_until="load")
            page.evaluate(POKE)
            fired = page.evaluate("window.__xss")
            assert fired == [], (path, fired)
        page.goto(base, wait_until="networkidle")
        page.fill(".md-search__input", "XSS")
        page.wait_for_selector('[data-digest-search-result][data-state=done][data-query="XSS"]')
        assert page.locator(".md-search-result__item").count() > 0
        assert page.evaluate("window.__xss") == []
    finally:
        context.close()
    assert dialogs == []
    assert outside == [], outside
