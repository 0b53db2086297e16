"""Allow-list sanitizing of rendered page HTML: note bodies come from strangers' pull requests.

``clean`` keeps what Markdown, our templates and the Markdown extensions in
mkdocs.yml produce (headings, lists, tables, code highlighted by Pygments, math
left for KaTeX as text, figures) and drops everything else: scripts and styles
with their content, event handlers, forms, frames, embedded objects, ``style``
attributes, and URLs other than http(s), mailto and site-relative ones.

Two rules go beyond ammonia's defaults, because the page around the note is
Material's and must not be reached from inside it:

* images load only from the site itself: an external ``src`` would be a request
  to a third-party host on page load, so it is dropped;
* ``id`` values starting with ``__`` (Material's own elements: ``__config``,
  ``__search``…) and ``md-*`` classes (Material's layout) are dropped, so a note
  cannot clobber the theme's elements or dress itself as its interface.
"""

from __future__ import annotations

import re

import nh3

TAGS = frozenset({
    "a", "abbr", "article", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd", "del",
    "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5",
    "h6", "header", "hr", "i", "img", "ins", "kbd", "li", "mark", "nav", "ol", "p", "pre", "q", "rp", "rt",
    "ruby", "s", "samp", "section", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "time", "tr", "u", "ul", "var", "wbr",
})
ATTRIBUTES = {
    "*": {"class", "id", "title", "lang", "dir", "aria-label", "aria-hidden"},
    "a": {"href", "hreflang", "type"},
    "img": {"src", "alt", "width", "height", "loading"},
    "time": {"datetime"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "ol": {"start", "reversed"},
    "li": {"value"},
    "abbr": {"title"},
    "details": {"open"},
    "col": {"span"},
    "colgroup": {"span"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
CLEAN_CONTENT_TAGS = frozenset({"script", "style", "template", "noscript", "textarea", "select", "title",
                                "xmp", "iframe", "noembed", "noframes", "object", "embed"})
_EXTERNAL = re.compile(r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//|\\\\)")


def _attribute(element: str, attribute: str, value: str) -> str | None:
    """Per-attribute rules beyond the allow-list (called by ammonia for each kept attribute)."""
    if attribute == "id":
        return None if value.startswith("__") else value
    if attribute == "class":
        kept = [c for c in value.split() if not c.startswith("md-")]
        return " ".join(kept) or None
    if element == "img" and attribute == "src" and _EXTERNAL.match(value):
        return None  # only images the site serves: no third-party request when a page loads
    return value


def clean(html: str) -> str:
    """Sanitized HTML: everything not on the allow-list is removed."""
    return nh3.clean(
        html,
        tags=set(TAGS),
        clean_content_tags=set(CLEAN_CONTENT_TAGS),
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        attribute_filter=_attribute,
        url_schemes=set(URL_SCHEMES),
        link_rel=None,
        strip_comments=True,
    )
