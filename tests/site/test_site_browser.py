"""The built site in headless Chromium: pages load cleanly at desktop and phone width, math typesets,
dark mode works, and Korean search finds what the pages really contain (compared with Material's default).

Screenshots and the search report are written to tests/artifacts/site/.
"""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from korean_queries import QUERIES
from sitekit import DESKTOP, PHONE

PAGES = {
    "home": "",
    "note": "notes/2016/yes-you-should-understand-backprop/",
    "tag-andrej-karpathy": "tags/andrej-karpathy/",
    "tag-google-brain": "tags/google-brain/",
    "tags": "tags/",
    "person": "people/andrej-karpathy/",
    "archive": "archive/",
    "references": "refs/",
    "feed-atom": "feed.xml",
    "feed-json": "feed.json",
    "tag-feed-atom": "tags/andrej-karpathy/feed.xml",
}


def _local_only(watch, base_url: str) -> list[str]:
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    return [u for u in watch.requests if not u.startswith(origin) and not u.startswith("data:")]


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_pages_load_without_errors_or_outside_requests(open_page, base_url, artifacts, viewport):
    watch = open_page(DESKTOP if viewport == "desktop" else PHONE)
    for name, path in PAGES.items():
        response = watch.page.goto(base_url + path, wait_until="networkidle")
        assert response.status == 200, path
        watch.page.screenshot(path=str(artifacts / f"{name}-{viewport}.png"))
    # Chromium asks the server root for /favicon.ico when it shows a feed (XML, JSON): not the site's doing.
    assert [e for e in watch.errors if not e.endswith("/favicon.ico")] == []
    assert [f for f in watch.failed if urlsplit(f.split(" ")[0]).path != "/favicon.ico"] == []
    assert _local_only(watch, base_url) == []


def test_missing_page_shows_the_404_page(open_page, base_url, artifacts):
    watch = open_page()
    response = watch.page.goto(base_url + "notes/2016/no-such-note/", wait_until="networkidle")
    assert response.status == 404
    assert "페이지를 찾을 수 없습니다" in watch.page.inner_text("article")
    watch.page.screenshot(path=str(artifacts / "404-desktop.png"))
    assert [e for e in watch.errors if "no-such-note" not in e] == []
    assert [f for f in watch.failed if "no-such-note" not in f] == []
    assert _local_only(watch, base_url) == []


def test_note_renders_math_code_and_dark_mode(open_page, base_url, artifacts):
    watch = open_page(dark=True)
    watch.page.goto(base_url + "notes/2016/fast-weights-rnn/", wait_until="networkidle")
    watch.page.wait_for_selector(".arithmatex .katex", timeout=10_000)
    assert watch.page.get_attribute("body", "data-md-color-scheme") == "slate"
    background = watch.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(x) for x in re.findall(r"\d+", background)[:3]) < 200, background  # dark
    watch.page.screenshot(path=str(artifacts / "note-math-dark-desktop.png"), full_page=True)
    watch.page.goto(base_url + "notes/2016/installing-openai-gym-on-macbook/", wait_until="networkidle")
    assert watch.page.locator(".highlight code").count() > 0
    assert watch.errors == [] and watch.failed == [] and _local_only(watch, base_url) == []


# Each line break inside a link's text, as "before|after", where neither side is a space.
MID_WORD_BREAKS = """(selector) => {
  const found = [];
  for (const link of document.querySelectorAll(selector)) {
    const text = link.firstChild;
    if (!text || text.nodeType !== Node.TEXT_NODE) continue;
    const range = document.createRange();
    let lastTop = null;
    for (let i = 0; i < text.length; i++) {
      range.setStart(text, i); range.setEnd(text, i + 1);
      const rects = range.getClientRects();
      if (!rects.length) continue;  // a space the line ends on takes no room
      const top = Math.round(rects[0].top);
      if (lastTop !== null && top > lastTop + 2 && text.data[i - 1] !== " " && text.data[i] !== " ")
        found.push(text.data.slice(Math.max(0, i - 6), i) + "|" + text.data.slice(i, i + 6));
      lastTop = top;
    }
  }
  return found;
}"""


def test_korean_titles_wrap_between_words_on_a_phone(open_page, base_url):
    watch = open_page(PHONE)
    for path, selector in (("", ".digest-card__title a"), ("archive/2016/", ".digest-titles a")):
        watch.page.goto(base_url + path, wait_until="networkidle")
        assert watch.page.locator(selector).count() >= 10, path
        assert watch.page.evaluate(MID_WORD_BREAKS, selector) == [], path


PONG = "notes/2016/reinforce-pong-at-gym/"
# Every image loaded, so none above a clip changes the layout while it is looked at.
IMAGES_LOADED = """() => { document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; });
  return [...document.images].every(i => i.complete && i.naturalWidth > 0); }"""


def _two_looks(clip, page) -> tuple[bytes, bytes]:
    first = clip.screenshot()
    page.wait_for_timeout(700)  # 14 frames of the clip
    return first, clip.screenshot()


def test_a_game_clip_can_be_paused_and_played_again(open_page, base_url):
    watch = open_page()
    watch.page.goto(base_url + PONG, wait_until="networkidle")
    clip = watch.page.locator(".digest-clip").first
    clip.scroll_into_view_if_needed()
    watch.page.wait_for_function(IMAGES_LOADED)
    assert watch.page.locator("a .digest-clip").count() == 0  # its button would follow a link
    button = clip.get_by_role("button")
    assert button.get_attribute("aria-pressed") == "false"
    first, later = _two_looks(clip, watch.page)
    assert first != later  # it plays
    button.click()
    assert button.get_attribute("aria-pressed") == "true" and clip.locator("canvas").is_visible()
    assert not clip.locator("img").is_visible()  # the frozen frame in its place, not beside it
    first, later = _two_looks(clip, watch.page)
    assert first == later  # frozen on one frame
    button.click()
    assert clip.locator("img").is_visible() and not clip.locator("canvas").is_visible()
    assert watch.errors == [] and watch.failed == []


def test_a_game_clip_starts_paused_for_readers_who_ask_for_reduced_motion(open_page, base_url):
    watch = open_page()
    watch.page.emulate_media(reduced_motion="reduce")
    watch.page.goto(base_url + PONG, wait_until="networkidle")
    watch.page.wait_for_function(IMAGES_LOADED)
    for clip in watch.page.locator(".digest-clip").all():
        clip.scroll_into_view_if_needed()
        assert clip.get_by_role("button").get_attribute("aria-pressed") == "true"
        first, later = _two_looks(clip, watch.page)
        assert first == later and clip.locator("canvas").is_visible() and not clip.locator("img").is_visible()
    assert watch.errors == [] and watch.failed == []


# Where each figure of a note or of the references page sits on the page, and how big it is.
FIGURE_BOXES = """() => [...document.querySelectorAll('img.ref-figure, .digest-ref__figure img')].map(i => {
  const box = i.getBoundingClientRect();
  return [Math.round(box.top + scrollY), Math.round(box.width), Math.round(box.height)]; })"""
IMAGE_FILE = re.compile(r"\.(png|gif|svg|webp)$")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize("path", [PONG, "refs/"])
def test_figures_keep_their_place_before_their_images_arrive(open_page, base_url, path, viewport):
    waiting = open_page(viewport)
    waiting.page.route(IMAGE_FILE, lambda route: route.abort())  # images that never arrive
    waiting.page.goto(base_url + path, wait_until="networkidle")
    before = waiting.page.evaluate(FIGURE_BOXES)
    loaded = open_page(viewport)
    loaded.page.goto(base_url + path, wait_until="networkidle")
    loaded.page.wait_for_function(IMAGES_LOADED)
    after = loaded.page.evaluate(FIGURE_BOXES)
    assert before and all(height >= 100 for _, _, height in before)
    assert before == after  # nothing below a figure moves when it arrives
    assert loaded.errors == [] and loaded.failed == []


def test_a_still_figure_opens_full_size_when_tapped_on_a_phone(open_page, base_url):
    watch = open_page(PHONE)
    watch.page.goto(base_url + PONG, wait_until="networkidle")
    figure = watch.page.locator("a > img.ref-figure").first
    figure.scroll_into_view_if_needed()
    watch.page.wait_for_function(IMAGES_LOADED)
    shown_width, src = figure.evaluate("i => [i.getBoundingClientRect().width, i.src]")
    assert watch.errors == [] and watch.failed == []  # (an image alone asks the host's root for a favicon)
    figure.click()
    watch.page.wait_for_url(src)
    assert watch.page.evaluate("document.images[0].naturalWidth") > shown_width  # larger than in the column


def test_phone_search_opens_from_the_header(open_page, base_url, artifacts):
    watch = open_page(PHONE)
    watch.page.goto(base_url, wait_until="networkidle")
    watch.page.click("label.md-header__button[for=__search]")
    watch.page.fill(".md-search__input", "카패시의")
    watch.page.wait_for_selector('[data-digest-search-result][data-state=done][data-query="카패시의"]')
    watch.page.screenshot(path=str(artifacts / "search-phone.png"))
    assert watch.page.locator(".md-search-result__item mark").count() > 0
    assert watch.errors == [] and watch.failed == []


# --- search quality -----------------------------------------------------------------------------

class _NoteText(HTMLParser):
    """The note's own text on its page: the article, less the neighbours' titles and permalinks."""

    SKIP = ("digest-note__nav", "digest-note__edit", "headerlink")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.inside, self.skipping, self.parts = 0, 0, []

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class") or ""
        if tag == "article":
            self.inside += 1
        if self.inside and (self.skipping or any(c in classes.split() for c in self.SKIP)):
            self.skipping += 1

    def handle_endtag(self, tag):
        if self.skipping:
            self.skipping -= 1
        if tag == "article":
            self.inside -= 1

    def handle_data(self, data):
        if self.inside and not self.skipping:
            self.parts.append(data)


def note_texts(site: Path) -> dict[str, str]:
    texts = {}
    for page in sorted((site / "notes").rglob("index.html")):
        parser = _NoteText()
        parser.feed(page.read_text(encoding="utf-8"))
        texts[page.parent.relative_to(site).as_posix() + "/"] = " ".join(parser.parts)
    return texts


def contains(text: str, word: str) -> bool:
    if re.fullmatch(r"[가-힣]+", word):
        return word in text
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", text.lower()) is not None


def relevant(texts: dict[str, str], words) -> set[str]:
    return {url for url, text in texts.items() if all(contains(text, w) for w in words)}


def _note_path(href: str, base_url: str) -> str | None:
    path = href.split("#")[0]
    if not path.startswith(base_url):
        return None
    path = path[len(base_url):]
    return path if path.startswith("notes/") else None


RESULTS_JS = """() => Array.from(document.querySelectorAll('.md-search-result__item')).map(li => {
    const a = li.querySelector('a.md-search-result__link');
    return a ? {href: a.href, marks: Array.from(li.querySelectorAll('mark')).map(m => m.textContent)} : null;
}).filter(Boolean)"""


def run_queries(page, base_url: str, ours: bool) -> dict[str, list[dict]]:
    """Type every query into the real search box; the results of each, in order."""
    page.goto(base_url, wait_until="networkidle")
    box = page.locator(".md-search__input")
    box.click()
    if not ours:  # Material's worker loads its index first
        page.wait_for_function("!/초기화/.test(document.querySelector('.md-search-result__meta').textContent)")
    found = {}
    for _, query, _ in QUERIES:
        box.fill(query)
        box.press("End")  # a keyup, which Material's search listens to
        if ours:
            done = f'[data-digest-search-result][data-state=done][data-query="{query}"]'
            page.wait_for_selector(done)
            while page.locator(".digest-search__more button").count():  # every result, not the first ten
                page.click(".digest-search__more button")
                page.wait_for_selector(done)
            found[query] = page.evaluate(RESULTS_JS)
        else:
            found[query] = _settled(page)
    return found


def _settled(page, quiet: float = 0.6, limit: float = 8.0) -> list[dict]:
    """Material renders results asynchronously: wait until they stop changing."""
    last, since, start = None, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit:
        # Material renders ten results and more as the list scrolls: scroll to the end for all of them.
        page.evaluate("document.querySelector('.md-search__scrollwrap').scrollTop = 1e9")
        now = page.evaluate(RESULTS_JS)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet:
            break
        page.wait_for_timeout(100)
    return last or []


def measure(found, texts, base_url) -> dict:
    rows, hits, total, unrelated, unmarked = [], 0, 0, [], []
    for kind, query, words in QUERIES:
        want = relevant(texts, words)
        pages = []
        for result in found[query]:
            path = _note_path(result["href"], base_url)
            if path and path not in pages:
                pages.append(path)
        got = want & set(pages)
        hits, total = hits + len(got), total + len(want)
        wrong = [p for p in pages[:5] if p not in want]
        if wrong:
            unrelated.append((query, wrong))
        first = found[query][0] if found[query] else None
        marked = bool(first) and any(m.strip() and any(w in m.lower() or m.lower() in w for w in words)
                                     for m in first["marks"])
        if want and not marked:
            unmarked.append(query)
        rows.append((kind, query, len(want), len(got), len(wrong)))
    return {"recall": hits / total, "rows": rows, "unrelated": unrelated, "unmarked": unmarked}


def test_korean_search_recall_against_material_default(open_page, serve, site_dir, default_search_site,
                                                       artifacts):
    assert len(QUERIES) >= 30
    texts = note_texts(site_dir)
    assert all(relevant(texts, words) for _, _, words in QUERIES), "every query has a relevant page"
    ours_url, default_url = serve(site_dir), serve(default_search_site)
    ours_watch, default_watch = open_page(), open_page()
    ours = measure(run_queries(ours_watch.page, ours_url, ours=True), texts, ours_url)
    default = measure(run_queries(default_watch.page, default_url, ours=False), texts, default_url)

    lines = ["# Korean search: recall on the project's notes", "",
             f"queries: {len(QUERIES)}; recall: ours {ours['recall']:.3f}, Material default {default['recall']:.3f}",
             "", "| kind | query | relevant | ours found | ours unrelated in top 5 | default found |",
             "| --- | --- | --- | --- | --- | --- |"]
    for mine, theirs in zip(ours["rows"], default["rows"], strict=True):
        lines.append(f"| {mine[0]} | {mine[1]} | {mine[2]} | {mine[3]} | {mine[4]} | {theirs[3]} |")
    report = "\n".join(lines) + "\n"
    (artifacts / "search-recall.md").write_text(report, encoding="utf-8")
    print("\n" + report)

    assert ours["recall"] >= 0.95, report
    assert ours["unrelated"] == [], ours["unrelated"]
    assert ours["unmarked"] == [], f"no highlighted word in the first result of {ours['unmarked']}"
    assert ours["recall"] > default["recall"]
    assert ours_watch.errors == [] and ours_watch.failed == []
