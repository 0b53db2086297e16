"""Read one YAML file into a tree of marked nodes, safely and fast.

Notes come from strangers' pull requests, so the reader is stricter than
``yaml.safe_load``: it refuses anchors and aliases (no billion-laughs),
explicit tags, several documents, duplicate keys, tabs in indentation, a byte-order mark,
invalid UTF-8, files over ``MAX_BYTES`` and nesting deeper than ``MAX_DEPTH``.
Every scalar stays a string: the validator decides what ``2016-06-30`` or
``no`` means for each field (no Norway problem).

It walks libyaml's event stream (C, fast) and keeps each node's line and
column, so the validator can point at the exact place of a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.tokens import ScalarToken

from digest.errors import YamlInputError

try:  # libyaml: ~10x faster; PyYAML's wheels ship it
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - pure-Python fallback with the same events
    from yaml import BaseLoader as _Parser


MAX_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_NODES = 50_000


@dataclass(eq=False, slots=True)
class Node:
    """A YAML node with 1-based ``line`` and ``col`` of where it starts."""

    line: int
    col: int


@dataclass(eq=False, slots=True)
class Scalar(Node):
    value: str
    style: str  # "" plain, "'" or '"' quoted, "|" or ">" block
    end_line: int = 0  # 1-based line where the value ends (for block scalars: may be the line after)

    @property
    def is_plain(self) -> bool:
        return self.style == ""


@dataclass(eq=False, slots=True)
class Seq(Node):
    items: list[Node]


@dataclass(eq=False, slots=True)
class Map(Node):
    # key text -> (key node, value node), in file order
    entries: dict[str, tuple[Scalar, Node]]


def decode(path: str, data: bytes) -> str:
    """Bytes to text, refusing what the YAML parser would misread."""
    if len(data) > MAX_BYTES:
        raise YamlInputError(
            path, 1, 1,
            f"file is {len(data) // 1024} KiB, over the {MAX_BYTES // 1024} KiB limit for one file",
            "split it into several notes or shorten the body",
        )
    if data.startswith(b"\xef\xbb\xbf"):
        raise YamlInputError(
            path, 1, 1, "file starts with a UTF-8 byte-order mark (BOM)",
            "save the file as UTF-8 without BOM (most editors: 'UTF-8' rather than 'UTF-8 with BOM')",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1  # columns count characters, as libyaml's do
        col = len(data[line_start:exc.start].decode("utf-8", errors="replace")) + 1
        raise YamlInputError(
            path, line, col, f"invalid UTF-8 (byte 0x{data[exc.start]:02x})",
            "save the file as UTF-8; it may have been written as EUC-KR/CP949",
        ) from None
    _refuse_odd_breaks(path, text)
    return text


def _tab_error(path: str, line: int, col: int) -> YamlInputError:
    return YamlInputError(path, line, col, "tab character used for indentation",
                          "indent with spaces: YAML forbids tabs in indentation (tabs are fine inside quoted "
                          "values and inside the text of 'body: |')")


def _refuse_indenting_tabs(path: str, text: str) -> None:
    """Refuse a tab in a line's leading whitespace, unless it lies inside a quoted or block scalar: there it
    is content (a Makefile or Go example in ``body: |``, a tab in a quoted value)."""
    lines = text.split("\n")
    suspects = []
    for n, line in enumerate(lines):
        indent = line[:len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            suspects.append((n, indent.index("\t")))
    if not suspects:
        return
    spans = []  # (start, end) as (line, column), 0-based, end excluded
    scanner = _Parser(text)
    try:
        while (token := scanner.get_token()) is not None:
            if token.__class__ is ScalarToken and token.style:
                spans.append(((token.start_mark.line, token.start_mark.column),
                              (token.end_mark.line, token.end_mark.column)))
    except yaml.YAMLError:  # the tab itself, or another error that parsing reports: spans so far suffice
        pass
    for at in suspects:
        if not any(start <= at < end for start, end in spans):
            raise _tab_error(path, at[0] + 1, at[1] + 1)


# Line breaks libyaml counts but editors may not (lone CR, NEL, LINE/PARAGRAPH SEPARATOR): with
# them every later line number would be off. (libyaml itself refuses control characters.)
_ODD_BREAK = re.compile("[\x85\u2028\u2029]|\r(?!\n)")


def _refuse_odd_breaks(path: str, text: str) -> None:
    if "\r" in text or "\x85" in text or "\u2028" in text or "\u2029" in text:  # fast path: none
        found = _ODD_BREAK.search(text)
        if found:
            raise _odd_character(path, text, found.start(), "line break character {} is not allowed",
                                 "end lines with LF (or CRLF) only; this invisible character often comes "
                                 "from copy-pasted text")


def _odd_character(path: str, text: str, at: int, message: str, hint: str) -> YamlInputError:
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    return YamlInputError(path, line, col, message.format(f"U+{ord(text[at]):04X}"), hint)


def one_line(text: str, limit: int = 400) -> str:
    """``text`` safe to print on one line: invisible characters escaped, the middle of long text cut."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if len(text) > limit:
        text = f"{text[:limit // 2]} … {text[-limit // 2:]}"
    return text


def parse(path: str, text: str) -> Node:
    """Parse one YAML document into marked nodes; raise YamlInputError on anything unsafe."""
    if "\t" in text:
        _refuse_indenting_tabs(path, text)
    parser = _Parser(text)
    try:
        return _Builder(path, parser).document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        if mark is not None and text.split("\n")[mark.line:mark.line + 1] and \
                text.split("\n")[mark.line][mark.column:mark.column + 1] == "\t":
            raise _tab_error(path, mark.line + 1, mark.column + 1) from None
        raise _syntax_error(path, text, exc) from None
    except yaml.reader.ReaderError as exc:  # a control character; its position comes without a mark
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        at = text.find(char)  # the reader stops at the first one
        if at < 0:  # pragma: no cover - defensive
            raise YamlInputError(path, 1, 1, one_line(f"YAML error: {exc.reason}"), "") from None
        raise _odd_character(path, text, at, "control character {} is not allowed",
                             "remove it; it is invisible and often comes from copy-pasted text") from None
    except yaml.YAMLError as exc:  # pragma: no cover - any other libyaml error without a mark
        raise YamlInputError(path, 1, 1, one_line(f"YAML error: {' '.join(str(exc).split())}"), "") from None


def _syntax_error(path: str, text: str, exc: yaml.MarkedYAMLError) -> YamlInputError:
    """Point at the cause where libyaml only notices it later: an open quote or bracket, a missing ':'."""
    mark, at = exc.problem_mark or exc.context_mark, exc.context_mark
    problem, context = exc.problem or exc.context or "YAML syntax error", exc.context or ""
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    if mark is not None and "\uff1a" in text and (colon := _fullwidth_colon(path, text, mark.line)) is not None:
        return colon
    if at is not None and context == "while scanning a quoted scalar":
        return YamlInputError(path, at.line + 1, at.column + 1, "YAML syntax error: the quote that starts "
                              "here is never closed", "add the closing quote at the end of the value")
    if at is not None and context.startswith("while parsing a flow") and mark and mark.line != at.line:
        bracket = "[" if "sequence" in context else "{"
        return YamlInputError(path, at.line + 1, at.column + 1,
                              f"YAML syntax error: the '{bracket}' opened here is never closed, or an item "
                              f"in it is malformed ({problem} at line {line}, col {col})",
                              f"close it with '{']' if bracket == '[' else '}'}' on the same line; quote "
                              "items that contain ',', ':', '[' or '{'")
    if at is not None and context == "while scanning a simple key":  # the key's line lacks ': '
        return YamlInputError(path, at.line + 1, at.column + 1, f"YAML syntax error: {problem}",
                              "each line of a mapping needs 'key: value'")
    if mark is not None and (quoted := _quoted_before(text, mark)) is not None:
        return YamlInputError(path, quoted.line + 1, quoted.column + 1,
                              f"YAML syntax error: the quoted value that starts here runs on to line {line} "
                              f"({problem} at line {line}, col {col})",
                              "is its closing quote missing? a quoted value ends only at the next "
                              "matching quote")
    if mark is not None and (unquoted := _unquoted_value(path, text, mark.line, problem)) is not None:
        return unquoted
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if line > len(lines) >= 1:  # libyaml's end-of-stream mark lies past the last line
        line, col = len(lines), len(lines[-1].rstrip("\r")) + 1
    return YamlInputError(path, line, col, f"YAML syntax error: {problem}", _syntax_hint(problem))


# 'key: value' whose value starts with a character YAML reads as syntax: [번역] ..., "GAN"의 ..., *중요* ...
_UNQUOTED_RE = re.compile(r"^(?P<indent>\s*(?:- )?)(?P<key>[A-Za-z_][\w-]*):[ ]+(?P<value>[\[{\"'*&!].*?)\s*$")


_KEY_RE = re.compile(r"\s*(?:- )?[A-Za-z_][\w-]*\s*")


def _fullwidth_colon(path: str, text: str, index: int) -> YamlInputError | None:
    """'summary： ...' typed with a Korean input method: the key's colon is U+FF1A, which YAML does not know."""
    lines = text.split("\n")
    for n in (index, index - 1):
        if 0 <= n < len(lines):
            head = lines[n].split(" #", 1)[0]
            if "\uff1a" in head and _KEY_RE.fullmatch(head.split("\uff1a", 1)[0]):
                at = head.index("\uff1a")
                key = one_line(head[:at].strip().removeprefix("- "))
                return YamlInputError(path, n + 1, at + 1, "YAML syntax error: full-width colon '：' (U+FF1A) "
                                      f"after '{key}'; YAML needs the ASCII colon ':'",
                                      f"write '{key}: ' with the ASCII ':' and a space (switch the input "
                                      "method to English for it)")
    return None


def _unquoted_value(path: str, text: str, index: int, problem: str) -> YamlInputError | None:
    """'title: [번역] ...', 'title: "GAN"의 ...', 'title: *중요* ...': a value that starts with YAML syntax."""
    lines = text.split("\n")
    found = _UNQUOTED_RE.match(lines[index].rstrip("\r")) if 0 <= index < len(lines) else None
    if found is None or _closes_alone(found["value"]):
        return None
    value = found["value"]
    quoted = f"'{value}'" if '"' in value and "'" not in value else \
        '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return YamlInputError(path, index + 1, len(found["indent"]) + len(found["key"]) + 3,
                          one_line(f"YAML syntax error: the value of '{found['key']}' starts with '{value[0]}', "
                                   f"which YAML reads as syntax, not text ({problem})"),
                          one_line(f"quote the whole value: {found['key']}: {quoted}"))


def _closes_alone(value: str) -> bool:
    """Whether ``value`` is one whole flow list/mapping or quoted string (then the error lies elsewhere)."""
    pairs = {"[": "]", "{": "}", '"': '"', "'": "'"}
    return value[0] in pairs and value.endswith(pairs[value[0]]) and len(value) > 1


def _quoted_before(text: str, mark):
    """Start mark of a quoted scalar spanning several lines and ending on ``mark``'s line, if any."""
    scanner = _Parser(text)
    found = None
    try:
        while (token := scanner.get_token()) is not None and (
                token.start_mark.line, token.start_mark.column) < (mark.line, mark.column):
            if token.__class__ is ScalarToken and token.style in ("'", '"'):
                found = token
    except yaml.YAMLError:
        pass
    if found is not None and found.start_mark.line < found.end_mark.line == mark.line:
        return found.start_mark
    return None


def read(path: str, data: bytes) -> Node:
    return parse(path, decode(path, data))


def _syntax_hint(problem: str) -> str:
    if "mapping values are not allowed" in problem:
        return "a value that contains ': ' must be quoted, e.g. title: \"A: B\""
    if "could not find expected ':'" in problem:
        return "each line of a mapping needs 'key: value'; check the indentation above"
    if "escape" in problem or "hexdecimal number" in problem:
        return "inside \"...\" a backslash starts an escape: write \\\\ for one, or use '...' quotes"
    if "expected '-' indicator" in problem:
        return "check the indentation: the fields of one list item must line up under the first"
    if "did not find expected key" in problem or "expected <block end>" in problem:
        return "check the indentation: items of one list or mapping must line up"
    if "found character" in problem and "cannot start any token" in problem:
        return "quote the value: it starts with a character YAML reserves (@, `, % ...)"
    if "found unexpected end of stream" in problem or "found unexpected" in problem:
        return "a quote or bracket is not closed"
    return "see the line above the position too; quoting the value often fixes it"


class _Builder:
    def __init__(self, path: str, parser):
        self.path = path
        self.parser = parser
        self.nodes = 0

    def _fail(self, event, message: str, hint: str) -> YamlInputError:
        mark = event.start_mark
        return YamlInputError(self.path, mark.line + 1, mark.column + 1, message, hint)

    def document(self) -> Node:
        get = self.parser.get_event
        get()  # StreamStart
        if get().__class__ is StreamEndEvent:
            raise YamlInputError(self.path, 1, 1, "file is empty", "a note is a YAML mapping: title:, slug:, ...")
        root = self.node(get(), 1)
        if root.__class__ is Scalar and root.style == "" and root.value == "":  # only '---' and comments
            raise YamlInputError(self.path, 1, 1, "file is empty", "a note is a YAML mapping: title:, slug:, ...")
        get()  # DocumentEnd
        after = get()
        if after.__class__ is not StreamEndEvent:
            raise self._fail(after, "more than one YAML document ('---') in one file",
                             "put one note per file and remove the extra '---'")
        return root

    def _refuse(self, event, depth: int) -> None:
        """Raise if the event uses a feature content may not use; else return."""
        if event.__class__ is AliasEvent:
            raise self._fail(event, f"alias '*{event.anchor}' is not allowed",
                             "write the value out; anchors and aliases are refused in content")
        if event.anchor is not None:
            raise self._fail(event, f"anchor '&{event.anchor}' is not allowed",
                             "remove the '&name'; anchors and aliases are refused in content")
        if event.tag is not None and event.tag not in ("!", "tag:yaml.org,2002:str"):
            raise self._fail(event, one_line(f"explicit tag '{event.tag}' is not allowed"),
                             "remove the tag; write plain values")
        if depth > MAX_DEPTH:
            raise self._fail(event, f"nested more than {MAX_DEPTH} levels deep",
                             "notes are shallow: a mapping of fields, lists of tags and sources")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self._fail(event, f"more than {MAX_NODES} values in one file",
                             "this is not a note; split or shorten it")

    def node(self, event, depth: int) -> Node:
        cls = event.__class__
        if cls is not ScalarEvent or event.anchor is not None or event.tag is not None:
            self._refuse(event, depth)
        else:  # the common case, kept short
            self.nodes += 1
            if self.nodes > MAX_NODES:
                self._refuse(event, depth)
        mark = event.start_mark
        if cls is ScalarEvent:
            return Scalar(mark.line + 1, mark.column + 1, event.value, event.style or "", event.end_mark.line + 1)
        if cls is SequenceStartEvent:
            seq = Seq(mark.line + 1, mark.column + 1, [])
            get = self.parser.get_event
            append = seq.items.append
            while (event := get()).__class__ is not SequenceEndEvent:
                append(self.node(event, depth + 1))
            return seq
        if cls is MappingStartEvent:
            return self.mapping(mark, depth)
        raise self._fail(event, f"unexpected YAML event {cls.__name__}", "")  # pragma: no cover

    def mapping(self, mark, depth: int) -> Map:
        result = Map(mark.line + 1, mark.column + 1, {})
        entries = result.entries
        get = self.parser.get_event
        while (event := get()).__class__ is not MappingEndEvent:
            key = self.node(event, depth + 1)
            if key.__class__ is not Scalar:
                raise YamlInputError(self.path, key.line, key.col, "a key must be a plain word",
                                     "write 'field: value'")
            value = self.node(get(), depth + 1)
            if key.value in entries:
                first = entries[key.value][0]
                raise YamlInputError(
                    self.path, key.line, key.col,
                    one_line(f"duplicate key '{key.value}' (first at line {first.line})"),
                    "keep one of the two; YAML would silently use the last",
                )
            entries[key.value] = (key, value)
        return result
