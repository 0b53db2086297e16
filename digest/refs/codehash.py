"""What a reference's results depend on, as one SHA-256.

Executed-docs tools usually key their cache on the document alone, so a changed
data file or imported helper leaves stale results unseen. Here the hash covers:

* every file of the reference folder (code, data, manifest), except what runs
  write (``results/``, ``state/``) and Python caches;
* every module of this project that the reference's Python files import,
  followed transitively.

The hash is by content, not by place: a project module counts by its text, not by
its path, and an import of a project module counts by the names it takes, not by
the dotted path it takes them from. Moving a module between packages (and
rewriting the imports that name it) leaves every hash as it was, so results stay
fresh across a reorganisation of ``digest/``; changing a line of it does not.

Package versions are not hashed; they are recorded next to the results and
compared separately (a version change is a warning, a code change an error).
"""

from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path

# Folders inside a reference that hold what runs produce, not what they depend on.
GENERATED_DIRS = frozenset({"results", "state", "__pycache__"})
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("digest",)


def reference_files(ref_dir: Path) -> list[Path]:
    """Every input file of a reference folder, sorted for a stable hash."""
    files = []
    for path in sorted(ref_dir.rglob("*")):
        rel = path.relative_to(ref_dir)
        if not path.is_file() or rel.parts[0] in GENERATED_DIRS:
            continue
        if "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        files.append(path)
    return files


def _module_file(name: str) -> Path | None:
    """The source file of a project module, or None if it is not ours."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str | None:
    """Dotted package of a project file (for relative imports), None outside the project."""
    try:
        rel = path.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        return None
    parts = rel.parent.parts
    return ".".join(parts) if parts and parts[0] in PROJECT_PACKAGES else None


def _imported_names(source: str, package: str | None) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from .x import y, inside the project
                if package is None:
                    continue
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module:
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def project_imports(py_files: list[Path]) -> list[Path]:
    """Project modules imported by ``py_files``, transitively, sorted."""
    seen: dict[Path, None] = {}
    queue = list(py_files)
    while queue:
        path = queue.pop()
        for name in _imported_names(path.read_text(encoding="utf-8"), _package_of(path)):
            module = _module_file(name)
            if module is not None and module not in seen:
                seen[module] = None
                queue.append(module)
    return sorted(seen)


def _line_offsets(source: bytes) -> list[int]:
    """Byte offset of each line's start (ast positions are 1-based lines, UTF-8 byte columns)."""
    offsets = [0]
    for line in source.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def _is_project_import(node: ast.AST, package: str | None) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] in PROJECT_PACKAGES for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.level > 0 and package is not None) or (node.module or "").split(".")[0] in PROJECT_PACKAGES
    return False


def _placeless_import(node: ast.Import | ast.ImportFrom) -> str:
    """An import of project code with the module path left out: what it takes, not from where."""
    names = ", ".join(alias.name.rsplit(".", 1)[-1] + (f" as {alias.asname}" if alias.asname else "")
                      for alias in node.names)
    return f"import <project> {names}" if isinstance(node, ast.Import) else f"from <project> import {names}"


def placeless_source(path: Path) -> bytes:
    """The file's bytes with each import of project code rewritten without its module path."""
    source = path.read_bytes()
    if path.suffix != ".py":
        return source
    package = _package_of(path)
    offsets = _line_offsets(source)
    spans = [(offsets[n.lineno - 1] + n.col_offset, offsets[n.end_lineno - 1] + n.end_col_offset, n)
             for n in ast.walk(ast.parse(source)) if _is_project_import(n, package)]
    for start, end, node in sorted(spans, key=lambda span: span[0], reverse=True):
        source = source[:start] + _placeless_import(node).encode() + source[end:]
    return source


def code_sha256(ref_dir: Path) -> str:
    """SHA-256 over the reference's files and the project modules they import, by content."""
    ref_dir = Path(ref_dir)
    own = reference_files(ref_dir)
    imported = project_imports([p for p in own if p.suffix == ".py"])
    digest = hashlib.sha256()
    for path in own:
        digest.update(f"ref:{path.relative_to(ref_dir).as_posix()}".encode() + b"\0")
        digest.update(placeless_source(path) + b"\0")
    # the imported modules as a set of texts: sorted by their own hash, since their paths do not count
    for module_hash in sorted(hashlib.sha256(placeless_source(path)).hexdigest() for path in imported):
        digest.update(f"project:{module_hash}".encode() + b"\0")
    return digest.hexdigest()


if __name__ == "__main__":  # python -m digest.refs.codehash content/refs/NAME
    for arg in sys.argv[1:]:
        print(code_sha256(Path(arg)), arg)
