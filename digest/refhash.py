"""What a reference's results depend on, as one SHA-256.

Executed-docs tools usually key their cache on the document alone, so a changed
data file or imported helper leaves stale results unseen. Here the hash covers:

* every file of the reference folder (code, data, manifest), except what runs
  write (``results/``, ``state/``) and Python caches;
* every module of this project that the reference's Python files import,
  followed transitively.

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
PROJECT_ROOT = Path(__file__).resolve().parent.parent
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


def code_sha256(ref_dir: Path) -> str:
    """SHA-256 over the reference's files and the project modules they import."""
    ref_dir = Path(ref_dir)
    own = reference_files(ref_dir)
    imported = project_imports([p for p in own if p.suffix == ".py"])
    digest = hashlib.sha256()
    for path in own + imported:
        label = (
            f"ref:{path.relative_to(ref_dir).as_posix()}"
            if path.is_relative_to(ref_dir)
            else f"project:{path.relative_to(PROJECT_ROOT).as_posix()}"
        )
        digest.update(label.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


if __name__ == "__main__":  # python -m digest.refhash content/refs/NAME
    for arg in sys.argv[1:]:
        print(code_sha256(Path(arg)), arg)
