"""Jinja2 templates of the package (notes, site pages, emails), loaded from this folder."""

from __future__ import annotations

import json
from functools import cache

import jinja2


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("digest", "templates"),
        autoescape=jinja2.select_autoescape(("html", "xml", "html.j2", "xml.j2")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    # A YAML double-quoted scalar: JSON strings are valid YAML and escape everything risky.
    env.filters["yq"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env
