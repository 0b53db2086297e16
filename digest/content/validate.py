"""Stage 2, validate: marked YAML nodes → typed records, and every problem in one pass.

Field rules come from the dataclass fields of ``digest.content.model``; cross-file
rules (unknown tag or person ids, duplicate slugs, path disagreeing with
fields, refs naming no reference) run once every file is read. The editor's
optional intro files of the weekly email, content/digest/<yyyy>-W<ww>.yml, are
judged here too (stage 1 reads them).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import difflib
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from pathlib import PurePosixPath
from types import UnionType
from urllib.parse import urlsplit

from digest.content import directives
from digest.content.load import RawContent, SourceFile, gc_paused
from digest.content.model import ID_RE, SEOUL, WEEK_FILE_RE, Content, IssueIntro, Note, Person, RefManifest, Tag
from digest.content.yamlread import Map, Node, Scalar, Seq, one_line
from digest.diagnostics import Diagnostic

NULLS = frozenset({"", "~", "null", "Null", "NULL"})
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # fullmatch: no trailing newline, ASCII digits only
OPENINGS_RE = re.compile(r"(?=\{\{)")
_BAD = object()


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def url_problem(url: str) -> str:
    """Why ``url`` is not a usable http(s) link, or '' if it is."""
    if any(c.isspace() for c in url):
        return "contains a space"
    if any(c in url for c in '"<>\\`{}|^'):
        return "contains a character that must be percent-encoded (\" < > \\ ` { } | ^)"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"is malformed ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"uses '{parts.scheme or 'no'}' scheme; only http and https links are allowed"
    if not host or ("." not in host and host != "localhost") or host.startswith(".") or ".." in host:
        return "has no valid host name"
    return ""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One YAML field of a record: how to convert its node, and what to say when it is missing."""

    name: str
    field: dataclasses.Field
    type: object
    required: bool
    convert: Callable  # (reader, node, label) -> value, or _BAD after reporting


@cache
def field_specs(cls) -> dict[str, FieldSpec]:
    """The YAML fields of a model class, each with a converter compiled once."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: FieldSpec(f.name, f, hints[f.name], _required(f), _converter(hints[f.name], f))
        for f in dataclasses.fields(cls) if not f.metadata.get("internal")
    }


def _converter(type_, f: dataclasses.Field) -> Callable:
    origin = typing.get_origin(type_)
    if origin in (typing.Union, UnionType):
        inner = _converter(next(t for t in typing.get_args(type_) if t is not type(None)), f)

        def optional(reader, node, label):
            if node.__class__ is Scalar and node.style == "" and node.value in NULLS:
                return None
            return inner(reader, node, label)

        return optional
    if origin is tuple:
        return _sequence(_converter(typing.get_args(type_)[0], f), f)
    if origin is dict:
        return _mapping(_converter(typing.get_args(type_)[1], f), f)
    if dataclasses.is_dataclass(type_):
        return lambda reader, node, label: reader.record(type_, node)
    if type_ is dt.date:
        return _scalar(_date, f)
    if type_ is bool:
        return _scalar(_bool, f)
    if type_ in (int, float):
        return _scalar(_number(type_), f)
    return _scalar(_text_checker(f), f)


def _number(type_) -> Callable:
    word = "a whole number" if type_ is int else "a number"

    def check(reader, node: Scalar, label: str):
        try:
            value = type_(node.value)
        except ValueError:
            reader.error(node, f"'{label}' must be {word}, not '{node.value}'")
            return _BAD
        if value != value or value in (float("inf"), float("-inf")):
            reader.error(node, f"'{label}' must be a finite number")
            return _BAD
        return value

    return check


def _mapping(value: Callable, f: dataclasses.Field) -> Callable:
    pattern = f.metadata.get("key_pattern")

    def convert(reader, node, label):
        if node.__class__ is not Map:
            shape = ", not a list" if node.__class__ is Seq else ""
            example = f.metadata.get("example")
            reader.error(node, f"'{label}' must be a mapping of name: value{shape}",
                         f.metadata["doc"] + (f"; e.g. {label}: {example}" if example else ""))
            return _BAD
        result, ok = {}, True
        for key, (key_node, value_node) in node.entries.items():
            if pattern is not None and not (key.isascii() and pattern.fullmatch(key)):
                reader.error(key_node, f"'{key}' is not a valid name in '{label}'", f.metadata["doc"])
                ok = False
                continue
            converted = value(reader, value_node, key)
            if converted is _BAD:
                ok = False
            else:
                result[key] = converted
        return result if ok else _BAD

    return convert


def _scalar(check: Callable, f: dataclasses.Field) -> Callable:
    doc = f.metadata.get("doc", "")

    def convert(reader, node, label):
        if node.__class__ is not Scalar:
            shape = "list" if node.__class__ is Seq else "mapping"
            reader.error(node, f"'{label}' must be a single value, not a {shape}", doc)
            return _BAD
        return check(reader, node, label)

    return convert


def _date(reader, node: Scalar, label: str):
    if not DATE_RE.fullmatch(node.value):
        reader.error(node, f"'{label}' is '{node.value}', not a date", "write YYYY-MM-DD, e.g. 2016-06-30")
        return _BAD
    try:
        return dt.date.fromisoformat(node.value)
    except ValueError:
        reader.error(node, f"'{label}' is an impossible date '{node.value}' (no such day)",
                     "check the month and day")
        return _BAD


def _bool(reader, node: Scalar, label: str):
    if node.value in ("true", "false"):
        return node.value == "true"
    reader.error(node, f"'{label}' must be true or false, not '{node.value}'")
    return _BAD


def _text_checker(f: dataclasses.Field) -> Callable:
    meta = f.metadata
    required = _required(f)
    enum, pattern, is_uri, doc = meta.get("enum"), meta.get("pattern"), meta.get("format") == "uri", meta["doc"]

    def check(reader, node: Scalar, label: str):
        value = node.value
        if not value.strip():
            if required:
                reader.error(node, f"'{label}' is empty", doc)
                return _BAD
            return value
        if enum and value not in enum:
            hint = _suggest(value, enum) or f"one of: {', '.join(enum)}"
            reader.error(node, f"unknown {label} '{value}'", hint)
            return _BAD
        if pattern is not None and not meta.get("registry") and not (value.isascii() and pattern.fullmatch(value)):
            reader.error(node, f"'{value}' is not a valid {label}", doc)
            return _BAD
        if is_uri and (problem := url_problem(value)):
            reader.error(node, f"link '{value}' {problem}", "write a full http(s):// address")
            return _BAD
        return value

    return check


def _sequence(item: Callable, f: dataclasses.Field) -> Callable:
    required, min_items, doc = _required(f), f.metadata.get("min_items", 0), f.metadata["doc"]

    def convert(reader, node, label):
        if node.__class__ is not Seq:
            if node.__class__ is Scalar and node.style == "" and node.value in NULLS and not required:
                return ()
            reader.error(node, f"'{label}' must be a list", f"write {label}: [a, b] or one '- item' per line")
            return _BAD
        items, ok = [], True
        for item_node in node.items:
            value = item(reader, item_node, label)
            if value is _BAD or value is None:
                ok = False
            elif value.__class__ is str and value in items:
                reader.error(item_node, f"'{value}' is listed twice in '{label}'", "remove one")
                ok = False
            else:
                items.append(value)
        if ok and len(items) < min_items:
            reader.error(node, f"'{label}' needs at least {min_items} item(s)", doc)
            ok = False
        return tuple(items) if ok else _BAD

    return convert


class _Reader:
    """Converts one file's nodes into records, appending problems to ``diagnostics``."""

    def __init__(self, source: SourceFile, diagnostics: list[Diagnostic]):
        self.path = source.path
        self.text = source.text or ""
        self.diagnostics = diagnostics
        self._body: tuple | None = None  # (node, its openings, the file's openings) for body_position

    def error(self, node: Node, message: str, hint: str = "", severity: str = "error") -> None:
        # Messages quote values, which may hold newlines or be huge: keep each diagnostic one line.
        self.diagnostics.append(Diagnostic(self.path, node.line, node.col, severity,
                                           one_line(message), one_line(hint)))

    def record(self, cls, node: Node, extra: dict | None = None):
        """Build ``cls`` from a mapping node; None (or _BAD inside a list) if any field was wrong."""
        values, ok = self.fields(cls, node)
        if ok:
            return cls(**values, **(extra or {}))
        return None if extra is not None else _BAD

    def fields(self, cls, node: Node) -> tuple[dict, bool]:
        """The fields of ``cls`` that read well, and whether all did.

        Partial values let cross-file checks run on a note with other errors,
        so one pass reports every problem.
        """
        specs = field_specs(cls)
        if node.__class__ is not Map:
            self.error(node, f"expected a mapping of fields ({', '.join(specs)})",
                       "write one 'field: value' per line")
            return {}, False
        values: dict = {}
        ok = True
        for key, (key_node, value_node) in node.entries.items():
            spec = specs.get(key)
            if spec is None:
                hint = _suggest(key, specs) or f"allowed fields: {', '.join(specs)}"
                self.error(key_node, f"unknown field '{key}'", hint)
                ok = False
                continue
            value = spec.convert(self, value_node, key)
            if value is _BAD:
                ok = False
            elif value is not None or not spec.required:
                values[key] = value
        if len(values) < len(specs):
            for name, spec in specs.items():
                if spec.required and name not in node.entries:
                    example = spec.field.metadata.get("example") or "..."
                    self.error(node, f"missing required field '{name}' ({spec.field.metadata['doc']})",
                               f"add '{name}: {example}'")
                    ok = False
        return values, ok

    def body_position(self, node: Scalar, offset_line: int, offset_col: int) -> tuple[int, int]:
        """File position of the '{{' at ``offset_line``/``offset_col`` of a scalar's value.

        Folding (``>``), quoting and indentation change lines and columns, so the k-th '{{' of
        the value is mapped to the k-th '{{' of the file from the scalar's start.
        """
        if self._body is None or self._body[0] is not node:
            in_value = [(n, m.start()) for n, text in enumerate(node.value.split("\n"))
                        for m in OPENINGS_RE.finditer(text)]
            in_file, lines = [], self.text.split("\n")
            for n in range(node.line - 1, len(lines)):
                start = node.col - 1 if n == node.line - 1 else 0
                in_file.extend((n + 1, m.start() + 1) for m in OPENINGS_RE.finditer(lines[n], start))
                if len(in_file) >= len(in_value):
                    break
            self._body = (node, in_value, in_file)
        _, in_value, in_file = self._body
        k = bisect.bisect_left(in_value, (offset_line, offset_col))
        return in_file[k] if k < len(in_file) else (node.line, node.col)


    def literal_position(self, node: Scalar, offset_line: int, offset_col: int) -> tuple[int, int]:
        """File position inside a literal block scalar (``body: |``); the scalar's start otherwise."""
        lines = self.text.split("\n")
        first = node.line  # 0-based index of the first content line (the line after 'body: |')
        if node.style != "|" or first + offset_line >= len(lines):
            return node.line, node.col
        content = [line for line in lines[first:] if line.strip()]
        indent = len(content[0]) - len(content[0].lstrip(" ")) if content else 0
        return first + offset_line + 1, indent + offset_col + 1


def _position(root: Map, field: str, index: int | None = None) -> tuple[int, int]:
    node = root.entries[field][1]
    if index is not None:
        node = node.items[index]
    return node.line, node.col


def _check_note_file(values: dict, reader: _Reader, root: Map, path: str, today: dt.date) -> None:
    where = PurePosixPath(path)
    slug, date, updated = values.get("slug"), values.get("date"), values.get("updated")
    if slug and where.stem != slug:
        reader.error(root.entries["slug"][1], f"slug '{slug}' disagrees with the file name '{where.name}'",
                     f"rename the file to {slug}.yml or set slug: {where.stem}")
    if date and where.parent.name != str(date.year):
        reader.error(root.entries["date"][1], f"date {date} is in {date.year} but the file is in folder "
                     f"'{where.parent.name}'", f"move the file to content/notes/{date.year}/")
    if date and date > today:
        reader.error(root.entries["date"][1], f"date {date} is in the future",
                     "use the date the note is published", severity="warning")
    if date and updated and updated < date:
        reader.error(root.entries["updated"][1], f"updated {updated} is before date {date}",
                     "updated must be on or after date")


def _check_ids(values: dict, reader: _Reader, root: Map, field: str, registry: dict, what: str,
               unusable: set[str]) -> None:
    for i, ident in enumerate(values.get(field, ())):
        if ident not in registry and ident not in unusable:  # an unusable entry is reported in the registry
            line, col = _position(root, field, i)
            message, hint = unknown_id(ident, registry, what, f"{field}.yml")
            reader.diagnostics.append(Diagnostic(reader.path, line, col, "error", one_line(message), one_line(hint)))


def unknown_id(ident: str, registry: dict, what: str, registry_file: str) -> tuple[str, str]:
    """(message, hint) for an id its registry lacks: the id meant, or how to write and add one."""
    hint = _suggest_id(ident, registry) or f"add it to content/{registry_file} first"
    if not hint.startswith("did you") and not (ident.isascii() and ID_RE.fullmatch(ident)):
        hint = "ids are lowercase letters, digits and hyphens" + (
            f" (e.g. {re.sub(r'[_ ]+', '-', ident.lower())})" if ident.isascii() else "") + f"; {hint}"
    return f"unknown {what} '{ident}'", hint


def _suggest_id(written: str, registry: dict) -> str:
    """The id meant by a name as the site shows it ('강화학습', 'Andrej Karpathy'), by the id's spelling
    in other case or spacing, or by a near miss."""
    folded = written.casefold().strip()
    for ident, record in registry.items():
        names = (record.name,) if isinstance(record, Tag) else (record.ko, record.en)
        if folded in (n.casefold() for n in names) or folded.replace(" ", "-") == ident:
            return f"did you mean '{ident}' ({names[0]})? notes list ids, not names"
    return _suggest(written, registry)


# Raw HTML blocks that Markdown keeps open to the end of the note when their end tag is missing.
BLOCK_TAGS = frozenset("div details section article aside table ul ol dl pre blockquote figure "
                       "form fieldset nav header footer".split())
FENCE_RE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN_RE = re.compile(r"`+[^`]*`+")


class _OpenTags(HTMLParser):
    """Block tags opened and not closed, with their (line, col) in the text fed."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, tuple[int, int]]] = []

    def handle_starttag(self, tag, attrs):
        if tag in BLOCK_TAGS:
            self.open.append((tag, self.getpos()))

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                return


def _unclosed_block_tags(body: str) -> list[tuple[str, int, int]]:
    """(tag, line, col) of raw HTML block tags never closed, outside code blocks and code spans."""
    if "<" not in body:
        return []
    lines, in_fence = [], False
    for line in body.split("\n"):
        if FENCE_RE.match(line):
            in_fence = not in_fence
            lines.append("")
        elif in_fence:
            lines.append("")
        else:  # keep columns: blank out code spans instead of removing them
            lines.append(CODE_SPAN_RE.sub(lambda m: " " * len(m.group()), line))
    parser = _OpenTags()
    parser.feed("\n".join(lines))
    parser.close()
    return [(tag, line - 1, col) for tag, (line, col) in parser.open]


def _check_unclosed_html(reader: _Reader, root: Map) -> None:
    body = root.entries.get("body", (None, None))[1]
    if body.__class__ is not Scalar:
        return
    for tag, n, col in _unclosed_block_tags(body.value):
        line, column = reader.literal_position(body, n, col)
        reader.diagnostics.append(Diagnostic(
            reader.path, line, column, "warning",
            f"<{tag}> is never closed: the rest of the note would show as raw HTML",
            f"add </{tag}> where the block ends, or write it in Markdown"))


def _check_lost_comment(reader: _Reader, root: Map) -> None:
    """'title: DCGAN 정리 #1' is the title 'DCGAN 정리': YAML drops ' #1' as a comment, silently."""
    lines = reader.text.split("\n")
    for field in ("title", "summary"):
        node = root.entries.get(field, (None, None))[1]
        if node.__class__ is not Scalar or node.style != "" or not node.value or node.end_line != node.line:
            continue
        line = lines[node.line - 1].rstrip("\r") if node.line <= len(lines) else ""
        start = node.col - 1
        if line[start:start + len(node.value)] != node.value:
            continue
        rest = line[start + len(node.value):]
        # ' #1', ' #중요' reads as part of the text; '  # 설명' is meant as a comment and stays quiet
        if rest.startswith(" #") and not rest.startswith(" # ") and rest != " #":
            comment = rest.strip()
            whole = (node.value + " " + comment).replace("\\", "\\\\").replace('"', '\\"')
            reader.diagnostics.append(Diagnostic(
                reader.path, node.line, start + len(rest) - len(rest.lstrip()) + len(node.value) + 1, "warning",
                one_line(f"'{comment}' is a YAML comment, so the {field} is only '{node.value}'"),
                one_line(f"if it belongs to the {field}, quote the whole value: {field}: \"{whole}\"")))


# What `digest new` writes for the contributor to replace (its template note.yml.j2 takes the body's
# sentences from here): a note still holding them would be published with instructions, not content.
TEMPLATE_SUMMARY = "한두 문장으로 요약을 쓰세요."
TEMPLATE_BODY = ("이 글이 다루는 연구나 글을 자신의 말로 소개하세요.", "원문을 인용할 때는 누가 말했는지 밝히세요.")


def _check_template_text(reader: _Reader, root: Map) -> None:
    """One error per field that still holds `digest new`'s placeholder text."""
    summary = root.entries.get("summary", (None, None))[1]
    if summary.__class__ is Scalar and TEMPLATE_SUMMARY in summary.value:
        reader.error(summary, f"summary is still digest new's template text '{TEMPLATE_SUMMARY}'",
                     "replace it with one or two sentences of your own about the source")
    body = root.entries.get("body", (None, None))[1]
    if body.__class__ is not Scalar:
        return
    for n, line in enumerate(body.value.split("\n")):
        found = next((t for t in TEMPLATE_BODY if t in line), None)
        if found is not None:
            where = reader.literal_position(body, n, line.index(found))
            reader.diagnostics.append(Diagnostic(
                reader.path, *where, "error", f"body still holds digest new's template text '{found}'",
                "replace the template's sentences with your own text (the '##' headings may stay)"))
            return


_BODY_STYLES = {
    ">": "'body: >' folds its lines into one paragraph, so line breaks, lists and code blocks are lost",
    "": "without '|' lines starting with '#' (headings such as '## 무엇인가') are dropped as YAML comments "
        "and line breaks are folded into spaces",
    "'": "a quoted body folds its line breaks into spaces, so headings, lists and code blocks are lost",
    '"': "a quoted body folds its line breaks into spaces, so headings, lists and code blocks are lost",
}


def _check_body_style(reader: _Reader, root: Map) -> None:
    """The body is Markdown: only a literal block keeps it as written. A one-line body on the key's own line
    loses nothing, so it may stay plain."""
    key, body = root.entries.get("body", (None, None))
    if body.__class__ is not Scalar or body.style == "|" or (body.style == "" and body.value in NULLS):
        return
    if body.style != ">" and body.line == key.line and body.end_line == body.line:
        return
    reader.error(key, f"body must be a literal block ('body: |'): {_BODY_STYLES[body.style]}",
                 "write 'body: |' and indent every line of the text under it by two spaces")


def _check_refs(values: dict, reader: _Reader, root: Map, manifests: dict[str, RefManifest | None]) -> None:
    refs = values.get("refs", ())
    for i, name in enumerate(refs):
        if name not in manifests:
            problem = (f"refs names no reference '{name}'",
                       _suggest(name, manifests) or "references live in content/refs/<name>/ref.yml")
        elif manifests[name] is None:  # once here, not at each directive: checked alone, the note still fails
            problem = (f"refs names '{name}', whose ref.yml has errors",
                       f"fix them first; `digest check content/refs/{name}/ref.yml` lists them")
        else:
            continue
        reader.diagnostics.append(Diagnostic(reader.path, *_position(root, "refs", i), "error", *problem))
    for field in ("title", "summary"):
        _check_unexpanded(reader, root.entries.get(field, (None, None))[1], field)
    body = root.entries.get("body", (None, None))[1]
    if body.__class__ is not Scalar or "{{" not in body.value:
        return
    for found in directives.scan(body.value):
        line, col = reader.body_position(body, found.line, found.col)
        problem = _directive_problem(found, refs, manifests)
        if problem:
            reader.diagnostics.append(Diagnostic(reader.path, line, col, "error", *map(one_line, problem)))
    for found in directives.misspelled(body.value):
        line, col = reader.body_position(body, found.line, found.col)
        reader.diagnostics.append(Diagnostic(
            reader.path, line, col, "error",
            one_line(f"unknown directive '{found.name}(': it would be published as text"),
            f"did you mean {found.meant}? the directives are {', '.join(directives.KINDS)} (lowercase)"))


def _check_unexpanded(reader: _Reader, node: Node | None, field: str) -> None:
    """Only the body's directives are expanded: one in the title or summary would show as '{{ ... }}'."""
    if node.__class__ is not Scalar or "{{" not in node.value:
        return
    value = node.value
    found = [(value.count("\n", 0, m.start()), m.start() - (value.rfind("\n", 0, m.start()) + 1))
             for m in directives.OPENING_RE.finditer(value)]
    found += [(m.line, m.col) for m in directives.misspelled(value)]
    if not found:
        return
    line, col = reader.body_position(node, *min(found))
    reader.diagnostics.append(Diagnostic(
        reader.path, line, col, "error",
        f"a directive in '{field}' is never expanded: it would show as '{{{{ ... }}}}'",
        f"write the value itself in {field}; directives such as {{{{ ref(...) }}}} work only in body"))


def _directive_problem(found, refs, manifests: dict[str, RefManifest | None]) -> tuple[str, str] | None:
    """(message, hint) when a directive cannot render, else None."""
    if isinstance(found, directives.Malformed):
        return (f"malformed directive '{found.text}'",
                'write {{ ref("name", "metric", fmt=".4f") }} or {{ ref_figure("name", "figure") }}')
    call = f"{found.kind}(\"{found.name}\", \"{found.item}\")"
    if found.name not in manifests:
        return (f"{call} names no reference '{found.name}'",
                _suggest(found.name, manifests) or "check the name under content/refs/")
    if found.name not in refs:
        return f"{call} cites '{found.name}', which is not in this note's refs", f"add '{found.name}' to refs"
    manifest = manifests[found.name]
    if manifest is not None:  # None: its ref.yml has errors, reported there and at this note's refs
        problem = _manifest_problem(call, found, manifest)
        if problem:
            return problem
    return _fmt_problem(call, found)


def _manifest_problem(call: str, found, manifest: RefManifest) -> tuple[str, str] | None:
    """What the reference's ref.yml says against the directive: no such metric, figure or profile."""
    if found.kind == "ref_progress":
        if manifest.progress is None:
            return (f"{call}: '{found.name}' shows no progress of unfinished runs",
                    f"declare 'progress' in content/refs/{found.name}/ref.yml, or remove the directive")
        if found.item not in manifest.profiles:
            return (f"{call}: '{found.name}' has no profile '{found.item}'",
                    f"one of: {', '.join(manifest.profiles)}")
        return None
    outputs = manifest.metrics if found.kind == "ref" else manifest.figures
    what = "metric" if found.kind == "ref" else "figure"
    if found.item not in outputs:
        return (f"{call}: '{found.name}' has no {what} '{found.item}'",
                _suggest(found.item, outputs) or f"its {what}s are listed in content/refs/{found.name}/ref.yml")
    return None


def _fmt_problem(call: str, found) -> tuple[str, str] | None:
    """A fmt= where it cannot apply or cannot format a number; needs no ref.yml."""
    if found.fmt is None:
        return None
    if found.kind == "ref_progress":
        return f"{call}: ref_progress takes no fmt", "the formats are in the reference's ref.yml under 'progress'"
    if found.kind != "ref" or not directives.FORMAT_RE.match(found.fmt):
        return f"{call}: unusable fmt '{found.fmt}'", 'use a number format such as fmt=".4f" or fmt=".1%"'
    return None


def _registry(source: SourceFile | None, cls, diagnostics: list[Diagnostic], unusable: set[str] | None = None) -> dict:
    """id -> record of a registry file; the ids of entries with errors go into ``unusable``."""
    if source is None or source.node is None:
        return {}
    reader = _Reader(source, diagnostics)
    if not isinstance(source.node, Map):
        reader.error(source.node, "a registry is a mapping of id → fields", "write 'some-id:' then its fields")
        return {}
    entries = {}
    for ident, (key_node, value_node) in source.node.entries.items():
        if not (ident.isascii() and ID_RE.fullmatch(ident)):
            reader.error(key_node, f"'{ident}' is not a valid id",
                         "ids are lowercase letters, digits and hyphens, e.g. andrej-karpathy")
            continue
        record = reader.record(cls, value_node, extra={"id": ident, "path": source.path})
        if record is not None:
            entries[ident] = record
            if cls is Person and not HANGUL_RE.search(record.ko):
                _warn_at(reader, value_node, "ko", f"ko '{record.ko}' has no Hangul, yet pages show it as the "
                         "person's Korean name", "write the name as Koreans read it, e.g. ko: 안드레이 카패시")
        elif unusable is not None:
            unusable.add(ident)
    return entries


HANGUL_RE = re.compile("[\uac00-\ud7a3]")


def _warn_at(reader: _Reader, mapping: Node, key: str, message: str, hint: str) -> None:
    """A warning at ``key``'s value in ``mapping`` (a record that loaded, so the key is there)."""
    node = mapping.entries[key][1]
    reader.diagnostics.append(Diagnostic(reader.path, node.line, node.col, "warning", one_line(message), hint))


def _check_source_titles(reader: _Reader, root: Map) -> None:
    """A source whose title is its address says nothing about it (what `digest new` writes when it
    could not read a title)."""
    sources = root.entries.get("sources", (None, None))[1]
    for item in sources.items if sources.__class__ is Seq else ():
        url, title = (item.entries.get(k, (None, None))[1] if item.__class__ is Map else None for k in ("url", "title"))
        if url.__class__ is Scalar and title.__class__ is Scalar and title.value.strip() == url.value.strip():
            _warn_at(reader, item, "title", "the source's title is its address",
                     "write the source's own title (the page's or paper's), as readers see it in 출처")


def _registry_loaded(source: SourceFile | None, field: str, what: str, diagnostics: list[Diagnostic]) -> bool:
    """Whether a registry file was read as a mapping. If not, its own errors are the cause: say once that
    the notes' ids were not checked against it, instead of calling every id in every note unknown."""
    if source is not None and isinstance(source.node, Map):
        return True
    path = source.path if source is not None else next(  # missing: where load reported it
        (d.path for d in diagnostics if PurePosixPath(d.path).name == f"{field}.yml"), f"content/{field}.yml")
    line, col = next(((d.line, d.col) for d in diagnostics if d.path == path), (1, 1))
    diagnostics.append(Diagnostic(path, line, col, "warning",
                                  f"the {what} ids of notes were not checked, because {field}.yml did not load",
                                  f"fix the error(s) in {field}.yml; the next `digest check` checks them"))
    return False


def validate(raw: RawContent, today: dt.date | None = None,
             manifests: dict[str, RefManifest | None] | None = None) -> tuple[Content | None, list[Diagnostic]]:
    """Every problem of the content, and the records if there were no errors.

    ``manifests`` (reference name → manifest) lets directives be checked against
    the metrics and figures each reference declares; None stands for a reference
    whose ref.yml has errors of its own, which notes citing it do not repeat.
    """
    with gc_paused():
        return _validate(raw, today, manifests or {})


def _validate(raw: RawContent, today: dt.date | None,
              manifests: dict[str, RefManifest]) -> tuple[Content | None, list[Diagnostic]]:
    today = today or dt.datetime.now(SEOUL).date()
    diagnostics = list(raw.diagnostics)
    unusable_tags: set[str] = set()
    unusable_people: set[str] = set()
    tags = _registry(raw.tags, Tag, diagnostics, unusable_tags)
    people = _registry(raw.people, Person, diagnostics, unusable_people)
    check_tags = _registry_loaded(raw.tags, "tags", "tag", diagnostics)
    check_people = _registry_loaded(raw.people, "people", "person", diagnostics)
    notes: list[Note] = []
    slugs: dict[str, list[tuple[str, int, int]]] = {}  # slug -> (path, line, col) of each note using it
    for source in raw.notes:
        if source.node is None:
            continue
        reader = _Reader(source, diagnostics)
        values, ok = reader.fields(Note, source.node)
        if not isinstance(source.node, Map):
            continue
        _check_note_file(values, reader, source.node, source.path, today)
        if check_tags:
            _check_ids(values, reader, source.node, "tags", tags, "tag", unusable_tags)
        if check_people:
            _check_ids(values, reader, source.node, "people", people, "person", unusable_people)
        _check_refs(values, reader, source.node, manifests)
        _check_unclosed_html(reader, source.node)
        _check_body_style(reader, source.node)
        _check_template_text(reader, source.node)
        _check_lost_comment(reader, source.node)
        _check_source_titles(reader, source.node)
        if slug := values.get("slug"):
            slugs.setdefault(slug, []).append((source.path, *_position(source.node, "slug")))
        if ok:
            notes.append(Note(**values, path=source.path))
    _duplicate_slugs(slugs, diagnostics)
    intros = _intros(raw.intros, notes, diagnostics)
    diagnostics.sort(key=lambda d: (d.path, d.line, d.col))
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    notes.sort(key=lambda n: (n.date, n.slug), reverse=True)
    return Content(raw.root, tuple(notes), tags, people, intros), diagnostics


def _duplicate_slugs(slugs: dict[str, list[tuple[str, int, int]]], diagnostics: list[Diagnostic]) -> None:
    """A slug shared by notes is reported on each of them: `digest check <one of them>` must see it."""
    for slug, users in slugs.items():
        if len(users) < 2:
            continue
        for path, line, col in users:
            others = ", ".join(other for other, _, _ in users if other != path)
            diagnostics.append(Diagnostic(path, line, col, "error", f"duplicate slug '{slug}', also used by {others}",
                                          "each note needs its own slug: give the newer note another slug "
                                          "(and file name); keep the published note's URL"))


MAX_INTRO_CHARS = 2000
MAX_INTRO_TITLE_CHARS = 120


def iso_week_name(date: dt.date) -> str:
    year, week, _ = date.isocalendar()
    return f"{year}-W{week:02d}"


def _intros(sources: list[SourceFile], notes: list[Note], diagnostics: list[Diagnostic]) -> dict[str, IssueIntro]:
    """The editor's intro files, judged with the same safe reader and rules as notes."""
    weeks = {iso_week_name(n.date) for n in notes if not n.draft}
    intros = {}
    for source in sources:
        intro = _intro(source, PurePosixPath(source.path).stem, weeks, _Reader(source, diagnostics))
        if intro is not None:
            intros[intro.week] = intro
    return intros


def _iso_week(stem: str) -> str | None:
    """``stem`` if it names a real ISO week (2015-W53 exists, 2016-W53 does not), else None."""
    found = WEEK_FILE_RE.fullmatch(stem)
    try:
        return stem if found and dt.date.fromisocalendar(int(found[1]), int(found[2]), 1) else None
    except ValueError:
        return None


def _intro(source: SourceFile, stem: str, weeks: set[str], reader: _Reader) -> IssueIntro | None:
    week = _iso_week(stem)
    if week is None:
        reader.error(source.node, f"'{stem}' is not an ISO week",
                     "name the file <yyyy>-W<ww>.yml after the week of its issue, e.g. 2016-W26.yml")
        return None
    values, ok = reader.fields(IssueIntro, source.node)
    if not ok:
        return None
    entries = source.node.entries
    title, text = values.get("title"), values["intro"]
    if title and ("\n" in title.strip() or len(title) > MAX_INTRO_TITLE_CHARS):
        reader.error(entries["title"][1], f"title must be one line of at most {MAX_INTRO_TITLE_CHARS} "
                     "characters", "it becomes the email subject; shorten it")
        return None
    if len(text) > MAX_INTRO_CHARS:
        reader.error(entries["intro"][1], f"intro is {len(text)} characters, over {MAX_INTRO_CHARS}",
                     "keep the intro to a few short paragraphs; the notes follow it")
        return None
    if week not in weeks:
        reader.error(source.node, f"no published note is dated in {week}, so this intro is never sent",
                     "check the week in the file name", severity="warning")
    return IssueIntro(**values, week=week, path=source.path)


__all__ = ["validate", "url_problem", "field_specs"]
