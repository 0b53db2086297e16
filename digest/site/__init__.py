"""The site, a product: checked content and results → pages, feeds and a search index.

    Content + Results + Extras ──render──▶ Site (Page, Asset, TextFile)
                                  │  └── search: Korean index files (Kiwi at build time)
                                  ▼
              the engine adapter (digest.mkdocs_adapter) ── sanitize ──▶ HTML on disk

``render_site`` is a pure function that names no site engine; the MkDocs hook feeds its
pages to MkDocs and passes their HTML through ``sanitize`` (notes come from strangers).
It imports neither mail nor the service: what it shows of them arrives as ``Extras``.
"""
