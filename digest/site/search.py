"""Korean search index: analysed at build time, sharded so a phone downloads only what a query needs.

Why this design, and the recall it reaches compared with Material's default
search, is in docs/dev/search.md. In short:

* Index side: every Hangul word of a note is analysed by Kiwi (kiwipiepy); the
  index holds its nouns, every run of adjacent nouns (so "합성곱신경망" yields
  "합성곱", "신경망" and "합성곱신경망"), and, for nouns Kiwi keeps whole, their
  parts of two or more syllables. Terms are always literal substrings of the
  text, so a hit means the page really contains the word. Latin words and
  numbers are indexed lower-cased.
* Query side (docs/assets/javascripts/digest-search.js): a word the index does
  not know loses its particle or ending ("카패시의" → "카패시"), guided by the
  index's own vocabulary, then falls back to prefix matching.
* Files: ``search/manifest.json``; ``search/terms/<n>.json`` holds the terms
  whose first character's code point is n modulo the shard count, so a word
  and every way of stripping it sit in one shard; ``search/docs/<n>.json`` holds
  titles and URLs of 200 notes each.

Kiwi costs ~2 s to start and analyses each distinct word once per build; the
terms of each note are cached by a hash of its text (``cache_dir``), so an
unchanged note is not analysed again and a fully cached build never starts Kiwi.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from digest.content.model import Content, Note
from digest.files import write_atomic
from digest.site.records import TextFile

ANALYZER_VERSION = "2"
PREPARE_BATCH = 4096  # words per Kiwi call
DOCS_PER_CHUNK = 200
SHARD_TARGET_BYTES = 48_000  # aim for shards of this size (before gzip)
MAX_SHARDS = 2048
MAX_PART_SYLLABLES = 8  # parts of a long unsplit noun: up to this long

# Particles and endings the browser may strip from a query word, longest first; the
# remainder must be a term of the index. Shipped in the manifest so there is one list.
PARTICLES = sorted(
    {
        "이", "가", "은", "는", "을", "를", "의", "에", "와", "과", "도", "만", "로", "으로", "에서", "에게", "께",
        "한테", "까지", "부터", "처럼", "보다", "이나", "나", "이랑", "랑", "마다", "조차", "밖에", "이며", "며",
        "이고", "고", "이다", "다", "입니다", "인", "이란", "란", "이라는", "라는", "이라고", "라고", "에는", "에서는",
        "에도", "에서도", "으로는", "로는", "으로도", "로도", "과의", "와의", "에의", "에게서", "로서", "으로서",
        "로써", "으로써", "하다", "하는", "한", "할", "해", "했다", "하고", "하며", "된", "되는", "됐다", "들",
        "들이", "들은", "들을", "들의", "들도", "적", "적인", "적으로",
    },
    key=lambda p: (-len(p), p),
)

HANGUL_RE = re.compile(r"[가-힣]+")
LATIN_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
NOUN_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "XR", "SL", "SH"})

# Weights of where a word occurs: a title word ranks a note above a passing mention.
FIELD_WEIGHTS = {"title": 8, "names": 4, "summary": 3, "body": 1}
MAX_WEIGHT = 60

# Markdown to plain text, coarsely: what a reader sees, not link targets or markup.
_MD_STRIP = [
    (re.compile(r"\{\{.*?\}\}", re.S), " "),  # result directives
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links and images: keep the text
    (re.compile(r"<https?://[^>]*>"), " "),  # autolinks
    (re.compile(r"https?://\S+"), " "),  # bare URLs
    (re.compile(r"<[^>]+>"), " "),  # HTML tags
    (re.compile(r"\{[:#.][^}]*\}"), " "),  # attribute lists
]


@functools.lru_cache(maxsize=4096)  # `mkdocs serve` rebuilds: the same bodies again
def plain_text(markdown: str) -> str:
    for pattern, replacement in _MD_STRIP:
        markdown = pattern.sub(replacement, markdown)
    return markdown


def note_fields(note: Note, content: Content) -> dict[str, str]:
    """The text a reader sees of a note, by field."""
    names = [content.tags[t].name for t in note.tags]
    names += [f"{content.people[p].ko} {content.people[p].en}" for p in note.people]
    sources = [f"{s.title} {s.arxiv or ''}" for s in note.sources]
    return {
        "title": note.title,
        "names": " ".join(names),
        "summary": note.summary,
        "body": plain_text(note.body) + " " + " ".join(sources),
    }


class Analyzer:
    """Terms of a Hangul word, by Kiwi; each distinct word is analysed once per process."""

    def __init__(self):
        self._kiwi = None
        self._memo: dict[str, tuple[str, ...]] = {}
        self._loading = threading.Lock()  # `mkdocs serve` loads it in the background (warm_analyzer)

    @property
    def loaded(self) -> bool:
        return self._kiwi is not None

    def kiwi(self):
        with self._loading:
            return self._load()

    def _load(self):
        if self._kiwi is None:
            from kiwipiepy import Kiwi  # ~2 s to load its model: only when a note is not cached

            # Without the typo and multi-word dictionaries: 330 MB instead of 510, same nouns.
            # Its threads share one model: a batch of words is analysed on every core.
            workers = min(4, os.cpu_count() or 1)
            self._kiwi = Kiwi(num_workers=workers, load_typo_dict=False, load_multi_dict=False)
        return self._kiwi

    def prepare(self, texts: Iterable[str]) -> None:
        """Analyse every new Hangul word of ``texts`` in one batch (Kiwi's threads run it in parallel)."""
        new = sorted({w for text in texts for w in HANGUL_RE.findall(text)} - self._memo.keys())
        for start in range(0, len(new), PREPARE_BATCH):  # batches: Kiwi holds one batch of results at a time
            batch = new[start:start + PREPARE_BATCH]
            for word, tokens in zip(batch, self.kiwi().tokenize(batch), strict=True):
                self._memo[word] = tuple(noun_terms(word, tokens))

    def hangul_terms(self, word: str) -> tuple[str, ...]:
        found = self._memo.get(word)
        if found is None:
            found = self._memo[word] = tuple(noun_terms(word, self.kiwi().tokenize(word)))
        return found


def noun_terms(word: str, tokens) -> list[str]:
    """Nouns of ``word``, runs of adjacent nouns and parts of long nouns: literal substrings only.

    Kiwi may normalise a form ("힌튼" → "힌트"+"ㄴ") or join two nouns with a space
    ("합성곱 신경망"); spans into the word keep the index true to the text.
    """
    spans: list[tuple[int, int]] = []
    for token in tokens:
        if token.tag not in NOUN_TAGS or token.len == 0:
            continue
        start, end = token.start, token.start + token.len
        if " " in token.form and token.form.replace(" ", "") == word[start:end]:
            offset = start
            for part in token.form.split(" "):  # a compound Kiwi wrote with a space: its parts
                spans.append((offset, offset + len(part)))
                offset += len(part)
        else:
            spans.append((start, end))
    terms: set[str] = set()
    runs: list[list[tuple[int, int]]] = []
    for span in spans:
        if runs and runs[-1][-1][1] == span[0]:
            runs[-1].append(span)
        else:
            runs.append([span])
    for run in runs:
        for i in range(len(run)):
            for j in range(i, min(len(run), i + 4)):
                terms.add(word[run[i][0]:run[j][1]])
        whole = word[run[0][0]:run[-1][1]]
        if len(run) == 1 and len(whole) >= 4:  # a long noun Kiwi kept whole: "질의응답" → "응답"
            terms.update(parts(whole))
        if len(run) == 1:  # an unknown word Kiwi read as one noun, particle included: "레딧과" → "레딧"
            terms.update(whole[:-len(p)] for p in PARTICLES if whole.endswith(p) and len(whole) - len(p) >= 2)
    return sorted(t for t in terms if HANGUL_RE.fullmatch(t))


def parts(noun: str) -> Iterable[str]:
    for size in range(2, min(len(noun), MAX_PART_SYLLABLES + 1)):
        for i in range(len(noun) - size + 1):
            yield noun[i:i + size]


def analyse(fields: dict[str, str], analyzer: Analyzer) -> dict[str, int]:
    """Term → weight for one note."""
    weights: dict[str, int] = {}
    for name, text in fields.items():
        weight = FIELD_WEIGHTS[name]
        for word in HANGUL_RE.findall(text):
            for term in analyzer.hangul_terms(word):
                weights[term] = weights.get(term, 0) + weight
        for word in LATIN_RE.findall(text):
            term = word.lower()
            weights[term] = weights.get(term, 0) + weight
    return {term: min(w, MAX_WEIGHT) for term, w in weights.items()}


class TermCache:
    """Note text hash → analysed terms, kept in one JSON file between builds."""

    def __init__(self, folder: Path | None):
        self.file = folder / f"terms-v{ANALYZER_VERSION}.json" if folder else None
        self.entries: dict[str, dict[str, int]] = {}
        self.used: set[str] = set()
        if self.file and self.file.is_file():
            try:
                self.entries = json.loads(self.file.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # a damaged cache is rebuilt, never trusted
                self.entries = {}
        self.changed = False

    @staticmethod
    def key(fields: dict[str, str]) -> str:
        return _key(tuple(sorted(fields.items())))

    def terms(self, fields: dict[str, str], analyzer: Analyzer) -> dict[str, int]:
        key = self.key(fields)
        self.used.add(key)
        found = self.entries.get(key)
        if found is None:
            found = self.entries[key] = analyse(fields, analyzer)
            self.changed = True
        return found

    def missing(self, all_fields: Iterable[dict[str, str]]) -> Iterable[str]:
        """The texts of the notes the cache does not hold."""
        for fields in all_fields:
            if self.key(fields) not in self.entries:
                yield from fields.values()

    def save(self) -> None:
        if not self.file:
            return
        stale = set(self.entries) - self.used
        if not (self.changed or stale):
            return
        kept = {k: v for k, v in self.entries.items() if k in self.used}  # deleted notes leave the cache
        self.file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.file, json.dumps(kept, ensure_ascii=False, separators=(",", ":")))


_ANALYZER = Analyzer()  # one per process: `mkdocs serve` rebuilds reuse its Kiwi and memo
keep_analyzer = False  # set by the MkDocs adapter under `mkdocs serve`


def warm_analyzer() -> None:
    """Load Kiwi now (in a thread, under `mkdocs serve`): the first edited note is analysed without the wait."""
    _ANALYZER.kiwi()


def shard_of(term: str, shards: int) -> int:
    return ord(term[0]) % shards


@functools.lru_cache(maxsize=4096)
def _key(items: tuple[tuple[str, str], ...]) -> str:
    return hashlib.sha256(json.dumps(dict(items), ensure_ascii=False, sort_keys=True).encode()).hexdigest()


_kept: dict[Path, TermCache] = {}  # under `mkdocs serve`: the term cache stays in memory between rebuilds


def _term_cache(cache_dir: Path | None) -> TermCache:
    if not (keep_analyzer and cache_dir):
        return TermCache(cache_dir)
    cache = _kept.get(cache_dir) or _kept.setdefault(cache_dir, TermCache(cache_dir))
    cache.used = set()
    return cache


def save_kept_caches() -> None:
    """At the end of `mkdocs serve`: write the term caches it kept in memory (rebuilds do not)."""
    for cache in _kept.values():
        cache.save()


def index_files(content: Content, cache_dir: Path | None, note_url: Callable[[Note], str]):
    """The search files of the site, for the published notes (newest first = doc 0)."""
    notes = content.published
    cache = _term_cache(cache_dir)
    fields = [note_fields(note, content) for note in notes]
    # Fork only while this process has no Kiwi: a child forked beside Kiwi's worker threads would wait
    # for them forever (they do not come along), and the memory the child saves is already spent here.
    if (not keep_analyzer and not _ANALYZER.loaded and cache.file and hasattr(os, "fork")
            and any(True for _ in cache.missing(fields))):
        cache = _analyse_in_child(fields, cache)
    terms = _terms_of(fields, cache)
    if not keep_analyzer:
        cache.save()
    postings: dict[str, list[int]] = {}
    for doc, weights in enumerate(terms):
        for term, weight in weights.items():
            postings.setdefault(term, []).extend((doc, weight))

    encoded = {term: _delta(values) for term, values in postings.items()}
    size = sum(len(t) * 3 + 8 + 5 * len(v) for t, v in encoded.items())
    shards = max(1, min(MAX_SHARDS, math.ceil(size / SHARD_TARGET_BYTES)))
    by_shard: dict[int, dict[str, list[int]]] = {}
    for term in sorted(encoded):
        by_shard.setdefault(shard_of(term, shards), {})[term] = encoded[term]

    files = [TextFile(f"search/terms/{n}.json", _json(shard)) for n, shard in sorted(by_shard.items())]
    for start in range(0, len(notes), DOCS_PER_CHUNK):
        chunk = [[note_url(n), n.title, n.date.isoformat(), n.kind_label] for n in notes[start:start + DOCS_PER_CHUNK]]
        files.append(TextFile(f"search/docs/{start // DOCS_PER_CHUNK}.json", _json(chunk)))
    manifest = {
        "version": ANALYZER_VERSION, "docs": len(notes), "docs_per_chunk": DOCS_PER_CHUNK,
        "shards": shards, "present": sorted(by_shard), "particles": PARTICLES,
    }
    files.append(TextFile("search/manifest.json", _json(manifest)))
    return files


def _terms_of(fields: list[dict[str, str]], cache: TermCache) -> list[dict[str, int]]:
    """Each note's terms: from the cache, or analysed (the new words of all uncached notes in one go)."""
    _ANALYZER.prepare(cache.missing(fields))
    return [cache.terms(note_text, _ANALYZER) for note_text in fields]


def _analyse_in_child(fields: list[dict[str, str]], cache: TermCache) -> TermCache:
    """Analyse the uncached notes in a forked process that fills the cache file and exits: Kiwi and its
    memo of every word (~450 MB at 10,000 notes) go back to the system with it, instead of staying in
    this process's heap under the pages that come next. Under `mkdocs serve` Kiwi stays (keep_analyzer)."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            _terms_of(fields, cache)
            cache.save()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return TermCache(cache.file.parent) if status == 0 else cache  # if not, here, where an error shows itself


def _delta(values: list[int]) -> list[int]:
    """[doc, weight, doc, weight, …] with each doc as the gap from the previous one: smaller files."""
    out, last = [], 0
    for i in range(0, len(values), 2):
        out += (values[i] - last, values[i + 1])
        last = values[i]
    return out


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
