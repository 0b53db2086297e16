"""digest: curated ML reading notes in Korean, from YAML to a static site and a weekly email.

The pipeline, one package per stage, plain functions over typed records, and three products::

    content/  ──load──▶ RawContent ──validate──▶ Content ─┐            (digest.content)
    refs/<name>/ ──run──▶ Results (results.json + figures) ─┤            (digest.refs)
                                                            ▼
                         pipeline.check: Content + references, every problem in one pass
                             │                    │                         │
                             ▼                    ▼                         ▼
      site: render_site → Site (pages,   mail: compose → Issue →      service: `digest serve`
      feeds, search)  → engine adapter   message → deliver (ledger)   (subscribe, confirm,
      (digest.site)      (mkdocs_adapter) (digest.mail)                 unsubscribe) (digest.service)
                                               │                         │
                                               └──── digest.subscribers ─┘  (subscribers, send ledger)

    digest.authoring   `digest new` and `digest links`: help a contributor write a note
    digest.pipeline    the stages in order: check, publish (what the site shows of the other
                       products), build (the main job)
    digest.cli, digest.mkdocs_adapter   the two thin adapters; nothing imports them

Below everything: ``errors`` (the exception hierarchy), ``diagnostics`` (file:line:col
problems), ``files`` (atomic writes) and ``templates`` (the Jinja2 files). What may import
what is a contract, checked by import-linter (``[tool.importlinter]`` in pyproject.toml);
docs/dev/architecture.md says where a new feature goes.
"""

__version__ = "0.1.0"
