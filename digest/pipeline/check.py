"""`digest check`: load, validate content and references, report every problem in one pass.

``inspect`` is shared by the CLI, ``digest build`` and the MkDocs adapter, so all
three judge content the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from digest.content.load import load
from digest.content.model import Content, RefManifest
from digest.content.validate import validate
from digest.diagnostics import Diagnostic, summary
from digest.errors import ContentInvalid
from digest.refs.engine import Reference, check_references, load_references, manifest_paths


@dataclass(frozen=True)
class CheckResult:
    content: Content | None  # None when there are errors
    references: dict[str, Reference]
    diagnostics: list[Diagnostic]
    files: int

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    def lines(self, github: bool = False) -> list[str]:
        out = [d.format() for d in self.diagnostics]
        if github:
            out += [d.github() for d in self.diagnostics]
        out.append(summary(self.diagnostics, self.files))
        return out


def inspect(root: Path, today: dt.date | None = None) -> CheckResult:
    """Read and judge everything under ``root`` (the content/ folder)."""
    raw = load(root)
    diagnostics: list[Diagnostic] = []
    refs = load_references(root, diagnostics)
    manifests = _manifests(root, refs)
    content, found = validate(raw, today, manifests)
    diagnostics = sorted(diagnostics + found + check_references(refs, root),
                         key=lambda d: (d.path, d.line, d.col))
    files = len(raw.notes) + len(raw.intros) + (raw.tags is not None) + (raw.people is not None) + len(manifests)
    ok = not any(d.severity == "error" for d in diagnostics)
    return CheckResult(content if ok else None, refs, diagnostics, files)


def _manifests(root: Path, refs: dict[str, Reference]) -> dict[str, RefManifest | None]:
    """Each reference's manifest; None where its ref.yml has errors (reported at the file, not at every citation)."""
    manifests: dict[str, RefManifest | None] = {path.parent.name: None for path in manifest_paths(root)}
    return manifests | {name: ref.manifest for name, ref in refs.items()}


def _selected(diagnostic: Diagnostic, only: list[str]) -> bool:
    return any(diagnostic.path == p or diagnostic.path.startswith(p.rstrip("/") + "/") for p in only)


def check(root: Path, paths: list[str] | None = None, today: dt.date | None = None) -> CheckResult:
    """Check all content; with ``paths``, report only problems in those files or folders.

    Every file is still read, so cross-file rules (duplicate slugs) see the whole content, and a
    duplicate is reported on each file that shares the slug. A path that does not exist, or lies
    outside ``root``, is an error of its own: "ok" for a mistyped path would check nothing.
    """
    result = inspect(root, today)
    if not paths:
        return result
    content = Path(root).resolve()
    base = content.parent
    only, problems = [], []
    for p in paths:
        resolved = Path(p).resolve()
        shown = resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else p
        problem = _path_problem(Path(p), resolved, content)
        if problem:
            problems.append(Diagnostic(shown, 1, 1, "error", *problem))
        else:
            only.append(shown)
    kept = sorted(problems + [d for d in result.diagnostics if _selected(d, only)],
                  key=lambda d: (d.path, d.line, d.col))
    return CheckResult(result.content if not problems else None, result.references, kept, result.files)


def _path_problem(given: Path, resolved: Path, content: Path) -> tuple[str, str] | None:
    """(message, hint) when a PATH argument of `digest check` names nothing it can check."""
    if not resolved.exists():
        return (f"no such file or folder '{given}'",
                "check the spelling; notes are content/notes/<yyyy>/<slug>.yml")
    if not resolved.is_relative_to(content):
        return (f"'{given}' is outside the content folder {content.name}/, so nothing in it is checked",
                f"name a file or folder under {content.name}/, or pass --content PATH for another folder")
    if resolved.is_file() and resolved.suffix not in (".yml", ".yaml"):
        return (f"'{given}' is not a YAML content file, so nothing in it is checked",
                "name a .yml file under content/, e.g. content/notes/<yyyy>/<slug>.yml")
    return None


def load_content(root: Path, today: dt.date | None = None) -> tuple[Content, dict[str, Reference]]:
    """Valid content and references, for the stages after validation; ContentInvalid otherwise."""
    result = inspect(root, today)
    if result.content is None:
        raise ContentInvalid(result.diagnostics)
    return result.content, result.references
