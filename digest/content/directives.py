"""Result directives in note bodies: the only way a number or figure from a run reaches a page.

    {{ ref("backprop-gates", "neuron.output", fmt=".4f") }}   → the value, formatted
    {{ ref_figure("pong-reinforce", "learning_curve") }}      → the figure with a caption
    {{ ref_progress("pong-reinforce", "full") }}              → while that profile's run is unfinished:
                                                                 its last checkpoint's numbers and figures

Bodies come from strangers' pull requests, so they are never evaluated as
templates: these forms are matched by a regular expression, their
arguments must be string literals, and anything else in ``{{ }}`` is left as text.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from digest.content.model import NUMBER_FORMAT_RE as FORMAT_RE  # noqa: F401 (validate checks fmt= with it)

# Opening of a directive: enough to find mistakes (a typo in an argument) and point at them.
OPENING_RE = re.compile(r"\{\{\s*(ref|ref_figure|ref_progress)\s*\(")
DIRECTIVE_RE = re.compile(
    r"""\{\{\s*(?P<kind>ref|ref_figure|ref_progress)\s*\(\s*
        (?P<q1>["'])(?P<name>[a-z0-9-]+)(?P=q1)\s*,\s*
        (?P<q2>["'])(?P<item>[A-Za-z0-9_.-]+)(?P=q2)\s*
        (?:,\s*fmt\s*=\s*(?P<q3>["'])(?P<fmt>[^"']*)(?P=q3)\s*)?
        \)\s*\}\}""",
    re.VERBOSE,
)


KINDS = ("ref", "ref_figure", "ref_progress")
# Any `{{ name(`: a misspelled directive would otherwise be published as literal text.
CALL_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True)
class Misspelled:
    line: int  # 0-based, as in Directive
    col: int
    name: str  # as written, e.g. "ref_figures" or "Ref"
    meant: str  # the directive it most likely means


def misspelled(text: str) -> Iterator[Misspelled]:
    """Every `{{ name(` whose name is not a directive but looks like one (Ref, refs, ref_figures, reff)."""
    for call in CALL_RE.finditer(text):
        name = call[1]
        if name in KINDS:
            continue
        meant = _meant(name.lower())
        if meant:
            start = call.start()
            line_start = text.rfind("\n", 0, start) + 1
            yield Misspelled(text.count("\n", 0, start), start - line_start, name, meant)


def _meant(name: str) -> str:
    if name in KINDS:
        return name
    close = difflib.get_close_matches(name, KINDS, n=1, cutoff=0.6)
    if close:
        return close[0]
    if name.startswith("ref") or name.endswith("ref"):
        return difflib.get_close_matches(name, KINDS, n=1, cutoff=0.0)[0]
    return ""


@dataclass(frozen=True)
class Directive:
    kind: str  # "ref", "ref_figure" or "ref_progress"
    name: str  # reference name
    item: str  # metric, figure stem or profile
    fmt: str | None
    line: int  # 0-based line inside the body
    col: int  # 0-based column inside that line
    start: int  # offsets in the body
    end: int


@dataclass(frozen=True)
class Malformed:
    line: int
    col: int
    text: str


def scan(body: str) -> Iterator[Directive | Malformed]:
    """Every directive in ``body``, and every opening that does not parse as one."""
    def where(offset: int) -> tuple[int, int]:  # only for bodies with directives: most have none
        line_start = body.rfind("\n", 0, offset) + 1
        return body.count("\n", 0, offset), offset - line_start

    for opening in OPENING_RE.finditer(body):
        line, col = where(opening.start())
        match = DIRECTIVE_RE.match(body, opening.start())
        if match is None:
            snippet = body[opening.start(): body.find("\n", opening.start()) % (len(body) + 1)][:80]
            yield Malformed(line, col, snippet)
            continue
        yield Directive(match["kind"], match["name"], match["item"], match["fmt"], line, col,
                        match.start(), match.end())


def expand(body: str, render) -> str:
    """Replace each directive by ``render(directive)``; malformed openings stay as text."""
    parts, last = [], 0
    for found in scan(body):
        if isinstance(found, Directive):
            parts.append(body[last:found.start])
            parts.append(render(found))
            last = found.end
    parts.append(body[last:])
    return "".join(parts)


def format_metric(value: float, fmt: str | None) -> str:
    """``format(value, fmt)``, with integral floats accepted by integer formats ("d")."""
    if fmt and fmt.endswith("d") and float(value).is_integer():
        value = int(value)
    try:
        return format(value, fmt or "")
    except ValueError as exc:
        raise ValueError(f"cannot format {value!r} with fmt='{fmt}': {exc}") from None
