"""Writing files so that a crash never leaves half of one: ``write_atomic``, or ``beside`` and
``os.replace`` where the rename must wait for something else (a subscription still valid)."""

from __future__ import annotations

import os
from pathlib import Path


def beside(path: Path, data: str | bytes, private: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to a hidden file beside ``path``; ``os.replace`` it onto
    ``path`` to commit. ``private``: readable by its owner only (an email holds an address)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    with os.fdopen(fd, "wb") as out:
        if private:
            os.fchmod(fd, 0o600)  # an older tmp file left by a crash keeps its mode through O_CREAT
        out.write(data.encode("utf-8") if isinstance(data, str) else data)
    return tmp


def write_atomic(path: Path, data: str | bytes, private: bool = False) -> None:
    """Replace ``path`` with ``data`` in one rename: a reader sees the old file or the new one,
    never a part."""
    os.replace(beside(path, data, private), path)
