"""Stage 1, load: find the content files and read each into marked YAML nodes.

Nothing here judges meaning; a file that cannot be read safely becomes a
diagnostic and the others are still read, so one pass reports every problem.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from digest.content.yamlread import Node, decode, parse
from digest.diagnostics import Diagnostic
from digest.errors import ContentError, YamlInputError

NOTES_DIR = "notes"
TAGS_FILE = "tags.yml"
PEOPLE_FILE = "people.yml"
REFS_DIR = "refs"
INTRO_DIR = "digest"  # the editor's optional intros of weekly issues: digest/<yyyy>-W<ww>.yml
REF_MANIFEST = "ref.yml"


@dataclass(frozen=True)
class SourceFile:
    path: str  # as shown to people: relative to the project root, POSIX slashes
    text: str | None  # None when unreadable
    node: Node | None


@dataclass(frozen=True)
class RawContent:
    root: Path
    notes: list[SourceFile]
    tags: SourceFile | None
    people: SourceFile | None
    diagnostics: list[Diagnostic]
    intros: list[SourceFile] = field(default_factory=list)  # readable ones only (the others are diagnostics)


def display_path(path: Path, root: Path) -> str:
    base = root.resolve().parent
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


@contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_parsed: dict[str, tuple[bytes, SourceFile]] | None = None  # see remember_parses


def remember_parses(on: bool = True) -> None:
    """Keep each file's parse for the next load (`mkdocs serve`: a rebuild after one saved note
    parses that note, not every note). Parses are read-only, so sharing them is safe."""
    global _parsed
    _parsed = {} if on else None


def read_one(path: Path | str, shown: str, diagnostics: list[Diagnostic]) -> SourceFile:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        diagnostics.append(Diagnostic(shown, 1, 1, "error", f"cannot read file: {exc.strerror}"))
        return SourceFile(shown, None, None)
    if _parsed is not None and (kept := _parsed.get(shown)) and kept[0] == data:
        return kept[1]
    try:
        text = decode(shown, data)
        parsed = SourceFile(shown, text, parse(shown, text))
        if _parsed is not None:
            _parsed[shown] = (data, parsed)
        return parsed
    except YamlInputError as exc:
        diagnostics.append(Diagnostic(shown, exc.line, exc.col, "error", exc.message, exc.hint))
        return SourceFile(shown, None, None)


def note_paths(root: Path) -> list[str]:
    """Every note file under root/notes, as relative POSIX paths ("notes/2016/x.yml"), sorted.

    Strings, not Path objects: at 10,000 notes pathlib's bookkeeping costs more than the reading.
    """
    found = []
    base = str(root)
    for folder, _, names in os.walk(os.path.join(base, NOTES_DIR)):
        rel = os.path.relpath(folder, base).replace(os.sep, "/")
        found.extend(f"{rel}/{n}" for n in names if n.endswith((".yml", ".yaml")))
    return sorted(found)


def load(root: Path) -> RawContent:
    """Read every content file under ``root`` (the content/ folder)."""
    root = Path(root)
    if not (root / NOTES_DIR).is_dir():
        raise ContentError(f"no notes folder at {root / NOTES_DIR}; run digest from the project root "
                           "or pass --content PATH")
    diagnostics: list[Diagnostic] = []

    def registry(name: str) -> SourceFile | None:
        path = root / name
        if not path.is_file():
            diagnostics.append(Diagnostic(display_path(path, root), 1, 1, "error",
                                          f"registry {name} is missing", f"create {name}"))
            return None
        return read_one(path, display_path(path, root), diagnostics)

    tags = registry(TAGS_FILE)
    people = registry(PEOPLE_FILE)
    shown_root = display_path(root, root)
    with gc_paused():  # many small objects, no cycles: the collector only costs time here
        notes = [read_one(os.path.join(root, rel), f"{shown_root}/{rel}", diagnostics)
                 for rel in note_paths(root)]
    intros = [read_one(path, display_path(path, root), diagnostics) for path in intro_paths(root)]
    return RawContent(root, notes, tags, people, diagnostics, [i for i in intros if i.node is not None])


def intro_paths(root: Path) -> list[Path]:
    folder = Path(root) / INTRO_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
