"""The references engine: runs in a subprocess, records provenance, catches stale and drifting results."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import shutil
import textwrap
import time
from pathlib import Path

import pytest

from digest.cli import main
from digest.errors import ReferenceRunError, UsageError
from digest.pipeline.check import check
from digest.refs.codehash import code_sha256, project_imports
from digest.refs.engine import compare, drift_table, load_references, report_progress, run_reference, verify

ROOT = Path(__file__).resolve().parents[2]
TODAY = dt.date(2026, 11, 23)

# A tiny reference: its metric is computed from its data file, so a test can check the number.
TOY_SCRIPT = textwrap.dedent('''
    import argparse, json, os, sys, time
    from pathlib import Path

    parser = argparse.ArgumentParser()
    parser.add_argument("--profile"); parser.add_argument("--out"); parser.add_argument("--seed", type=int)
    parser.add_argument("--state"); parser.add_argument("--resume", action="store_true")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.progress:  # what the checkpoint says so far: the step it reached, and a figure of it
        step = int((Path(args.state) / "checkpoint.txt").read_text().split()[1])
        (Path(args.out) / "curve.svg").write_text(f"<svg xmlns='http://www.w3.org/2000/svg' id='step{step}'/>")
        if "scatter:" in Path("ref.yml").read_text(encoding="utf-8"):  # a figure added while it trained
            (Path(args.out) / "scatter.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
        (Path(args.out) / "metrics.json").write_text(json.dumps({"count": step}))
        sys.exit(0)
    mode = Path("mode.txt").read_text().strip() if Path("mode.txt").exists() else "ok"
    numbers = [float(x) for x in Path("data/numbers.txt").read_text().split()]
    print(f"summing {len(numbers)} numbers", file=sys.stderr)
    if mode == "crash":
        print("something broke in step 3", file=sys.stderr)
        sys.exit(3)
    if mode == "hang-edit":  # as a developer would, mid-run: the progress report gets a figure
        manifest = Path("ref.yml").read_text(encoding="utf-8")
        manifest = manifest.replace("  curve: {label: 곡선}", "  curve: {label: 곡선}\\n  scatter: {label: 점 그림}")
        Path("ref.yml").write_text(manifest + "    scatter: {label: 점 그림}\\n", encoding="utf-8")
    checkpoint = Path(args.state or ".") / "checkpoint.txt"
    step = int(checkpoint.read_text().split()[1]) if args.resume and checkpoint.is_file() else 0
    if mode.startswith("hang"):
        if args.state:
            checkpoint.write_text(f"step {step + 1}")
        time.sleep(60)
    if mode.startswith("finish") and args.state:  # a run that ends with its checkpoint kept
        checkpoint.write_text(f"step {step + 3}")
    if mode == "orphan":  # start a worker, then die by SIGKILL as the OOM killer would kill it
        import signal, subprocess
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        Path("worker.pid").write_text(str(worker.pid))
        os.kill(os.getpid(), signal.SIGKILL)
    out = Path(args.out)
    metrics = {"total": sum(numbers), "count": len(numbers), "seconds": 0.01}
    if mode != "incomplete":
        (out / "curve.png").write_bytes(b"\\x89PNG fake" * 40)  # heavier than the SVG: the site shows the SVG
        (out / "curve.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (out / "metrics.json").write_text(json.dumps(metrics))
''')
TOY_MANIFEST = textwrap.dedent('''
    title: 장난감 참조 구현
    entry: toy.py
    seed: 7
    profiles:
      quick: {timeout: 20}
    metrics:
      total: {tolerance: exact}
      count: {tolerance: 0.5}
      seconds: {tolerance: none}
    figures:
      curve: {label: 곡선}
    resumable: true
    packages: [numpy]
''')
PROGRESS = textwrap.dedent('''
    progress:
      metrics:
        count: {label: 지나온 단계, fmt: "d"}
      figures:
        curve: {label: 지금까지의 곡선}
''')
NOTE = textwrap.dedent('''
    title: 장난감 노트
    slug: toy-note
    date: 2016-01-05
    kind: tutorial
    tags: [backprop]
    people: [andrej-karpathy]
    sources:
      - url: https://example.org/toy
        title: Toy
    summary: 장난감 참조 구현의 결과를 인용하는 노트.
    refs: [toy]
    body: |
      합계는 {{ ref("toy", "total", fmt=".1f") }} 이다.

      {{ ref_figure("toy", "curve") }}
''')


@pytest.fixture
def project(tmp_path, monkeypatch):
    content = tmp_path / "content"
    (content / "notes" / "2016").mkdir(parents=True)
    for name in ("tags.yml", "people.yml"):
        shutil.copy(ROOT / "content" / name, content / name)
    toy = content / "refs" / "toy"
    (toy / "data").mkdir(parents=True)
    (toy / "toy.py").write_text(TOY_SCRIPT)
    (toy / "ref.yml").write_text(TOY_MANIFEST, encoding="utf-8")
    (toy / "data" / "numbers.txt").write_text("1.5 2.5 4\n")
    (content / "notes" / "2016" / "toy-note.yml").write_text(NOTE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return content


def toy(content: Path):
    return load_references(content)["toy"]


def test_run_writes_metrics_and_provenance(project):
    results = run_reference(toy(project), "quick", progress=lambda line: None)
    assert results.metrics["total"] == 8.0 and results.metrics["count"] == 3
    saved = json.loads((project / "refs/toy/results/quick/results.json").read_text())
    for key in ("name", "profile", "code_sha256", "python", "numpy", "platform", "seed", "started",
                "finished", "wall_seconds", "metrics"):
        assert key in saved, key
    assert saved["seed"] == 7 and saved["profile"] == "quick"
    assert saved["code_sha256"] == code_sha256(project / "refs/toy")
    assert dt.datetime.fromisoformat(saved["finished"].replace("Z", "+00:00")).tzinfo is not None
    assert (project / "refs/toy/results/quick/curve.svg").is_file()


def test_progress_lines_are_relayed(project):
    lines = []
    run_reference(toy(project), "quick", progress=lines.append)
    assert "[toy] summing 3 numbers" in lines


def test_editing_code_or_data_makes_check_fail_until_rerun(project):
    run_reference(toy(project), "quick", progress=lambda line: None)
    assert check(project, today=TODAY).ok
    data = project / "refs/toy/data/numbers.txt"
    data.write_text("1.5 2.5 4 10\n")  # a data file, not the code: still covered by the hash
    result = check(project, today=TODAY)
    stale = [d for d in result.diagnostics if "stale" in d.message]
    assert not result.ok and stale
    assert "digest refs run toy --profile quick" in stale[0].hint
    run_reference(toy(project), "quick", progress=lambda line: None)
    assert check(project, today=TODAY).ok


def test_hash_follows_project_modules_the_reference_imports(tmp_path):
    script = tmp_path / "uses_project.py"
    script.write_text("from digest.pipeline.check import check\n")
    names = {p.relative_to(ROOT).as_posix() for p in project_imports([script])}
    assert "digest/pipeline/check.py" in names
    assert "digest/content/validate.py" in names  # imported by digest/pipeline/check.py: followed transitively


def test_hash_is_by_content_so_moving_a_module_keeps_it_and_editing_one_changes_it(tmp_path, monkeypatch):
    import digest.refs.codehash as refhash

    root = tmp_path / "project"
    (root / "digest" / "figures").mkdir(parents=True)
    (root / "digest" / "__init__.py").write_text("")
    (root / "digest" / "style.py").write_text("from .palette import INK\n\ndef draw():\n    return INK\n")
    (root / "digest" / "palette.py").write_text("INK = '#222'\n")
    ref = root / "content" / "refs" / "toy"
    ref.mkdir(parents=True)
    (ref / "run.py").write_text("from digest.style import draw  # the figure style\nprint(draw())\n")
    monkeypatch.setattr(refhash, "PROJECT_ROOT", root)
    before = refhash.code_sha256(ref)

    # the move: both modules into a subpackage, and the imports that name them rewritten
    (root / "digest" / "figures" / "__init__.py").write_text("")
    (root / "digest" / "style.py").rename(root / "digest" / "figures" / "style.py")
    (root / "digest" / "palette.py").rename(root / "digest" / "figures" / "palette.py")
    (ref / "run.py").write_text("from digest.figures.style import draw  # the figure style\nprint(draw())\n")
    assert refhash.code_sha256(ref) == before

    (root / "digest" / "figures" / "palette.py").write_text("INK = '#000'\n")  # imported two steps away
    assert refhash.code_sha256(ref) != before


def test_crash_is_reported_with_status_and_last_stderr_lines(project):
    (project / "refs/toy/mode.txt").write_text("crash")
    with pytest.raises(ReferenceRunError) as caught:
        run_reference(toy(project), "quick", progress=lambda line: None)
    message = str(caught.value)
    assert "toy (quick) exited with status 3" in message
    assert "something broke in step 3" in message
    assert not (project / "refs/toy/results/quick").exists()  # nothing half-written


def test_crash_through_cli_prints_no_traceback(project, capsys):
    (project / "refs/toy/mode.txt").write_text("crash")
    code = main(["refs", "run", "toy"])
    err = capsys.readouterr().err
    assert code == 2
    assert "exited with status 3" in err and "Traceback" not in err


def test_hang_is_stopped_at_the_time_limit(project):
    (project / "refs/toy/mode.txt").write_text("hang")
    with pytest.raises(ReferenceRunError, match="timed out after 2 s"):
        run_reference(toy(project), "quick", timeout=2, progress=lambda line: None)


def test_stop_after_pauses_a_long_run_and_keeps_its_state(project, capsys):
    (project / "refs/toy/mode.txt").write_text("hang")
    said: list[str] = []
    assert run_reference(toy(project), "quick", stop_after=1, progress=said.append) is None
    assert any("stopped after 1 s as asked" in line and "continue with --resume" in line for line in said)
    assert (project / "refs/toy/state/quick/checkpoint.txt").read_text() == "step 1"
    assert not (project / "refs/toy/results/quick").exists()  # nothing half-done is published
    assert main(["refs", "status", "toy"]) == 0
    status = capsys.readouterr().out
    assert "no results" in status and "continue: digest refs run toy --profile quick --resume" in status
    # a run that finishes before the pause installs its results as usual
    (project / "refs/toy/mode.txt").write_text("ok")
    assert run_reference(toy(project), "quick", stop_after=30, progress=said.append) is not None
    assert main(["refs", "status", "toy"]) == 0
    assert "continue:" not in capsys.readouterr().out  # the results are newer than the checkpoint


def test_stop_after_needs_checkpoints_and_a_positive_time(project):
    with pytest.raises(UsageError, match="above 0"):
        run_reference(toy(project), "quick", stop_after=0, progress=lambda line: None)
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(TOY_MANIFEST.replace("resumable: true\n", ""), encoding="utf-8")
    with pytest.raises(UsageError, match="keeps no checkpoints.*without --stop-after"):
        run_reference(toy(project), "quick", stop_after=5, progress=lambda line: None)


def test_a_killed_run_leaves_no_worker_behind(project):
    (project / "refs/toy/mode.txt").write_text("orphan")
    with pytest.raises(ReferenceRunError, match="was killed by signal 9"):
        run_reference(toy(project), "quick", progress=lambda line: None)
    worker = int((project / "refs/toy/worker.pid").read_text())
    # SIGKILL is delivered asynchronously: on a busy machine the worker may take a moment to die
    deadline = time.monotonic() + 10
    while _sleeping_worker_runs(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleeping_worker_runs(worker), "the run's worker outlived it"


def _sleeping_worker_runs(pid: int) -> bool:
    """The toy's worker is alive and not a zombie (one waiting for init to reap it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return b"time.sleep(60)" in cmdline and state != "Z"


def test_missing_outputs_fail_loudly(project):
    (project / "refs/toy/mode.txt").write_text("incomplete")
    with pytest.raises(ReferenceRunError, match="did not produce figure 'curve'"):
        run_reference(toy(project), "quick", progress=lambda line: None)


def test_drift_beyond_tolerance_fails_verify_with_a_table(project, capsys):
    run_reference(toy(project), "quick", progress=lambda line: None)
    assert verify(toy(project), progress=lambda line: None) == []
    # The committed value was 8.0; pretend CI got a different stream of numbers.
    (project / "refs/toy/data/numbers.txt").write_text("1.5 2.5 4.25\n")
    drifts = verify(toy(project), progress=lambda line: None)
    assert [d.metric for d in drifts] == ["total"]
    table = drift_table("toy", drifts)
    assert "expected" in table and "8" in table and "8.25" in table
    assert main(["refs", "verify", "toy"]) == 1
    assert "total" in capsys.readouterr().out


def test_band_tolerance_accepts_small_changes(project):
    first = run_reference(toy(project), "quick", progress=lambda line: None)
    shifted = type(first)(**{**first.__dict__, "metrics": {**first.metrics, "count": 3.4, "seconds": 99}})
    assert compare(toy(project), first, shifted) == []


def test_resume_needs_a_resumable_reference(project):
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(TOY_MANIFEST.replace("resumable: true\n", ""), encoding="utf-8")
    with pytest.raises(UsageError, match="keeps no checkpoints"):
        run_reference(toy(project), "quick", resume=True, progress=lambda line: None)


def test_resume_refuses_state_made_by_other_code(project):
    run_reference(toy(project), "quick", progress=lambda line: None)
    (project / "refs/toy/toy.py").write_text(TOY_SCRIPT + "\n# changed\n")
    with pytest.raises(UsageError, match="made by other code.*declare 'checkpoint_format: 1'"):
        run_reference(toy(project), "quick", resume=True, progress=lambda line: None)


def declare_checkpoint_format(project: Path, fmt: int) -> None:
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(TOY_MANIFEST.replace("resumable: true\n", f"resumable: true\ncheckpoint_format: {fmt}\n"),
                        encoding="utf-8")


def test_resume_continues_other_code_with_the_same_checkpoint_format(project):
    declare_checkpoint_format(project, 1)
    first = run_reference(toy(project), "quick", progress=lambda line: None)
    (project / "refs/toy/toy.py").write_text(TOY_SCRIPT + "\n# faster, same checkpoints\n")
    said: list[str] = []
    second = run_reference(toy(project), "quick", resume=True, progress=said.append)
    assert any(f"continuing checkpoints written by code {first.code_sha256[:12]}" in line for line in said)
    assert second.code_sha256 != first.code_sha256 and second.trained_with == [first.code_sha256]
    # what the site says about the run: its own code and the code it continued
    from digest.pipeline.check import load_content
    from digest.site.render import render_site

    content, refs = load_content(project, today=TODAY)
    page = next(p for p in render_site(content, refs).pages if p.path == "notes/2016/toy-note.md")
    assert f"이전 코드 <code>{first.code_sha256[:12]}</code>의 체크포인트에서 이어 학습" in page.text
    # a third resume by the same code adds nothing new; the history stays
    third = run_reference(toy(project), "quick", resume=True, progress=lambda line: None)
    assert third.trained_with == [first.code_sha256]
    # a fresh run starts a new history
    assert run_reference(toy(project), "quick", progress=lambda line: None).trained_with == []


def test_resume_refuses_another_checkpoint_format(project):
    declare_checkpoint_format(project, 1)
    run_reference(toy(project), "quick", progress=lambda line: None)
    declare_checkpoint_format(project, 2)
    with pytest.raises(UsageError, match="has checkpoint format 1, the code now writes format 2"):
        run_reference(toy(project), "quick", resume=True, progress=lambda line: None)


def test_state_from_before_formats_counts_as_format_1(project):
    run_reference(toy(project), "quick", progress=lambda line: None)
    marker = project / "refs/toy/state/quick/code_sha256.txt"
    old_code = "ab" * 32
    marker.write_text(f"{old_code}\n")  # as the engine wrote it before checkpoint formats
    declare_checkpoint_format(project, 1)
    assert run_reference(toy(project), "quick", resume=True, progress=lambda line: None).trained_with == [old_code]


def show_progress(project: Path) -> None:
    """The toy gets a long 'full' profile whose progress the note shows while it is unfinished."""
    manifest = TOY_MANIFEST.replace("  quick: {timeout: 20}\n", "  quick: {timeout: 20}\n  full: {timeout: 20}\n")
    (project / "refs/toy/ref.yml").write_text(manifest + PROGRESS, encoding="utf-8")
    note = project / "notes/2016/toy-note.yml"
    note.write_text(NOTE + '\n  {{ ref_progress("toy", "full") }}\n', encoding="utf-8")
    run_reference(toy(project), "quick", progress=lambda line: None)  # the results the note's ref()s cite


def pause_full_run(project: Path, said=None) -> None:
    (project / "refs/toy/mode.txt").write_text("hang")  # checkpoints "step 1", then trains on
    assert run_reference(toy(project), "full", stop_after=1, progress=(said if said is not None else []).append) is None
    (project / "refs/toy/mode.txt").unlink()  # the code as the quick results were made


def toy_page(project: Path):
    from digest.pipeline.check import load_content
    from digest.site.render import render_site

    content, refs = load_content(project, today=TODAY)
    site = render_site(content, refs)
    return next(p for p in site.pages if p.path == "notes/2016/toy-note.md"), site


def test_a_paused_run_shows_its_progress_until_it_finishes(project, capsys):
    show_progress(project)
    said: list[str] = []
    pause_full_run(project, said)
    assert any("progress of the unfinished full run" in line for line in said)
    report = toy(project).unfinished("full")
    assert report.metrics == {"count": 1} and report.figures == {"curve": ["curve.svg"]}
    assert main(["refs", "status", "toy"]) == 0
    assert "the site shows its progress as of" in capsys.readouterr().out
    assert "학습 진행 중" in toy_page(project)[0].text

    run_reference(toy(project), "full", stop_after=30, progress=lambda line: None)  # finishes
    assert toy(project).unfinished("full") is None
    assert not (project / "refs/toy/state/full/progress").exists()  # superseded by the results
    assert "학습 진행 중" not in toy_page(project)[0].text


def full_diagnostics(project: Path):
    """What `digest check` says about the toy's full results (its quick ones were made by other code)."""
    return [d for d in check(project, today=TODAY).diagnostics if "(full)" in d.message]


def test_a_continued_finished_run_keeps_its_results_as_history_while_it_trains_on(project, capsys):
    """A finished run whose checkpoints other code continues (same format): its results stay published,
    stale by code hash but as a warning naming the continuation, beside the continuation's progress;
    a run started over instead is no continuation, and its old results are stale again."""
    show_progress(project)
    shutil.rmtree(project / "refs/toy/results/quick")  # the note shows the full results
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(
        "resumable: true\n", "resumable: true\ncheckpoint_format: 1\n"), encoding="utf-8")
    mode = project / "refs/toy/mode.txt"
    mode.write_text("finish")  # trains to the end, checkpoint "step 3" kept
    finished = run_reference(toy(project), "full", progress=lambda line: None)
    assert finished.metrics["total"] == 8.0 and full_diagnostics(project) == []

    mode.write_text("hang")  # new code resumes the finished run's checkpoint and trains on
    said: list[str] = []
    assert run_reference(toy(project), "full", resume=True, stop_after=1, progress=said.append) is None
    assert any(f"continuing checkpoints written by code {finished.code_sha256[:12]}" in line for line in said)
    ref = toy(project)
    going_on = code_sha256(project / "refs/toy")
    assert going_on != finished.code_sha256 and ref.results["full"] == finished  # the results stay
    report = ref.unfinished("full")
    assert report.metrics == {"count": 4}  # step 3 of the finished run, one more of the continuation
    assert report.trained_with == [finished.code_sha256, going_on]
    [warning] = full_diagnostics(project)  # no error
    assert warning.severity == "warning" and f"continuation of its checkpoints (code {going_on[:12]}" in warning.message
    assert f"by code {finished.code_sha256[:12]}" in warning.message
    assert "--profile full --resume" in warning.hint
    assert main(["refs", "status", "toy"]) == 0
    out = capsys.readouterr().out
    assert f"continuation of the finished run (results of {finished.finished}" in out
    assert "the site shows its progress as of" in out
    page = toy_page(project)[0].text  # the finished run's numbers, and the continuation's progress
    assert ">8.0</span> 이다" in page and "학습 진행 중" in page and "    - 지나온 단계: **4**" in page

    # started over without --resume: the record begins anew, nothing continues the results
    assert run_reference(toy(project), "full", stop_after=1, progress=lambda line: None) is None
    assert toy(project).unfinished("full").metrics == {"count": 1}
    [error] = full_diagnostics(project)
    assert error.severity == "error" and "are stale" in error.message and "continuation" not in error.message


def test_a_continuation_that_finishes_replaces_the_results_and_its_progress(project):
    show_progress(project)
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(
        "resumable: true\n", "resumable: true\ncheckpoint_format: 1\n"), encoding="utf-8")
    mode = project / "refs/toy/mode.txt"
    mode.write_text("finish")
    first = run_reference(toy(project), "full", progress=lambda line: None)
    mode.write_text("hang")
    run_reference(toy(project), "full", resume=True, stop_after=1, progress=lambda line: None)
    paused = code_sha256(project / "refs/toy")
    mode.write_text("finish, later")  # the continuation reaches its new stopping rule
    final = run_reference(toy(project), "full", resume=True, progress=lambda line: None)
    assert final.trained_with == [first.code_sha256, paused]
    assert toy(project).unfinished("full") is None and not (project / "refs/toy/state/full/progress").exists()
    assert full_diagnostics(project) == []


def test_a_pause_draws_progress_as_the_manifest_says_now_not_as_when_the_run_began(project):
    show_progress(project)
    (project / "refs/toy/mode.txt").write_text("hang-edit")  # adds a progress figure, then trains on
    assert run_reference(toy(project), "full", stop_after=1, progress=lambda line: None) is None
    assert toy(project).unfinished("full").figures == {"curve": ["curve.svg"], "scatter": ["scatter.svg"]}


def test_progress_box_shows_the_checkpoint_numbers_and_figure(project):
    show_progress(project)
    pause_full_run(project)
    (project / "refs/toy/state/full/checkpoint.txt").write_text("step 41")
    assert main(["refs", "progress", "toy"]) == 0  # the full profile by default
    page, site = toy_page(project)
    box = page.text[page.text.index('!!! info "full 프로필 학습 진행 중"'):]
    assert "    - 지나온 단계: **41**" in box
    assert "![지금까지의 곡선](../../refs/toy/full-progress/curve.svg)" in box
    assert '<small class="ref-caption">지금까지의 곡선</small>' in box
    assert "refs/toy/full-progress/curve.svg" in {a.path for a in site.assets}
    # which code trained (the paused run's, with mode.txt) and which drew (today's)
    writer = (project / "refs/toy/state/full/code_sha256.txt").read_text().split()[0]
    drawer = code_sha256(project / "refs/toy")
    assert f"학습한 코드 <code>{writer[:12]}</code> · 그린 코드 <code>{drawer[:12]}</code>" in box


def test_a_clone_of_the_checkpoints_keeps_the_time_the_run_saved_them(project, capsys):
    show_progress(project)
    pause_full_run(project)
    state = project / "refs/toy/state/full"
    saved = toy(project).unfinished("full").finished
    a_day_later = time.time() + 86_400
    os.utime(state / "checkpoint.txt", (a_day_later, a_day_later))  # as a fresh clone's files are
    (state / "engine.log").write_text("the run's relayed output, appended after its last checkpoint")

    assert main(["refs", "progress", "toy"]) == 0
    assert toy(project).unfinished("full").finished == saved
    assert main(["refs", "status", "toy"]) == 0
    assert f"state last written {saved[:10]} {saved[11:16]} UTC" in capsys.readouterr().out

    (state / "checkpoint.txt").write_text("step 2")  # new checkpoints: their own time counts
    assert main(["refs", "progress", "toy"]) == 0
    assert toy(project).unfinished("full").finished > saved


def test_progress_needs_checkpoints_and_a_declaration(project):
    with pytest.raises(UsageError, match="declares no 'progress'"):
        report_progress(toy(project), "quick", progress=lambda line: None)
    show_progress(project)
    with pytest.raises(UsageError, match="no checkpoints .* --stop-after"):
        report_progress(toy(project), "full", progress=lambda line: None)


def test_manifest_progress_must_match_its_metrics_and_checkpoints(project):
    manifest = project / "refs/toy/ref.yml"
    wrong = (TOY_MANIFEST.replace("resumable: true\n", "")
             + PROGRESS.replace("count:", "counts:").replace("curve:", "curves:"))
    manifest.write_text(wrong, encoding="utf-8")
    diagnostics = []
    assert "toy" not in load_references(project, diagnostics)
    messages = [d.message for d in diagnostics]
    assert any("'progress' needs 'resumable: true'" in m for m in messages)
    assert any("progress names metric 'counts', which is not in 'metrics'" in m for m in messages)
    assert any("progress names figure 'curves', which is not in 'figures'" in m for m in messages)


def test_a_broken_manifest_is_reported_at_its_file_and_once_per_citing_note_not_at_every_directive(project):
    # the form ref.yml had before figures carried captions: a list of stems
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(TOY_MANIFEST.replace("figures:\n  curve: {label: 곡선}", "figures: [curve]"),
                        encoding="utf-8")
    errors = [d for d in check(project, today=TODAY).diagnostics if d.severity == "error"]
    assert [(d.path, d.line) for d in errors] == [("content/notes/2016/toy-note.yml", 12),  # refs: [toy]
                                                  ("content/refs/toy/ref.yml", 11)], errors
    assert "refs names 'toy', whose ref.yml has errors" in errors[0].message
    assert "'figures' must be a mapping of name: value, not a list" in errors[1].message
    assert "e.g. figures: {learning_curve: {label:" in errors[1].hint
    # checked alone, as the pre-commit hook checks it, the note does not pass
    alone = check(project, ["content/notes/2016/toy-note.yml"], today=TODAY)
    assert [d.message for d in alone.diagnostics if d.severity == "error"] == [errors[0].message]


def test_a_fmt_problem_shows_even_while_the_reference_is_broken(project):
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(TOY_MANIFEST.replace("figures:\n  curve: {label: 곡선}", "figures: [curve]"),
                        encoding="utf-8")
    note = project / "notes/2016/toy-note.yml"
    note.write_text(NOTE + '\n  {{ ref_figure("toy", "curve", fmt=".2f") }}\n', encoding="utf-8")
    messages = [d.message for d in check(project, today=TODAY).diagnostics]
    assert any("unusable fmt '.2f'" in m for m in messages), messages


@pytest.mark.parametrize("directive, problem", [
    ('ref_progress("toy", "fulll")', "'toy' has no profile 'fulll'"),
    ('ref_progress("toy", "full", fmt="d")', "ref_progress takes no fmt"),
])
def test_progress_directive_errors_name_the_problem(project, directive, problem):
    show_progress(project)
    note = project / "notes/2016/toy-note.yml"
    note.write_text(NOTE + f"\n  {{{{ {directive} }}}}\n", encoding="utf-8")
    assert any(problem in d.message for d in check(project, today=TODAY).diagnostics)


def test_directive_errors_point_at_the_body(project):
    note = project / "notes/2016/toy-note.yml"
    note.write_text(NOTE.replace('"total", fmt=".1f"', '"totl", fmt=".1f"'), encoding="utf-8")
    run_reference(toy(project), "quick", progress=lambda line: None)
    result = check(project, today=TODAY)
    [problem] = [d for d in result.diagnostics if "totl" in d.message]
    assert (problem.line, problem.col) == (14, 7)  # "  합계는 " precedes it
    assert "did you mean 'total'" in problem.hint


def test_site_shows_values_figures_and_provenance(project):
    from digest.pipeline.check import load_content
    from digest.site.render import render_site

    run_reference(toy(project), "quick", progress=lambda line: None)
    content, refs = load_content(project, today=TODAY)
    site = render_site(content, refs)
    page = next(p for p in site.pages if p.path == "notes/2016/toy-note.md")
    assert ">8.0</span>" in page.text
    # the figure's caption from ref.yml is its alt text and heads its provenance line
    assert "![곡선](../../refs/toy/quick/curve.svg)" in page.text
    assert '<small class="ref-caption">곡선 · 장난감 참조 구현 · quick 프로필' in page.text
    assert "실행 결과의 출처" in page.text and refs["toy"].results["quick"].code_sha256[:12] in page.text
    assert '<a href="../../../refs/#toy"><code>toy</code></a>' in page.text  # its entry on the references page
    assert {a.path for a in site.assets} == {"refs/toy/quick/curve.png", "refs/toy/quick/curve.svg"}


def test_a_caption_shows_as_written_whatever_markdown_it_holds(project):
    # ref.yml may come from a stranger's pull request: a ']' would end the image's alt text
    # (the page showed the raw image syntax), '*', '`' and '$' would become emphasis, code, math
    import markdown

    label = r"곡선] *굵게* `c` $x$ [t](https://e.example) \끝"
    manifest = project / "refs/toy/ref.yml"
    manifest.write_text(TOY_MANIFEST.replace("curve: {label: 곡선}", f"curve: {{label: '{label}'}}"),
                        encoding="utf-8")
    run_reference(toy(project), "quick", progress=lambda line: None)
    page, _ = toy_page(project)
    html_page = markdown.markdown(page.text, extensions=["attr_list", "pymdownx.arithmatex"],
                                  extension_configs={"pymdownx.arithmatex": {"generic": True}})
    [alt] = re.findall(r'<img alt="([^"]*)"', html_page)
    assert html.unescape(alt) == label
    [caption] = re.findall(r'<small class="ref-caption">(.*?) · 장난감', html_page)
    assert html.unescape(caption) == label


def test_site_refuses_to_publish_a_note_whose_results_are_missing(project):
    from digest.pipeline.check import load_content
    from digest.site.render import render_site

    content, refs = load_content(project, today=TODAY)
    with pytest.raises(ReferenceRunError, match="has no results"):
        render_site(content, refs)


def test_build_reruns_only_stale_references(project):
    from digest.pipeline.build import refresh_references

    refresh_references(project)
    results = project / "refs/toy/results/quick/results.json"
    first = results.read_text()
    refresh_references(project)  # cached by code hash
    assert results.read_text() == first
    (project / "refs/toy/data/numbers.txt").write_text("2\n")
    refresh_references(project)
    assert json.loads(results.read_text())["metrics"]["total"] == 2.0


def test_site_picks_the_lighter_still_image_and_keeps_animations(tmp_path):
    from digest.site.render import _figure_file

    (tmp_path / "weights.png").write_bytes(b"x" * 100)
    (tmp_path / "weights.svg").write_bytes(b"x" * 1000)  # an image-like figure: PNG is lighter
    (tmp_path / "curve.png").write_bytes(b"x" * 1000)
    (tmp_path / "curve.svg").write_bytes(b"x" * 100)  # a line plot: SVG is lighter
    assert _figure_file(tmp_path, ["weights.png", "weights.svg"]) == "weights.png"
    assert _figure_file(tmp_path, ["curve.png", "curve.svg"]) == "curve.svg"
    assert _figure_file(tmp_path, ["play.gif"]) == "play.gif"
