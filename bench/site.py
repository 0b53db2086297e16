"""How fast the site builds at 1,000 and 10,000 synthetic Korean notes, against two Material baselines.

For each size, in one run:
  (a) this project: `mkdocs build` with every page, feeds and the search index, first with an
      empty search cache (Kiwi analyses every note) and again with the cache warm;
  (b) Material's blog plugin building the same notes as posts, with its archive, category and
      tag pages (and Material's search), stopped after --cap seconds and then reported as "over";
  (c) the same notes as plain MkDocs pages (kept out of the nav) with Material's default search.
Builds use every core (DIGEST_BUILD_WORKERS, default one worker per core; the baselines have no
such option). Printed: wall time, peak RSS of the main process and of the largest worker, HTML
pages, site size, mean HTML page size, and what the first search downloads (gzip). At the smallest
size, a one-note edit under `mkdocs serve` is timed.

Goals (issue 4): 10,000 notes in under 120 s and 1 GiB; ≥ 10x faster than (b); at 1,000 notes no
slower than (c); 10k/1k ≤ 11x; mean page size at 10k within 10 % of 1k; first search < 1 MB gzip
at 10k; a one-note edit rebuilt under `mkdocs serve` in < 2 s at 1,000.

Run: .venv/bin/python bench/site.py [--sizes 1000 10000] [--cap 300]   (or `make bench-site`)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic import write_site_content  # noqa: E402

PYTHON = sys.executable
# Runs a build in a child process and reports the child's own peak memory.
CHILD = """
import json, resource, sys
from mkdocs.commands.build import build
from mkdocs.config import load_config
config = load_config(sys.argv[1], site_dir=sys.argv[2])
build(config)
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print("WORKER_PEAK_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def build(config: Path, site: Path, env: dict, cap: float) -> dict:
    """One `mkdocs build`: wall seconds and peak RSS, or None for time when it ran past ``cap``."""
    if site.exists():
        shutil.rmtree(site)
    start = time.perf_counter()
    process = subprocess.Popen([PYTHON, "-c", CHILD, str(config), str(site)], cwd=config.parent, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"seconds": None, "cap": cap}
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"build failed ({config}):\n{err[-3000:]}")
    peak = int(re.search(r"^PEAK_KIB (\d+)", out, re.M).group(1))
    worker = int(re.search(r"^WORKER_PEAK_KIB (\d+)", out, re.M).group(1))
    return {"seconds": seconds, "peak_mib": peak / 1024, "worker_peak_mib": worker / 1024}


def site_figures(site: Path, search_files: list[Path]) -> dict:
    pages = list(site.rglob("*.html"))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    sections: dict[str, list[int]] = {}
    for page in pages:
        parts = page.relative_to(site).parts
        sections.setdefault(parts[0] if len(parts) > 1 else "(top)", []).append(page.stat().st_size)
    return {"pages": len(pages), "site_mib": size / 2**20,
            "mean_page_kib": sum(p.stat().st_size for p in pages) / max(1, len(pages)) / 1024,
            "section_kib": {k: sum(v) / len(v) / 1024 for k, v in sorted(sections.items())},
            "search_kib": sum(len(gzip.compress(p.read_bytes(), 6)) for p in search_files) / 1024}


def first_search_kib(site: Path) -> float:
    """What our search downloads for its heaviest one-word query, gzip: the manifest, the shard of
    the term with the longest posting list, the title chunks of its first 10 results and those 10
    note pages (for their snippets)."""
    def gz(path: Path) -> int:
        return len(gzip.compress(path.read_bytes(), 6))

    search = site / "search"
    manifest = json.loads((search / "manifest.json").read_text())
    heaviest, shard, postings = None, None, []
    for n in manifest["present"]:
        terms = json.loads((search / "terms" / f"{n}.json").read_text())
        for term, values in terms.items():
            if len(values) > len(postings):
                heaviest, shard, postings = term, n, values
    docs, doc = [], 0
    for i in range(0, len(postings), 2):
        doc += postings[i]
        docs.append(doc)
    top = sorted(docs)[:10]
    chunks = {d // manifest["docs_per_chunk"] for d in top}
    notes = sorted((site / "notes").rglob("index.html"))[:10]
    total = gz(search / "manifest.json") + gz(search / "terms" / f"{shard}.json")
    total += sum(gz(search / "docs" / f"{c}.json") for c in chunks) + sum(gz(p) for p in notes)
    print(f"    first search: '{heaviest}' ({len(docs)} notes) in shard {shard}")
    return total / 1024


# --- baselines: the same notes as Markdown files --------------------------------------------------

def _notes(content: Path):
    import yaml

    for path in sorted((content / "notes").rglob("*.yml")):
        yield yaml.safe_load(path.read_text(encoding="utf-8"))


def write_blog(content: Path, project: Path) -> Path:
    """(b) Material's blog plugin: every note a post, with its kind as category and its tags."""
    posts = project / "docs" / "blog" / "posts"
    posts.mkdir(parents=True)
    (project / "docs" / "blog" / "index.md").write_text("# 블로그\n", encoding="utf-8")
    (project / "docs" / "tags.md").write_text("# 태그\n\n<!-- material/tags -->\n", encoding="utf-8")
    for note in _notes(content):
        front = f"date: {note['date']}\ncategories: [{note['kind']}]\ntags: [{', '.join(note['tags'])}]"
        (posts / f"{note['slug']}.md").write_text(
            f"---\n{front}\n---\n\n# {note['title']}\n\n{note['summary']}\n\n"
            f"<!-- more -->\n\n{note['body']}\n", encoding="utf-8")
    config = project / "mkdocs.yml"
    config.write_text(_baseline_config("nav: [blog/index.md, tags.md]\nplugins: [blog, tags, search]\n"),
                      encoding="utf-8")
    return config


def write_plain(content: Path, project: Path) -> Path:
    """(c) plain MkDocs pages, out of the nav, with Material's default search."""
    docs = project / "docs"
    (docs / "notes").mkdir(parents=True)
    (docs / "index.md").write_text("# 노트\n", encoding="utf-8")
    for note in _notes(content):
        (docs / "notes" / f"{note['slug']}.md").write_text(f"# {note['title']}\n\n{note['body']}\n", encoding="utf-8")
    config = project / "mkdocs.yml"
    config.write_text(_baseline_config("nav: [index.md]\nplugins: [search]\n"
                                       "validation: {nav: {omitted_files: ignore}}\n"), encoding="utf-8")
    return config


def _baseline_config(rest: str) -> str:
    return ("site_name: 벤치마크\nsite_url: https://example.github.io/ml-notes/\n"
            "theme: {name: material, language: ko, font: false}\n"
            "markdown_extensions: [toc, tables, attr_list, pymdownx.arithmatex, pymdownx.highlight, "
            "pymdownx.superfences]\n" + rest)


# --- a one-note edit under `mkdocs serve` ---------------------------------------------------------

def serve_edit_seconds(content: Path, env: dict, timeout: float = 300, settle: float = 10) -> list[float]:
    """Start `mkdocs serve`, wait ``settle`` seconds (a person opening the page; Kiwi loads meanwhile),
    then change one note's text twice, timing each until the server returns the new page."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([PYTHON, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{port}"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    note = sorted((content / "notes").rglob("*.yml"))[0]
    year, slug = note.parent.name, note.stem
    url = f"http://127.0.0.1:{port}/ml-notes/notes/{year}/{slug}/"
    seconds = []
    try:
        _wait_for(url, lambda text: "<article" in text, timeout)
        time.sleep(settle)
        for edit in range(2):
            marker = f"편집표시{edit}{int(time.time())}"
            text = note.read_text(encoding="utf-8")
            start = time.perf_counter()
            note.write_text(text.replace("body: |\n", f"body: |\n  {marker}\n\n", 1), encoding="utf-8")
            _wait_for(url, lambda page, marker=marker: marker in page, timeout)
            seconds.append(time.perf_counter() - start)
            time.sleep(1)
        return seconds
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _wait_for(url: str, ready, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if ready(response.read().decode("utf-8", "replace")):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {url}")


# --- the run --------------------------------------------------------------------------------------

def fmt(result: dict) -> str:
    if result["seconds"] is None:
        return f"over {result['cap']:.0f} s (stopped)"
    workers = f" (largest worker {result['worker_peak_mib']:.0f} MiB)" if result.get("worker_peak_mib") else ""
    return f"{result['seconds']:6.1f} s, peak {result['peak_mib']:5.0f} MiB{workers}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--cap", type=float, default=300, help="seconds before a baseline build is stopped")
    parser.add_argument("--skip-baselines", action="store_true", help="time this project's build only")
    args = parser.parse_args()
    base_env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        for size in args.sizes:
            print(f"{size} notes")
            work = Path(tmp) / str(size)
            content = write_site_content(work, size)
            env = dict(base_env, DIGEST_CONTENT=str(content))
            row = results[size] = {}
            site = work / "site"
            row["cold"] = build(ROOT / "mkdocs.yml", site, env, cap=3600)
            row["warm"] = build(ROOT / "mkdocs.yml", site, env, cap=3600)
            row["site"] = site_figures(site, list((site / "search").rglob("*.json")))
            row["first_search_kib"] = first_search_kib(site)
            print(f"  (a) this project, cold search cache: {fmt(row['cold'])}")
            print(f"  (a) this project, warm search cache: {fmt(row['warm'])}")
            print(f"      {row['site']['pages']} pages, {row['site']['site_mib']:.0f} MiB, mean page "
                  f"{row['site']['mean_page_kib']:.1f} KiB, search files {row['site']['search_kib']:.0f} KiB gzip "
                  f"(first search downloads {row['first_search_kib']:.0f} KiB gzip)")
            shutil.rmtree(site)
            if not args.skip_baselines:
                for key, label, writer in (("blog", "(b) Material blog plugin", write_blog),
                                           ("plain", "(c) plain MkDocs pages  ", write_plain)):
                    project = work / key
                    config = writer(content, project)
                    row[key] = build(config, project / "site", base_env, cap=args.cap)
                    extra = ""
                    if row[key]["seconds"] is not None:
                        figures = site_figures(project / "site", [project / "site/search/search_index.json"])
                        row[key + "_site"] = figures
                        extra = (f"; {figures['pages']} pages, {figures['site_mib']:.0f} MiB, search "
                                 f"{figures['search_kib']:.0f} KiB gzip")
                    print(f"  {label}: {fmt(row[key])}{extra}")
                    shutil.rmtree(project)
            if size == min(args.sizes):
                row["serve_edit"] = serve_edit_seconds(content, env)
                print("  one-note edit under `mkdocs serve`: page updated after "
                      + ", then ".join(f"{s:.2f} s" for s in row["serve_edit"]))
    summarize(results)


def summarize(results: dict[int, dict]) -> None:
    small, large = min(results), max(results)
    s, big = results[small], results[large]
    print("\ngoals")
    warm = big["warm"]["seconds"]
    print(f"  {large} notes: {warm:.1f} s warm, {big['cold']['seconds']:.1f} s cold (goal < 120 s); "
          f"peak {max(big['warm']['peak_mib'], big['cold']['peak_mib']):.0f} MiB in the main process, "
          f"{max(big['warm']['worker_peak_mib'], big['cold']['worker_peak_mib']):.0f} MiB in the largest worker "
          "(goal < 1024 each)")
    if small != large:
        print(f"  linear: {large}/{small} = {warm / s['warm']['seconds']:.1f}x warm, "
              f"{big['cold']['seconds'] / s['cold']['seconds']:.1f}x cold (goal ≤ {large / small * 1.1:.0f}x)")
        ratio = big["site"]["mean_page_kib"] / s["site"]["mean_page_kib"]
        print(f"  mean page size {large} vs {small}: {ratio:.2f}x (goal within 10 %); by section:")
        for section, kib in big["site"]["section_kib"].items():  # a digest issue lists its week's notes
            before = s["site"]["section_kib"].get(section)
            change = f" ({kib / before:.2f}x)" if before else ""
            print(f"    {section:10} {before or 0:6.1f} -> {kib:6.1f} KiB{change}")
    print(f"  first search at {large}: {big['first_search_kib']:.0f} KiB gzip (goal < 1024)")
    if "blog" in big:
        blog = big["blog"]["seconds"]
        cap = big["blog"].get("cap", 0)
        faster = f"{blog / warm:.1f}x faster" if blog else f"over {cap:.0f} s, so > {cap / warm:.1f}x faster"
        print(f"  vs (b) blog at {large}: {faster}")
    if "plain" in s and s["plain"]["seconds"]:
        print(f"  vs (c) plain at {small}: ours {s['warm']['seconds']:.1f} s warm / {s['cold']['seconds']:.1f} s cold, "
              f"plain {s['plain']['seconds']:.1f} s")
    if "serve_edit" in s:
        print(f"  one-note edit under serve at {small}: {max(s['serve_edit']):.2f} s, the slower of two (goal < 2 s)")


if __name__ == "__main__":
    main()
