"""One problem found in content, and the two ways it is printed; one finding of a setup check
(`digest serve --check`, `digest doctor`) and how it is printed in English and Korean."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Diagnostic:
    path: str
    line: int
    col: int
    severity: str  # "error" or "warning"
    message: str
    hint: str = ""

    def format(self) -> str:
        """``file:line:col: error: what is wrong (how to fix it)`` on one line."""
        hint = f" — {self.hint}" if self.hint else ""
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message}{hint}"

    def github(self) -> str:
        """A GitHub Actions workflow command, shown on the pull request's changed lines."""
        text = self.message + (f" — {self.hint}" if self.hint else "")
        return (
            f"::{self.severity} file={_prop(self.path)},line={self.line},col={self.col},"
            f"title=digest check::{_data(text)}"
        )


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def summary(diagnostics, files: int) -> str:
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    verdict = "ok" if not errors else "failed"
    return f"digest check {verdict}: {files} file(s), {errors} error(s), {warnings} warning(s)"


# --- setup checks (`digest serve --check`, `digest doctor`) -----------------------------------

LEVELS = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn (it works, but look) | fail (fix it first)
    topic: str  # a key of the check's topics (English → Korean)
    english: str
    korean: str
    record: str = ""  # what to publish or set to fix it, printed as it is (e.g. a DNS record)


def finding_lines(findings, topics: Mapping[str, str], before: tuple[str, str] | None = None,
                  ready: tuple[str, str] | None = None) -> list[str]:
    """Two lines a finding, English then Korean, and its record (if any) on a third; with ``before``
    and ``ready`` ((English, Korean) each), a last line counting the problems to fix before what
    ``before`` names ('serving'), or saying ``ready``."""
    lines = []
    for f in findings:
        lines.append(f"{LEVELS[f.level]:<5} {f.topic:<9} {f.english}")
        lines.append(f"{'':<5} {topics[f.topic]:<9} {f.korean}")
        if f.record:
            lines.append(f"{'':<5} {'':<9} → {f.record}")
    if before is None or ready is None:
        return lines
    failed = sum(f.level == "fail" for f in findings)
    if failed:
        lines.append(f"{failed} problem(s) to fix before {before[0]} · {before[1]} 고칠 문제 {failed}개")
    else:
        lines.append(f"{ready[0]} · {ready[1]}")
    return lines
