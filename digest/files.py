"""Writing files so that a crash never leaves half of one: ``write_atomic``, or ``beside`` and
``os.replace`` where the rename must wait for something else (a subscription still valid)."""

from __future__ import annotations

import os
from pathlib import Path


def beside(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to a hidden file beside ``path``; ``os.replace`` it onto
    ``path`` to commit."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return tmp


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` in one rename: a reader sees the old file or the new one,
    never a part."""
    os.replace(beside(path, data), path)
