"""What the site shows from the other two products, gathered here so that the site imports neither.

    mail (compose)    ──issue pages, digest feed, latest issue──┐
                                                                ├─→ Extras ─→ site.render_site
    service (app)     ──the subscribe form (HTML fragment)──────┘
"""

from __future__ import annotations

from digest.content.model import Content
from digest.mail.compose import all_issues, issue_page, web_pages
from digest.service.app import subscribe_form_html
from digest.site.records import Extras, Link, Page, TextFile


def site_extras(content: Content, site_url: str, service_url: str | None = None) -> Extras:
    """The digest's issue pages, their feed and the latest issue, and the subscribe form posting to
    ``service_url`` (None: no service, so no form and the pages point to the feeds)."""
    issues = all_issues(content, site_url)
    pages, files = web_pages(issues, site_url)
    latest = issues[0] if issues else None
    link = Link(latest.title, issue_page(latest.week), latest.week.sunday, latest.preheader) if latest else None
    form = subscribe_form_html(service_url, content.tags) if service_url is not None else ""
    return Extras(pages=[Page(p, t) for p, t in pages], files=[TextFile(p, t) for p, t in files],
                  latest_issue=link, subscribe_form=form)
