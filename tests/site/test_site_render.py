"""render_site on its own (no MkDocs): pages and URLs, escaping, pagination, feeds, the digest hook.

Golden files in tests/site/golden/ hold the rendered pages of real notes; after an
intended change, `make golden` (DIGEST_UPDATE_GOLDEN=1) rewrites them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import os
import posixpath
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import feedparser
import pytest

from digest.content.directives import format_metric
from digest.content.model import KINDS, Tag
from digest.pipeline.check import load_content
from digest.site.records import Extras, Link, Page, SiteConfig, TextFile
from digest.site.render import DuplicatePageError, http_url, paginate, relative_url, render_site, url_of
from digest.subscribers.store import PURGE_AFTER_DAYS

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "site" / "golden"
ATOM = "{http://www.w3.org/2005/Atom}"
TODAY = dt.date(2026, 11, 23)


@pytest.fixture(scope="module")
def real():
    """The real content's site, with the subscribe form a local build embeds (no digest issues)."""
    from digest.mkdocs_adapter import LOCAL_SERVICE
    from digest.service.app import subscribe_form_html

    content, refs = load_content(ROOT / "content", today=TODAY)
    form = subscribe_form_html(LOCAL_SERVICE, content.tags)
    return content, refs, render_site(content, refs, extras=Extras(subscribe_form=form))


def pages_of(site) -> dict[str, Page]:
    return {p.path: p for p in site.pages}


def files_of(site) -> dict[str, str]:
    return {f.path: f.text for f in site.files}


def test_every_page_of_the_issue_is_generated(real):
    content, _, site = real
    pages = pages_of(site)
    expected = {"index.md", "tags/index.md", "people/index.md", "kinds/index.md", "archive/index.md",
                "archive/2016.md", "archive/2016/12.md", "archive/2017/03.md"}
    expected |= {f"notes/{n.date.year}/{n.slug}.md" for n in content.published}
    expected |= {f"tags/{t}.md" for t in content.tags} | {f"people/{p}.md" for p in content.people}
    expected |= {f"kinds/{k}.md" for k in KINDS}
    assert expected <= set(pages)
    files = files_of(site)
    assert {"feed.xml", "feed.json", "tags/andrej-karpathy/feed.xml", "tags/google-brain/feed.json",
            "search/manifest.json"} <= set(files)


def test_urls_are_stable_directory_urls():
    assert url_of("notes/2016/x.md") == "notes/2016/x/"
    assert url_of("index.md") == "" and url_of("tags/index.md") == "tags/"
    assert url_of("feed.xml") == "feed.xml"
    assert relative_url("notes/2016/x.md", "tags/a.md") == "../../notes/2016/x/"
    assert relative_url("index.md", "notes/2016/x.md") == "../../../"
    assert relative_url("tags/a/feed.xml", "index.md") == "tags/a/feed.xml"
    assert relative_url("index.md", "index.md") == "./"


def test_people_index_lists_everyone_in_korean_alphabetical_order(real):
    content, _, site = real
    text = pages_of(site)["people/index.md"].before  # the page's HTML, ahead of the sanitizer
    listed = re.findall(r'<li><a href="[^"]+">([^<]+?) <span lang="en">', text)
    assert sorted(listed) == listed and set(listed) == {p.ko for p in content.people.values()}
    assert listed[:2] == ["김태훈", "렉스 프리드먼"]  # 가나다: ㄱ before ㄹ, whatever the registry's order


def test_tag_archive_is_newest_first_with_the_korean_title(real):
    content, _, site = real
    page = pages_of(site)["tags/google-brain.md"]
    assert "<h1>태그 보관물: Google Brain</h1>" in page.before
    order = [page.before.index(f"notes/{n.date.year}/{n.slug}/") for n in content.published if "google-brain" in n.tags]
    assert order == sorted(order) and len(order) == 4


def test_note_page_has_meta_links_prev_next_and_edit_link(real):
    content, _, site = real
    notes = list(content.published)
    i = next(k for k, n in enumerate(notes) if n.slug == "yes-you-should-understand-backprop")
    page = pages_of(site)["notes/2016/yes-you-should-understand-backprop.md"]
    assert 'datetime="2016-12-21"' in page.before and "2016년 12월 21일" in page.before
    assert 'href="../../../kinds/tutorial/"' in page.before
    assert 'href="../../../people/andrej-karpathy/"' in page.before and "(Andrej Karpathy)" in page.before
    assert 'href="../../../tags/backprop/"' in page.before
    assert "## 역전파는 새는 추상화다" in page.text  # the body stays Markdown for MkDocs
    assert 'href="https://medium.com/@karpathy/yes-you-should-understand-backprop-e2f06eab496b"' in page.after
    older, newer = notes[i + 1], notes[i - 1]
    assert f'href="../../{older.date.year}/{older.slug}/"' in page.after.replace("../../../notes/", "../../")
    assert newer.slug in page.after and older.slug in page.after
    edit = "https://github.com/example/ml-notes/edit/main/content/notes/2016/yes-you-should-understand-backprop.yml"
    assert f'href="{edit}"' in page.after


def test_arxiv_ids_are_linked(real):
    _, _, site = real
    page = pages_of(site)["notes/2016/fast-weights-rnn.md"]
    assert 'href="https://arxiv.org/abs/1610.06258"' in page.after


def test_front_matter_holds_escaped_title_and_description(real):
    content, refs, _ = real
    note = content.published[0]
    evil = dataclasses.replace(note, title='</title><script>x()</script> "quoted"', summary="a\nb & <c>")
    hacked = dataclasses.replace(content, notes=(evil,) + content.notes[1:])
    page = pages_of(render_site(hacked, refs))[f"notes/{note.date.year}/{note.slug}.md"]
    front = page.text.split("---")[1]
    assert 'title: "&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt; &#34;quoted&#34;"' in front
    assert 'description: "a b &amp; &lt;c&gt;"' in front
    assert "<script>" not in page.text + page.before + page.after


def test_fields_are_escaped_and_never_read_as_markdown(real):
    content, refs, _ = real
    tags = dict(content.tags)
    tags["backprop"] = Tag(name="[x](javascript:alert(1)) <b>역전파</b>", description="", id="backprop")
    hacked = dataclasses.replace(content, tags=tags)
    page = pages_of(render_site(hacked, refs))["tags/backprop.md"]
    assert "&lt;b&gt;역전파&lt;/b&gt;" in page.before
    assert "<b>" not in page.before and page.text.count("\n") < 10  # all HTML: no Markdown to misread


def test_source_urls_other_than_http_are_not_linked():
    assert http_url("https://arxiv.org/abs/1") == "https://arxiv.org/abs/1"
    for bad in ("javascript:alert(1)", "data:text/html,x", "ftp://x.org/", "//evil.org/x", "", None):
        assert http_url(bad) is None


def test_archives_are_paginated_and_pages_link_each_other(real):
    content, refs, _ = real
    site = render_site(content, refs, SiteConfig(page_size=4))
    pages = pages_of(site)
    karpathy = [p for p in pages if p.startswith("tags/andrej-karpathy")]
    assert sorted(karpathy) == ["tags/andrej-karpathy.md", "tags/andrej-karpathy/page/2.md",
                                "tags/andrej-karpathy/page/3.md"]
    assert 'href="../../../../tags/andrej-karpathy/page/3/"' in pages["tags/andrej-karpathy/page/2.md"].before
    assert "2 / 3쪽" in pages["tags/andrej-karpathy/page/2.md"].before
    listing = paginate("x", list(content.published), 4)
    assert [len(page.notes) for page in listing] == [4, 4, 4, 2]
    assert listing[1].previous == "x.md" and listing[1].next == "x/page/3.md"


def test_page_size_is_independent_of_the_number_of_notes(real):
    content, refs, _ = real
    notes = tuple(dataclasses.replace(n, slug=f"{n.slug}-{k}") for k in range(8) for n in content.published)
    many = dataclasses.replace(content, notes=notes)
    config = SiteConfig(page_size=5)
    small, large = pages_of(render_site(content, refs, config)), pages_of(render_site(many, refs, config))
    for path in ("tags/andrej-karpathy.md", "index.md", "people/andrej-karpathy.md"):
        assert len(large[path].before) < 1.1 * len(small[path].before) + 300, path
    assert len(large) > len(small)  # more pages, not bigger ones


def test_tag_index_counts(real):
    _, _, site = real
    index = pages_of(site)["tags/index.md"].before
    assert 'Andrej Karpathy</a> <span class="digest-count" title="노트 수">10</span>' in index
    assert 'Google Brain</a> <span class="digest-count" title="노트 수">4</span>' in index


def test_atom_feed_has_the_rfc4287_required_elements(real):
    content, _, site = real
    text = files_of(site)["feed.xml"]
    feed = ET.fromstring(text.encode())
    for name in ("id", "title", "updated", "author"):
        assert feed.find(ATOM + name) is not None, name
    entries = feed.findall(ATOM + "entry")
    assert len(entries) == min(20, len(content.published))
    for entry in entries:
        for name in ("id", "title", "updated", "summary"):
            assert (entry.findtext(ATOM + name) or "").strip(), name
        assert entry.find(ATOM + "link").get("rel") == "alternate"
    parsed = feedparser.parse(text)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.feed.language == "ko" or feed.get("{http://www.w3.org/XML/1998/namespace}lang") == "ko"
    assert parsed.entries[0].link == "https://example.github.io/ml-notes/notes/2017/discuss-in-arxiv-sanity/"


def test_json_feed_per_tag(real):
    _, _, site = real
    feed = json.loads(files_of(site)["tags/google-brain/feed.json"])
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"].endswith("Google Brain") and feed["feed_url"].endswith("/tags/google-brain/feed.json")
    assert len(feed["items"]) == 4
    for item in feed["items"]:
        assert {"id", "url", "title", "content_text", "date_published"} <= set(item)
        assert "Google Brain" in item["tags"]


def test_digest_hook_adds_pages_files_and_the_latest_issue(real):
    content, refs, _ = real
    issue = Page("digest/2016-W51.md", "---\ntitle: 다이제스트\n---\n", before="<h1>다이제스트</h1>")
    extras = Extras(pages=[issue], files=[TextFile("digest/feed.xml", "<feed/>")],
                    latest_issue=Link("이번 주 다이제스트", "digest/2016-W51.md", dt.date(2016, 12, 23), "요약"))
    site = render_site(content, refs, extras=extras)
    assert pages_of(site)["digest/2016-W51.md"] == issue
    assert files_of(site)["digest/feed.xml"] == "<feed/>"
    home = pages_of(site)["index.md"].before
    assert 'href="digest/2016-W51/"' in home and "이번 주 다이제스트" in home
    with pytest.raises(DuplicatePageError):
        render_site(content, refs, extras=Extras(pages=[Page("index.md", "")]))


def test_search_index_shards_hold_every_term_of_a_word(real):
    _, _, site = real
    files = files_of(site)
    manifest = json.loads(files["search/manifest.json"])
    terms = {}
    for n in manifest["present"]:
        terms.update(json.loads(files[f"search/terms/{n}.json"]))
    for word in ("카패시", "역전파", "신경망", "강화학습", "karpathy", "응답"):
        assert word in terms, word
        assert word[0] and ord(word[0]) % manifest["shards"] in manifest["present"]
    assert "의" in manifest["particles"] and "에서" in manifest["particles"]


# --- golden pages -------------------------------------------------------------------------------

GOLDEN_PAGES = ["notes/2016/yes-you-should-understand-backprop.md", "tags/andrej-karpathy.md", "index.md",
                "people/andrej-karpathy.md", "archive/index.md", "archive/2016.md"]


def _as_text(page: Page) -> str:
    return f"{page.text}\n<!-- before -->\n{page.before}\n<!-- after -->\n{page.after}\n"


@pytest.mark.parametrize("path", GOLDEN_PAGES + ["feed.xml"])
def test_golden_rendered_pages(real, path):
    """Rendered pages of real notes, compared with tests/site/golden/ (update: `make golden`)."""
    _, _, site = real
    actual = _as_text(pages_of(site)[path]) if path.endswith(".md") else files_of(site)[path]
    golden = GOLDEN / (path.replace("/", "__") + ".golden")
    if os.environ.get("DIGEST_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.is_file(), f"missing {golden.relative_to(ROOT)}: run `make golden`"
    assert actual == golden.read_text(encoding="utf-8"), f"{path} differs from its golden file: " \
        "if the change is intended, run `make golden` and review the diff"


def _section(page: str, anchor_id: str) -> str:
    start = page.index(f'id="{anchor_id}"')
    return page[start:page.index("</section>", start)]


def test_references_page_shows_each_reference_its_results_progress_and_citing_notes(real):
    content, refs, site = real
    page = pages_of(site)["refs/index.md"].before
    assets = {asset.path for asset in site.assets}
    for name, ref in refs.items():
        section = _section(page, name)
        shown = ref.shown()
        assert f"{shown.profile} 프로필 · {shown.finished_date} 실행" in section
        assert shown.code_sha256[:12] in section
        assert f"blob/main/content/refs/{name}/{ref.manifest.entry}" in section
        citing = [n for n in content.published if f'"{name}"' in n.body]
        assert citing and all(f'href="../notes/{n.date.year}/{n.slug}/"' in section for n in citing)
        figure = posixpath.normpath("refs/" + re.search(r'<img src="([^"]+)"', section)[1])  # page URL: refs/
        assert figure in assets  # a figure the site publishes, not a dead link
        alt = html.unescape(re.search(r'<img [^>]*alt="([^"]*)"', section)[1])
        captions = [*ref.manifest.figures.values(), *(ref.manifest.progress.figures.values()
                                                       if ref.manifest.progress else ())]
        assert any(alt.startswith(c.label) for c in captions), alt  # described in Korean, not by file stem
        for profile in ref.progress:
            if (report := ref.unfinished(profile)) is None:
                continue
            assert figure.startswith(f"refs/{name}/{profile}-progress/")  # a run in training shows its newest figure
            for key, shown_as in ref.manifest.progress.metrics.items():
                value = format_metric(report.metrics[key], shown_as.fmt)
                assert f"<li>{shown_as.label}: <strong>{value}</strong></li>" in section


def test_references_page_says_when_a_reference_has_no_results_and_no_notes(real):
    content, refs, _ = real
    bare = dataclasses.replace(refs["backprop-gates"], results={}, progress={})
    hushed = dataclasses.replace(content, notes=tuple(n for n in content.notes if "{{ ref" not in n.body))
    section = _section(pages_of(render_site(hushed, {"backprop-gates": bare}))["refs/index.md"].before,
                       "backprop-gates")
    assert "노트에 보이는 결과: 아직 없습니다 (<code>digest refs run backprop-gates</code>)" in section
    assert "인용하는 노트: 없음" in section and "<img" not in section


def test_home_and_subscribe_pages_embed_the_subscribe_form_outside_the_sanitizer():
    from digest.pipeline.check import load_content
    from digest.site.records import SiteConfig
    from digest.site.render import render_site

    content, refs = load_content(Path(__file__).resolve().parents[2] / "content")
    from digest.pipeline.publish import site_extras

    site = render_site(content, refs, SiteConfig(), site_extras(content, "", "https://digest.example.org/"))
    pages = {p.path: p for p in site.pages}
    for path in ("index.md", "subscribe/index.md"):
        form = pages[path].trusted_after
        assert 'action="https://digest.example.org/subscribe"' in form and 'method="post"' in form
        assert all(f'value="{tag}"' in form for tag in content.tags)
        assert "<script" not in form
        assert "개인정보 안내" in form and f"{PURGE_AFTER_DAYS}일 뒤 지웁니다" in form  # what happens to the address
    assert all(not p.trusted_after for path, p in pages.items() if path not in ("index.md", "subscribe/index.md"))


def test_without_a_subscription_service_the_pages_offer_the_feed_instead_of_a_dead_form(real):
    content, refs, _ = real
    from digest.pipeline.publish import site_extras

    pages = pages_of(render_site(content, refs, SiteConfig(), site_extras(content, "", None)))
    for path in ("index.md", "subscribe/index.md"):
        assert pages[path].trusted_after == "" and "<form" not in pages[path].before
        assert "이메일 구독 신청은 아직 받지 않습니다" in pages[path].before
        feed = relative_url("digest/feed.xml", path)
        assert f'<a href="{feed}">다이제스트 Atom 피드</a>로 같은 내용' in pages[path].before
    with_service = pages_of(render_site(content, refs, SiteConfig(), site_extras(content, "", "https://s.example.org/")))
    assert "아직 받지 않습니다" not in with_service["index.md"].before


@pytest.mark.parametrize("env, expected", [
    ({}, "http://127.0.0.1:8470/"),  # a newcomer's build: the `digest serve` they can start
    ({"DIGEST_SERVICE_URL": "https://subscribe.example.org/"}, "https://subscribe.example.org/"),
    ({"DIGEST_SERVICE_URL": ""}, None),  # a workflow in a repository without the variable: no form
])
def test_the_form_posts_where_DIGEST_SERVICE_URL_says_and_nowhere_when_it_is_empty(monkeypatch, env, expected):
    from digest.mkdocs_adapter import _service_url

    monkeypatch.delenv("DIGEST_SERVICE_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _service_url({}) == expected
