"""The built site/ as files: what `mkdocs build --strict` writes, checked the way a reader's browser reads it."""

from __future__ import annotations

import gzip
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import feedparser
from sitekit import Elements

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT.parent / "shared" / "seeds"
SITE_URL = "https://example.github.io/ml-notes/"
ATOM = "{http://www.w3.org/2005/Atom}"

# The seed tag archives (newest first): the title each post had there, and our note for it.
SEED_KARPATHY = [
    ("Discuss in Arxiv-Sanity", "2017/discuss-in-arxiv-sanity"),
    ("MIT 6.S094: DL for Self-Driving Cars", "2017/mit-6s094-deep-learning-for-self-driving-cars"),
    ("역전파, 직접 짜봐야 하나요?", "2016/yes-you-should-understand-backprop"),
    ("GAN & PixelCNN", "2016/gan-and-pixelcnn"),
    ("해커가 알려주는 뉴럴 네트워크", "2016/hackers-guide-to-neural-networks"),
    ("Andrej Karpathy’s Quora Session", "2016/andrej-karpathy-quora-session"),
    ("OpenAI and ML Unconference", "2016/openai-ml-unconference"),
    ("Andrej Karpathy’s Paper Notes", "2016/andrej-karpathy-paper-notes"),
    ("Reinforce Pong at Gym", "2016/reinforce-pong-at-gym"),
    ("OpenAI Gym 맥북 설치", "2016/installing-openai-gym-on-macbook"),
]
SEED_GOOGLE_BRAIN = [
    ("Fast Weights RNN", "2016/fast-weights-rnn"),
    ("Quora Sessions, RedditAMA", "2016/quora-sessions-reddit-ama"),
    ("Ask Jeff Dean", "2016/ask-jeff-dean"),
    ("Unsupervised Learning through Video Prediction", "2016/unsupervised-learning-through-video-prediction"),
]


def elements(path: Path) -> list[tuple[str, dict[str, str]]]:
    parser = Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


def html_files(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def article(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[text.index("<article"):text.index("</article>")]


def test_build_is_strict_and_without_warning(built):
    _, log = built
    assert "WARNING" not in log and "Error" not in log, log


def test_html_is_korean(site_dir):
    for path in (site_dir / "index.html", site_dir / "notes/2016/ask-jeff-dean/index.html", site_dir / "404.html"):
        assert '<html lang="ko"' in path.read_text(encoding="utf-8")


def _card_links(path: Path) -> list[str]:
    found = re.findall(r'<h2 class="digest-card__title"><a href="([^"]+)"', article(path))
    return [urljoin("/" + str(path.parent.relative_to(path.parents[2])) + "/", link) for link in found]


def _seed_order_is_the_seed_pages(seed: list[tuple[str, str]], file_prefix: str) -> None:
    files = sorted(SEEDS.glob(f"{file_prefix}_*.txt")) if SEEDS.is_dir() else []
    if not files:
        return  # shared/ beside the clone is optional; the order is also written above
    text = files[0].read_text(encoding="utf-8").replace("\xa0", " ")  # the seed pages use no-break spaces
    positions = [text.index(title) for title, _ in seed]
    assert positions == sorted(positions), "the expected order no longer matches the seed page"


def test_seed_tag_archives_list_the_seed_posts_in_order(site_dir):
    _seed_order_is_the_seed_pages(SEED_KARPATHY, "000")
    _seed_order_is_the_seed_pages(SEED_GOOGLE_BRAIN, "002")
    for tag, seed, title in (("andrej-karpathy", SEED_KARPATHY, "Andrej Karpathy"),
                             ("google-brain", SEED_GOOGLE_BRAIN, "Google Brain")):
        page = site_dir / "tags" / tag / "index.html"
        html = page.read_text(encoding="utf-8")
        assert f"<h1>태그 보관물: {title}</h1>" in html
        assert f"<title>태그 보관물: {title} - ML 읽기 노트</title>" in html
        links = re.findall(r'<h2 class="digest-card__title"><a href="\.\./\.\./notes/([^"]+)/"', html)
        assert links == [slug for _, slug in seed]


def test_tag_index_has_counts(site_dir):
    html = (site_dir / "tags/index.html").read_text(encoding="utf-8")
    assert re.search(r'href="\.\./tags/andrej-karpathy/">Andrej Karpathy</a> <span class="digest-count"[^>]*>10<', html)
    assert re.search(r'href="\.\./tags/google-brain/">Google Brain</a> <span class="digest-count"[^>]*>4<', html)


def test_people_kind_and_archive_pages(site_dir):
    person = (site_dir / "people/andrej-karpathy/index.html").read_text(encoding="utf-8")
    assert "안드레이 카패시" in person and "Andrej Karpathy" in person
    assert 'href="https://karpathy.github.io/"' in person
    assert person.count('class="digest-card"') == 10
    kinds = (site_dir / "kinds/paper/index.html").read_text(encoding="utf-8")
    assert "<h1>종류: 논문</h1>" in kinds
    archive = (site_dir / "archive/index.html").read_text(encoding="utf-8")
    assert 'href="../archive/2017/03/">3월</a>' in archive and 'href="../archive/2016/">2016년</a>' in archive
    month = (site_dir / "archive/2016/12/index.html").read_text(encoding="utf-8")
    assert "yes-you-should-understand-backprop" in month


def test_notes_are_not_in_the_navigation(site_dir):
    html = (site_dir / "notes/2016/ask-jeff-dean/index.html").read_text(encoding="utf-8")
    start = html.index('<nav class="md-nav md-nav--primary')
    nav = html[start:html.index("</nav>", start)]
    assert "notes/" not in nav
    sizes = [p.stat().st_size for p in (site_dir / "notes").rglob("index.html")]
    assert max(sizes) < 80_000


def test_note_page_meta_open_graph_and_canonical(site_dir):
    html = (site_dir / "notes/2016/yes-you-should-understand-backprop/index.html").read_text(encoding="utf-8")
    url = SITE_URL + "notes/2016/yes-you-should-understand-backprop/"
    assert f'<link rel="canonical" href="{url}">' in html
    assert f'<meta property="og:url" content="{url}">' in html
    assert '<meta property="og:type" content="article">' in html
    assert '<meta property="og:title" content="역전파, 정말 직접 짜 봐야 할까?">' in html
    assert '<meta property="article:published_time" content="2016-12-21">' in html
    assert '<meta name="twitter:card" content="summary">' in html
    assert 'name="description" content="텐서플로가 기울기를 자동으로' in html
    assert '<link rel="alternate" type="application/atom+xml"' in html
    assert "<title>역전파, 정말 직접 짜 봐야 할까? - ML 읽기 노트</title>" in html


def test_a_note_with_figures_shares_its_first_still_figure_as_the_link_preview(site_dir):
    def meta(path: str) -> dict[str, str]:
        tags = elements(site_dir / path / "index.html")
        return {a.get("property") or a.get("name"): a.get("content", "") for t, a in tags if t == "meta"}

    gates = meta("notes/2016/hackers-guide-to-neural-networks")
    image = gates["og:image"]
    assert image.startswith(SITE_URL + "refs/backprop-gates/") and image.endswith(".png")
    assert (site_dir / image.removeprefix(SITE_URL)).stat().st_size > 0  # published with the site
    assert gates["twitter:card"] == "summary_large_image"
    # Pong's learning curve: so far while its run is unfinished, then the full run's
    pong = meta("notes/2016/reinforce-pong-at-gym")["og:image"]
    assert pong in {f"{SITE_URL}refs/pong-reinforce/{run}/learning_curve.png" for run in ("full-progress", "full")}
    plain = meta("notes/2016/fast-weights-rnn")  # no figures: no image, the small card
    assert "og:image" not in plain and plain["twitter:card"] == "summary"


def test_math_and_code_are_marked_up_for_local_rendering(site_dir):
    math = (site_dir / "notes/2016/fast-weights-rnn/index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in math
    code = (site_dir / "notes/2016/installing-openai-gym-on-macbook/index.html").read_text(encoding="utf-8")
    assert '<div class="highlight">' in code
    for asset in ("assets/katex/katex.min.js", "assets/katex/katex.min.css", "assets/katex/auto-render.min.js",
                  "assets/katex/fonts/KaTeX_Main-Regular.woff2", "assets/javascripts/digest-math.js"):
        assert (site_dir / asset).is_file(), asset


LOADING = {  # (tag, attribute) pairs whose URL the browser fetches when the page loads
    ("script", "src"), ("img", "src"), ("img", "srcset"), ("iframe", "src"), ("source", "src"),
    ("video", "src"), ("audio", "src"), ("video", "poster"), ("embed", "src"), ("object", "data"),
    ("input", "src"), ("track", "src"),
}
LOADING_LINK_RELS = {"stylesheet", "icon", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch",
                     "manifest", "apple-touch-icon"}


def _loaded_urls(path: Path) -> list[str]:
    urls = []
    for tag, attrs in elements(path):
        for name, value in attrs.items():
            if (tag, name) in LOADING and value:
                urls.append(value)
        if tag == "link" and set(attrs.get("rel", "").split()) & LOADING_LINK_RELS:
            urls.append(attrs.get("href", ""))
    text = path.read_text(encoding="utf-8")
    urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", text)  # inline styles
    urls += re.findall(r"@import\s+['\"]([^'\"]+)", text)
    return urls


def _is_third_party(url: str) -> bool:
    parts = urlsplit(url.strip())
    return bool(parts.scheme and parts.scheme not in ("data",) or parts.netloc)


def test_no_page_loads_anything_from_another_host(site_dir):
    offenders = []
    for path in html_files(site_dir):
        offenders += [f"{path.relative_to(site_dir)}: {u}" for u in _loaded_urls(path) if _is_third_party(u)]
    for css in site_dir.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        offenders += [f"{css.relative_to(site_dir)}: {u}" for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", text)
                      if _is_third_party(u)]
        offenders += [f"{css.relative_to(site_dir)}: @import" for _ in re.findall(r"@import", text)]
    assert not offenders, offenders[:20]
    assert "fonts.googleapis.com" not in (site_dir / "index.html").read_text(encoding="utf-8")


def _target(site: Path, page: Path, link: str) -> Path | None:
    """The file a site-internal link points to, or None for links elsewhere."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith("#") or not parts.path:
        if link.startswith(SITE_URL):
            return site / unquote(link[len(SITE_URL):].split("#")[0])
        return None
    base = page.parent if page.name == "index.html" or page.suffix != ".html" else page.parent
    return (base / unquote(parts.path)).resolve()


def test_every_internal_link_resolves(site_dir):
    broken = []
    for page in html_files(site_dir):
        if page.name == "404.html":
            continue  # its links are absolute to the site's path, checked below
        for tag, attrs in elements(page):
            for name in ("href", "src"):
                link = attrs.get(name)
                if not link or tag == "link" and "canonical" in attrs.get("rel", ""):
                    continue
                target = _target(site_dir, page, link)
                if target is None:
                    continue
                if target.is_dir():
                    target = target / "index.html"
                if not target.exists():
                    broken.append(f"{page.relative_to(site_dir)}: {link}")
    for css in site_dir.rglob("*.css"):
        for link in re.findall(r"url\(\s*['\"]?([^'\")#?]+)", css.read_text(encoding="utf-8")):
            if not link.startswith("data:") and not (css.parent / link).exists():
                broken.append(f"{css.relative_to(site_dir)}: {link}")
    assert not broken, broken[:20]


def test_sitemap_lists_existing_pages(site_dir):
    tree = ET.parse(site_dir / "sitemap.xml")
    locs = [e.text for e in tree.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    assert SITE_URL + "notes/2016/ask-jeff-dean/" in locs and SITE_URL + "tags/google-brain/" in locs
    for loc in locs:
        assert (site_dir / loc[len(SITE_URL):] / "index.html").is_file() or (site_dir / loc[len(SITE_URL):]).is_file()


def test_404_page_in_korean(site_dir):
    html = (site_dir / "404.html").read_text(encoding="utf-8")
    assert "페이지를 찾을 수 없습니다" in html and 'href="/ml-notes/tags/"' in html


def test_feeds_validate(site_dir):
    for path in ("feed.xml", "tags/andrej-karpathy/feed.xml", "tags/google-brain/feed.xml"):
        text = (site_dir / path).read_text(encoding="utf-8")
        parsed = feedparser.parse(text)
        assert not parsed.bozo, (path, parsed.bozo_exception)
        feed = ET.fromstring(text.encode())
        assert feed.tag == ATOM + "feed"
        for name in ("id", "title", "updated", "author"):
            assert feed.find(ATOM + name) is not None, (path, name)
        assert feed.find(f"{ATOM}link[@rel='self']").get("href") == SITE_URL + path
        for entry in feed.findall(ATOM + "entry"):
            for name in ("id", "title", "updated"):
                assert (entry.findtext(ATOM + name) or "").strip(), (path, name)
            link = entry.find(f"{ATOM}link[@rel='alternate']").get("href")
            assert (site_dir / link[len(SITE_URL):] / "index.html").is_file(), link
    assert len(feedparser.parse((site_dir / "tags/andrej-karpathy/feed.xml").read_text()).entries) == 10
    for path in ("feed.json", "tags/google-brain/feed.json"):
        feed = json.loads((site_dir / path).read_text(encoding="utf-8"))
        assert feed["version"] == "https://jsonfeed.org/version/1.1"
        assert {"title", "home_page_url", "feed_url", "items"} <= set(feed)
        for item in feed["items"]:
            assert item["id"] and ("content_text" in item or "content_html" in item)


def _gzip_size(paths) -> int:
    return sum(len(gzip.compress(p.read_bytes(), 9)) for p in paths)


def test_search_index_is_at_most_twice_the_default_one(site_dir, default_search_site):
    ours = _gzip_size((site_dir / "search").rglob("*.json"))
    default = _gzip_size([default_search_site / "search" / "search_index.json"])
    print(f"\nsearch index, gzip: ours {ours / 1024:.1f} KiB, Material's default {default / 1024:.1f} KiB "
          f"({ours / default:.2f}x)")
    assert ours <= 2 * default
