"""The two ways the adapter avoids MkDocs's one-page-at-a-time loop give the site a clean build gives.

- A build of many notes hands shares of the pages to forked workers (DIGEST_BUILD_WORKERS).
- Under `mkdocs serve`, a rebuild renders only the pages whose text changed and puts the others back.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sitekit import ROOT, mkdocs_build

sys.path.insert(0, str(ROOT))
from bench.synthetic import write_site_content  # noqa: E402

NOTES = 260  # enough pages outside the navigation for two workers (the adapter's MIN_SHARE each)


BROKEN_ANCHORS = 12  # links to another note's anchor that does not exist


@pytest.fixture(scope="module")
def many_notes(tmp_path_factory) -> Path:
    """Synthetic notes that link to each other, as contributors' notes do: the first one (which the serve
    tests edit) to another note and to a stylesheet, a dozen to anchors that other notes lack."""
    content = write_site_content(tmp_path_factory.mktemp("many"), NOTES)
    notes = sorted((content / "notes").rglob("*.yml"))
    links = {notes[0]: [f"[마지막 노트]({docs_link(notes[0], notes[-1])})",
                        "[스타일](../../assets/stylesheets/digest.css)"]}
    for k in range(BROKEN_ANCHORS):
        source, target = notes[(37 * k + 5) % NOTES], notes[(53 * k + 11) % NOTES]
        links.setdefault(source, []).append(f"[다른 노트]({docs_link(source, target)}#no-such-part-{k})")
    for source, lines in links.items():
        text = source.read_text(encoding="utf-8")
        source.write_text(text.replace("body: |\n", "body: |\n  " + " ".join(lines) + "\n\n", 1), encoding="utf-8")
    return content


def docs_link(source: Path, target: Path) -> str:
    """A note's Markdown link to another note, as a contributor writes it (pages are notes/<year>/<slug>.md)."""
    return os.path.relpath(f"notes/{target.parent.name}/{target.stem}.md", f"notes/{source.parent.name}")


def anchor_problems(log: str) -> list[str]:
    return sorted(line.split(" - ", 1)[1] for line in log.splitlines() if "does not contain an anchor" in line)


def differences(left: Path, right: Path, ignore=("sitemap.xml.gz",)) -> list[str]:
    """Files that differ or exist on one side only, as paths relative to the two folders."""
    found = []

    def walk(compare: filecmp.dircmp, prefix: str) -> None:
        found.extend(prefix + name for name in compare.left_only + compare.right_only + compare.diff_files
                     if name not in ignore and not name.startswith(".digest-previous-"))  # serve's stash
        for name, sub in compare.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right, ignore=[]), "")
    return found


def test_a_build_shared_among_workers_writes_the_same_site_as_one_process(many_notes, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    env = os.environ.copy()
    try:
        os.environ["DIGEST_BUILD_WORKERS"] = "1"
        single = mkdocs_build(one, content=many_notes)
        os.environ["DIGEST_BUILD_WORKERS"] = "2"
        shared = mkdocs_build(two, content=many_notes)
    finally:
        os.environ.clear()
        os.environ.update(env)
    assert "more process(es)" not in single.stderr
    assert "go to 1 more process(es)" in shared.stderr
    # links between pages that different processes rendered resolve, and their anchors are checked
    assert len(anchor_problems(single.stderr)) == BROKEN_ANCHORS
    assert anchor_problems(shared.stderr) == anchor_problems(single.stderr)
    pages = list(two.rglob("index.html"))
    assert len(pages) > 2 * NOTES * 0.9
    assert differences(one, two) == []
    assert (two / "sitemap.xml").read_text(encoding="utf-8").count("<loc>") == len(pages)


def test_a_worker_that_dies_fails_the_build_with_a_clear_message(many_notes, tmp_path):
    """A worker killed mid-build (out of memory, a dying machine) stops the build; nothing claims success."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DIGEST_CONTENT=str(many_notes), DIGEST_BUILD_WORKERS="2")
    build = subprocess.Popen([sys.executable, "-m", "mkdocs", "build", "-d", str(tmp_path / "site")], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{build.pid}/task/{build.pid}/children")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and build.poll() is None and not children.read_text().split():
        time.sleep(0.02)
    worker = int(children.read_text().split()[0])
    os.kill(worker, signal.SIGKILL)
    out, err = build.communicate(timeout=600)
    assert build.returncode != 0
    assert f"a page worker (pid {worker}) died without a report" in err
    assert "DIGEST_BUILD_WORKERS=1" in err
    assert "Traceback" not in err


SERVE_REBUILDS = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from pathlib import Path
from mkdocs.commands.build import build
from mkdocs.config import load_config

site, note, command = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def one_build():
    config = load_config("mkdocs.yml", site_dir=site)
    config.plugins.on_startup(command="serve" if command.startswith("serve") else command, dirty=False)
    build(config, serve_url="http://127.0.0.1:8000/ml-notes/")

one_build()
if command == "serve":  # what `mkdocs serve` does when a note is saved: rebuild with the same process
    text = note.read_text(encoding="utf-8")
    note.write_text(text.replace("body: |\\n", "body: |\\n  고친 문장이 여기 있습니다.\\n\\n", 1), encoding="utf-8")
    one_build()
if command == "serve-broken":  # a save with an error, then the fix
    text = note.read_text(encoding="utf-8")
    note.write_text(text.replace("title:", "title: [unclosed", 1), encoding="utf-8")
    try:
        one_build()
    except Exception as exc:
        print("REBUILD FAILED:", type(exc).__name__, file=sys.stderr)
    shown = [p for top in Path(site).iterdir() if not top.name.startswith(".")  # not the stash being removed
             for p in (top.rglob("index.html") if top.is_dir() else [top] if top.name == "index.html" else [])]
    print("PAGES AFTER FAILURE:", len(shown), file=sys.stderr)
    note.write_text(text, encoding="utf-8")
    one_build()
"""


def copied_notes(many_notes: Path, tmp_path: Path) -> Path:
    """A copy of the notes (the tests edit one), with Kiwi's analysis of them if the tests above made it."""
    content = tmp_path / "content"
    shutil.copytree(many_notes, content)
    if (many_notes.parent / ".cache").is_dir():
        shutil.copytree(many_notes.parent / ".cache", tmp_path / ".cache")
    return content


def rebuilds(content: Path, site: Path, note: Path, command: str) -> str:
    """SERVE_REBUILDS in a fresh process; its log."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DIGEST_CONTENT=str(content))
    result = subprocess.run([sys.executable, "-c", SERVE_REBUILDS, str(site), str(note), command], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_a_serve_rebuild_renders_only_the_edited_pages_and_matches_a_clean_build(many_notes, tmp_path):
    content = copied_notes(many_notes, tmp_path)
    note = sorted((content / "notes").rglob("*.yml"))[0]

    def run(site: Path, command: str) -> str:
        return rebuilds(content, site, note, command)

    log = run(tmp_path / "served", "serve")
    reused = [line for line in log.splitlines() if "unchanged since the last rebuild" in line]
    assert len(reused) == 1
    unchanged, outside = (int(n) for n in reused[0].split("digest: ")[1].split(" note")[0].split(" of "))
    assert outside - 3 <= unchanged < outside  # the note, and the neighbours or archives that show its text
    run(tmp_path / "clean", "build")  # the edited content, built from nothing
    assert "고친 문장이" in (tmp_path / "served" / "notes" / note.parent.name / note.stem / "index.html").read_text()
    assert differences(tmp_path / "clean", tmp_path / "served") == []


def test_a_worker_count_that_is_not_a_number_is_refused_with_how_to_fix_it(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DIGEST_BUILD_WORKERS="two")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-d", str(tmp_path / "site")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "DIGEST_BUILD_WORKERS='two' is not a number of processes; write e.g. 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_serve_rebuild_that_fails_keeps_the_last_good_site_and_the_fix_rebuilds_it(many_notes, tmp_path):
    content = copied_notes(many_notes, tmp_path)
    note = sorted((content / "notes").rglob("*.yml"))[0]
    served = rebuilds(content, tmp_path / "served", note, "serve-broken")
    assert "REBUILD FAILED" in served
    assert "content has errors" in served
    rebuilds(content, tmp_path / "clean", note, "build")
    pages = len(list((tmp_path / "clean").rglob("index.html")))
    assert f"PAGES AFTER FAILURE: {pages}" in served  # the failed rebuild left every page in place
    assert differences(tmp_path / "clean", tmp_path / "served") == []
