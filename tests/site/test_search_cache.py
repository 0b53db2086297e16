"""The search index is the same whether Kiwi analyses the notes now, in a child process, or not at all
(the term cache by content hash): a 10,000-note rebuild must not re-tokenize unchanged notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.pipeline.check import load_content
from digest.site import search
from digest.site.render import note_page, url_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def content():
    return load_content(ROOT / "content")[0]


def index(content, cache_dir: Path | None) -> dict[str, str]:
    files = search.index_files(content, cache_dir, note_url=lambda n: url_of(note_page(n)))
    return {f.path: f.text for f in files}


@pytest.fixture
def fresh_analyzer(monkeypatch):
    """A process with no Kiwi loaded and no word analysed yet."""
    monkeypatch.setattr(search, "_ANALYZER", search.Analyzer())
    return search


def test_a_cold_cache_a_warm_cache_and_no_cache_give_the_same_index(content, tmp_path, fresh_analyzer):
    cold = index(content, tmp_path / "cache")  # analysed in a child process, which writes the cache
    assert list((tmp_path / "cache").glob("terms-v*.json"))
    assert search._ANALYZER._kiwi is None  # Kiwi never loaded here: the child had it, and took it away
    warm = index(content, tmp_path / "cache")
    assert search._ANALYZER._kiwi is None
    assert cold == warm == index(content, None)  # the last one analyses in this process
    assert search._ANALYZER._kiwi is not None


def test_a_process_that_holds_kiwi_analyses_here_instead_of_forking(content, tmp_path, fresh_analyzer,
                                                                     monkeypatch):
    uncached = index(content, None)  # loads Kiwi, and its worker threads, in this process
    assert search._ANALYZER.loaded

    def fork():  # a child of a threaded Kiwi would hang on its missing threads (a build after a build)
        raise AssertionError("forked while Kiwi's threads run")

    monkeypatch.setattr(search.os, "fork", fork)
    assert index(content, tmp_path / "cache") == uncached
    assert list((tmp_path / "cache").glob("terms-v*.json"))  # the cache is still written


def test_a_damaged_cache_file_is_rebuilt_not_trusted(content, tmp_path, fresh_analyzer):
    expected = index(content, tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").glob("terms-v*.json")
    cache_file.write_text('{"not": ', encoding="utf-8")
    assert index(content, tmp_path / "cache") == expected
    assert cache_file.read_text(encoding="utf-8").startswith("{")
    assert len(search.TermCache(tmp_path / "cache").entries) == len(content.published)


def test_an_edited_note_is_analysed_again_and_a_deleted_one_leaves_the_cache(content, tmp_path, fresh_analyzer):
    import dataclasses

    index(content, tmp_path / "cache")
    first = content.published[0]
    edited = dataclasses.replace(first, body=first.body + "\n\n해파리를 덧붙였습니다.")
    notes = tuple(edited if n is first else n for n in content.notes if n is not content.published[-1])
    changed = dataclasses.replace(content, notes=notes)
    files = index(changed, tmp_path / "cache")
    assert any("\"해파리\"" in text for path, text in files.items() if path.startswith("search/terms/"))
    assert len(search.TermCache(tmp_path / "cache").entries) == len(changed.published)
