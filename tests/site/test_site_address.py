"""Where the site is published comes from the environment, so a fork (or a custom domain) gets
its own links: mkdocs.yml reads $DIGEST_SITE_URL and $DIGEST_REPO_URL, which the pages and weekly
workflows set from the repository's GitHub Pages settings, and the email digest reads the same
address."""

from __future__ import annotations

from pathlib import Path

from sitekit import ROOT, Elements, mkdocs_build

from digest.mail.message import mail_settings, site_url_default

FORK_SITE = "https://notes.example.org/ml/"
FORK_REPO = "https://github.com/someone/ml-notes-fork"
NOTE = "notes/2016/yes-you-should-understand-backprop/"


def test_a_fork_publishes_under_its_own_address_with_edit_links_to_its_own_repository(tmp_path):
    site = tmp_path / "site"
    mkdocs_build(site, env={"DIGEST_SITE_URL": FORK_SITE, "DIGEST_REPO_URL": FORK_REPO})
    page = Elements()
    page.feed((site / NOTE / "index.html").read_text(encoding="utf-8"))
    links = [attrs for tag, attrs in page.tags if tag == "link"]
    assert {"rel": "canonical", "href": FORK_SITE + NOTE} in links
    hrefs = [attrs.get("href", "") for tag, attrs in page.tags if tag == "a"]
    note_file = "content/notes/2016/yes-you-should-understand-backprop.yml"
    assert f"{FORK_REPO}/edit/main/{note_file}" in hrefs and f"{FORK_REPO}/blob/main/{note_file}" in hrefs
    assert not [h for h in hrefs if "example/ml-notes" in h or "example.github.io" in h]
    feed = (site / "feed.xml").read_text(encoding="utf-8")
    assert f"<id>{FORK_SITE}{NOTE}</id>" in feed and "example.github.io" not in feed
    assert f"<loc>{FORK_SITE}</loc>" in (site / "sitemap.xml").read_text(encoding="utf-8")


def test_the_email_links_to_the_address_in_mkdocs_yml_unless_DIGEST_SITE_URL_says_otherwise(tmp_path):
    sender = {"DIGEST_FROM": "ML 읽기 노트 <digest@example.org>"}
    assert site_url_default(ROOT / "mkdocs.yml") == "https://example.github.io/ml-notes/"
    assert mail_settings({**sender, "DIGEST_SITE_URL": FORK_SITE}).site_url == FORK_SITE
    for line, address in (("site_url: https://a.example.org/x/", "https://a.example.org/x/"),
                          ('site_url: !ENV [DIGEST_SITE_URL, "https://b.example.org/"]', "https://b.example.org/")):
        config = Path(tmp_path / "mkdocs.yml")
        config.write_text(f"site_name: x\n{line}\n", encoding="utf-8")
        assert site_url_default(config) == address
