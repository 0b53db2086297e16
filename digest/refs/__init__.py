"""Stage 3, run references: reference implementations executed, their results kept true.

    refs/<name>/ (code, data, ref.yml) ──codehash──▶ code_sha256 (by content, not by place)
                 │
                 └─engine: run in a subprocess (checkpoints in state/, --resume, progress)
                                   ──▶ results/<profile>/results.json + figures (Results)

``style`` is the one module references import (Korean figure labels, reproducible files).
Content validation and the site read ``Results``; nothing here renders pages.
"""
