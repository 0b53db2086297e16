"""digest: curated ML reading notes in Korean, from YAML to a static site and a weekly email.

The pipeline, one module per stage, each a plain function over typed records:
load → validate → run references → render site → compose issue → deliver.
"""

__version__ = "0.1.0"
