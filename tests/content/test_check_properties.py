"""Whatever a note file holds, `digest check` answers with diagnostics: no exception, no hang,
and every diagnostic points inside the file on one line.

Inputs: YAML-ish text built from the note model's keys and YAML punctuation, random bytes,
and valid notes with a line deleted or duplicated, characters swapped or text inserted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.pipeline.check import check

ROOT = Path(__file__).resolve().parents[2]
CONTENT = ROOT / "content"
NOTE = "notes/2016/note.yml"

SETTINGS = settings(deadline=2000, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

VALID = """\
title: "이미지를 만드는 두 갈래: GAN과 PixelCNN"
slug: note
date: 2016-11-28
kind: paper
tags: [andrej-karpathy, generative-models]
people:
  - ian-goodfellow
  - andrej-karpathy
sources:
  - url: https://arxiv.org/abs/1406.2661
    title: Generative Adversarial Networks
    arxiv: "1406.2661"
    date: 2014-06-10
summary: >-
  신경망으로 이미지를 생성하는 대표적인 두 흐름을 정리했다.
refs: [backprop-gates]
draft: false
body: |
  ## GAN

  결과는 {{ ref("backprop-gates", "neuron.output", fmt=".4f") }} 이다.
      {{ ref_figure("backprop-gates", "accuracy") }}
"""

TOKENS = [
    # keys of the note model and of a source
    "title: ", "slug: ", "date: ", "kind: ", "tags: ", "people: ", "sources:", "summary: ", "body: ",
    "refs: ", "series: ", "draft: ", "updated: ", "url: ", "arxiv: ", "sumary: ", "note",
    # values
    "2016-06-30", "2016-02-30", "2999-01-01", "paper", "yes", "true", "~", "null", "andrej-karpathy",
    "backprop-gates", "https://arxiv.org/abs/1606.04080", "ftp://x", "1606.04080", "0x1F", "1e3",
    # YAML punctuation and structure
    "\n", "\n", "\n", "\n  ", "\n    ", "\n  - ", "- ", ": ", ":", " ", "  ", "[", "]", "{", "}", ",", "? ",
    "|", "|-", ">", ">+", "|2", "#", " # c", "'", '"', "''", '\\"', "\\", "---\n", "...\n", "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n", "&a ", "*a", "&x [*a, *a] ", "!!python/object:os.system ", "!x ", "!<tag:x> ",
    "!!str ", "!!binary ", "<<: ", "@", "`", "%", "=", "\t", "\r\n", "\r", "\x00", "\x07", "\x85",
    "\u2028", "\ufeff", "\ud7ff", "\U0001f600",
    # Korean and directives
    "한글", "노트 본문", "안드레이 카패시", "{{ ", " }}", '{{ ref("backprop-gates", "x") }}',
    '{{ ref_figure("nope", "y") }}', '{{ ref("', "ref(", "{{{{",
]

yamlish = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.text(max_size=4),
              st.sampled_from(TOKENS).map(lambda t: t * 20)),
    max_size=60,
).map("".join)


@pytest.fixture(scope="module")
def content(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prop") / "content"
    (root / "notes" / "2016").mkdir(parents=True)
    shutil.copy(CONTENT / "tags.yml", root / "tags.yml")
    shutil.copy(CONTENT / "people.yml", root / "people.yml")
    for manifest in CONTENT.glob("refs/*/ref.yml"):
        target = root / "refs" / manifest.parent.name
        target.mkdir(parents=True)
        for file in manifest.parent.iterdir():
            if file.is_file():
                shutil.copy(file, target / file.name)
    return root


def run_check(content: Path, data: bytes):
    (content / NOTE).write_bytes(data)
    result = check(content)
    note = f"content/{NOTE}"
    try:
        lines = data.decode("utf-8").removeprefix("\ufeff").split("\n")
    except UnicodeDecodeError:
        lines = None
    if lines and lines[-1] == "" and len(lines) > 1:
        lines.pop()
    for d in result.diagnostics:
        assert d.path == note, d  # the fixture's registries and references are valid
        assert d.severity in ("error", "warning"), d
        assert d.line >= 1 and d.col >= 1, d
        for text in (d.message, d.hint):
            assert "\n" not in text and "\r" not in text, d
            assert text.isprintable(), d
        assert len(d.message) + len(d.hint) < 2000, d
        if lines is not None:  # the position lies inside the file
            assert d.line <= len(lines), (d, len(lines))
            assert d.col <= len(lines[d.line - 1].rstrip("\r")) + 1, (d, lines[d.line - 1])
    for line in result.lines(github=True):
        assert "\n" not in line
    return result


def test_the_valid_note_is_valid(content):
    result = run_check(content, VALID.encode())
    assert result.ok and not result.diagnostics, result.lines()


@SETTINGS
@given(text=yamlish)
def test_yamlish_text(content, text):
    run_check(content, text.encode("utf-8", errors="surrogatepass"))


@SETTINGS
@given(text=yamlish)
def test_yamlish_text_after_valid_fields(content, text):
    """The random part comes after valid fields, so it reaches the validator, not only the parser."""
    run_check(content, (VALID + text).encode("utf-8", errors="surrogatepass"))


@SETTINGS
@given(data=st.binary(max_size=600))
def test_random_bytes(content, data):
    run_check(content, data)


@SETTINGS
@given(prefix=st.binary(max_size=8), data=st.binary(max_size=40), at=st.integers(0, len(VALID.encode())))
def test_random_bytes_inside_a_valid_note(content, prefix, data, at):
    valid = VALID.encode()
    run_check(content, prefix + valid[:at] + data + valid[at:])


mutation = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 200)),
    st.tuples(st.just("duplicate"), st.integers(0, 200)),
    st.tuples(st.just("swap"), st.integers(0, 5000), st.integers(0, 5000)),
    st.tuples(st.just("insert"), st.integers(0, 5000), st.sampled_from(TOKENS)),
    st.tuples(st.just("truncate"), st.integers(0, 5000)),
    st.tuples(st.just("indent"), st.integers(0, 200), st.sampled_from([" ", "  ", "-", "\t"])),
)


def mutate(text: str, ops) -> str:
    for op, *args in ops:
        lines = text.split("\n")
        if op == "delete":
            del lines[args[0] % len(lines)]
            text = "\n".join(lines)
        elif op == "duplicate":
            i = args[0] % len(lines)
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == "indent":
            i = args[0] % len(lines)
            lines[i] = args[1] + lines[i]
            text = "\n".join(lines)
        elif not text:
            continue
        elif op == "swap":
            i, j = sorted((args[0] % len(text), args[1] % len(text)))
            if i != j:
                text = text[:i] + text[j] + text[i + 1:j] + text[i] + text[j + 1:]
        elif op == "insert":
            i = args[0] % (len(text) + 1)
            text = text[:i] + args[1] + text[i:]
        elif op == "truncate":
            text = text[: args[0] % (len(text) + 1)]
    return text


REAL_NOTE = (CONTENT / "notes" / "2016" / "gan-and-pixelcnn.yml").read_text(encoding="utf-8")


@SETTINGS
@given(ops=st.lists(mutation, min_size=1, max_size=4), real=st.booleans())
def test_mutated_valid_note(content, ops, real):
    text = REAL_NOTE.replace("slug: gan-and-pixelcnn", "slug: note") if real else VALID
    run_check(content, mutate(text, ops).encode("utf-8", errors="surrogatepass"))
