"""Stage 3, run references: execute reference implementations and keep their results true.

A reference is ``content/refs/<name>/`` (see ``content/refs/README.md``). Running
it writes ``results/<profile>/results.json`` and its figures, stamped with
``code_sha256`` (``digest.refs.codehash``) and the versions of its key packages.

* ``digest check`` reports committed results whose code hash no longer matches
  (an error naming the refresh command) and package versions whose major or
  minor version changed since the run (a warning).
* ``digest refs verify`` reruns the quick profile and compares each metric with
  the committed quick results within the manifest's tolerance.
* ``digest build`` reruns only references whose results are missing or stale.

A resumable run stopped before its end (``--stop-after``) publishes nothing under
``results/``; if its manifest declares ``progress``, the script's ``--progress`` mode
draws what its last checkpoint shows into ``state/<profile>/progress/`` (same
``results.json`` form), which a note cites with ``ref_progress`` until the run finishes.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from digest.content.load import REF_MANIFEST, REFS_DIR, display_path, read_one
from digest.content.model import PROFILES, RefManifest
from digest.content.validate import _Reader
from digest.diagnostics import Diagnostic
from digest.errors import ReferenceRunError, UsageError
from digest.files import write_atomic
from digest.refs.codehash import PROJECT_ROOT, code_sha256

RESULTS_FILE = "results.json"
PROGRESS_DIR = "progress"  # inside state/<profile>/: the last progress report of an unfinished run
CHECKPOINT_TIME_FILE = "checkpoint_time.json"  # inside state/<profile>/: when the checkpoints were saved
PROGRESS_TIMEOUT = 600  # seconds for a progress report: it reads a checkpoint and draws, no training
FIGURE_SUFFIXES = (".png", ".svg", ".gif", ".webp")
STDERR_TAIL = 15
# Pin BLAS threads: on 2 cores an unpinned OpenBLAS oversubscribes and runs slower.
CHILD_ENV = {
    "MPLBACKEND": "Agg",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class Results:
    """One run's ``results.json``."""

    name: str
    profile: str
    code_sha256: str
    python: str
    numpy: str
    packages: dict[str, str]
    platform: str
    seed: int
    started: str
    finished: str
    wall_seconds: float
    metrics: dict[str, float]
    figures: dict[str, list[str]] = field(default_factory=dict)
    # earlier code whose checkpoints this run continued (same checkpoint format), oldest first
    trained_with: list[str] = field(default_factory=list)

    @property
    def finished_date(self) -> str:
        return self.finished[:10]


@dataclass(frozen=True)
class Reference:
    manifest: RefManifest
    dir: Path
    results: dict[str, Results]  # committed results by profile
    progress: dict[str, Results] = field(default_factory=dict)  # progress reports of unfinished runs

    @property
    def name(self) -> str:
        return self.manifest.name

    def results_dir(self, profile: str) -> Path:
        return self.dir / "results" / profile

    def state_dir(self, profile: str) -> Path:
        return self.dir / "state" / profile

    def progress_dir(self, profile: str) -> Path:
        return self.state_dir(profile) / PROGRESS_DIR

    def unfinished(self, profile: str) -> Results | None:
        """The progress report of the profile's run while it has no results of its own, or while a
        continuation of its finished run trains on (a report newer than the results: a finished
        run deletes its report, so only a run resumed after the results draws a newer one)."""
        report, results = self.progress.get(profile), self.results.get(profile)
        if report is None or results is None:
            return report
        return report if _parse_stamp(report.finished) >= _parse_stamp(results.finished) else None

    def shown(self) -> Results | None:
        """What the site shows: the full result when there is one, else the quick one."""
        return self.results.get("full") or self.results.get("quick")


def read_results(path: Path) -> Results:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Results(**data)


def manifest_paths(content_root: Path) -> list[Path]:
    """Every reference's ref.yml (``refs/<name>/ref.yml``), readable or not."""
    return sorted((Path(content_root) / REFS_DIR).glob(f"*/{REF_MANIFEST}"))


def load_references(content_root: Path, diagnostics: list[Diagnostic] | None = None) -> dict[str, Reference]:
    """Every reference with a readable manifest; problems go to ``diagnostics``."""
    diagnostics = [] if diagnostics is None else diagnostics
    refs: dict[str, Reference] = {}
    for manifest_path in manifest_paths(content_root):
        ref_dir = manifest_path.parent
        source = read_one(manifest_path, display_path(manifest_path, content_root), diagnostics)
        if source.node is None:
            continue
        reader = _Reader(source, diagnostics)
        manifest = reader.record(RefManifest, source.node, extra={"name": ref_dir.name, "path": source.path})
        if manifest is None:
            continue
        problems = _manifest_problems(manifest, ref_dir)
        diagnostics.extend(Diagnostic(source.path, 1, 1, "error", message, hint) for message, hint in problems)
        if problems:
            continue
        results = _read_reports(ref_dir / "results", ref_dir.name, content_root, diagnostics)
        progress = _read_reports(ref_dir / "state", ref_dir.name, content_root, diagnostics, PROGRESS_DIR,
                                 "progress")
        refs[ref_dir.name] = Reference(manifest, ref_dir, results, progress)
    return refs


def _manifest_problems(manifest: RefManifest, ref_dir: Path) -> list[tuple[str, str]]:
    """(message, hint) for what the fields of ref.yml say about each other and the folder."""
    problems = []
    if not (ref_dir / manifest.entry).is_file():
        problems.append((f"entry '{manifest.entry}' does not exist",
                         f"create {ref_dir.name}/{manifest.entry} or fix 'entry'"))
    spec = manifest.progress
    if spec is not None:
        if not manifest.resumable:
            problems.append(("'progress' needs 'resumable: true': only a run that keeps checkpoints has progress",
                             "add 'resumable: true' or remove 'progress'"))
        for kind, wanted, declared in (("metric", spec.metrics, manifest.metrics),
                                       ("figure", spec.figures, manifest.figures)):
            for name in wanted:
                if name not in declared:
                    problems.append((f"progress names {kind} '{name}', which is not in '{kind}s'",
                                     f"add it to '{kind}s' or remove it from 'progress'"))
    return problems


def _read_reports(folder: Path, name: str, content_root: Path, diagnostics: list[Diagnostic],
                  inner: str = "", command: str = "run") -> dict[str, Results]:
    """``folder/<profile>/[inner/]results.json`` of each profile that has one."""
    reports = {}
    for profile in PROFILES:
        path = folder / profile / inner / RESULTS_FILE
        if path.is_file():
            try:
                reports[profile] = read_results(path)
            except (ValueError, TypeError) as exc:
                diagnostics.append(Diagnostic(display_path(path, content_root), 1, 1, "error",
                                              f"unreadable results ({exc})",
                                              f"rerun: digest refs {command} {name} --profile {profile}"))
    return reports


def package_versions(names) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _parse_stamp(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def continuation(ref: Reference, profile: str) -> StateWriter | None:
    """The run that carries on the checkpoints the profile's finished results came from, if one does:
    its first writer in ``state/<profile>/code_sha256.txt``.  The state's writers must begin with the
    results' history (their ``trained_with``, then the code that finished them) and go on with code
    that began at or after the results were written, with the same checkpoint format, and the
    checkpoints must be that new (a run started over without ``--resume`` rewrites the record, so it
    is no continuation).  Its results stay published as what the run showed when it finished (their
    own code and versions), with a warning instead of the stale error, until the continuation
    writes new ones."""
    results = ref.results.get(profile)
    if results is None or not ref.manifest.resumable or ref.manifest.checkpoint_format is None:
        return None
    state = ref.state_dir(profile)
    writers = _state_writers(_state_hash_file(state))
    history = len(results.trained_with)
    if len(writers) <= history + 1 or [w.code for w in writers[:history]] != results.trained_with:
        return None
    finished = _parse_stamp(results.finished)
    finisher, after = writers[history], writers[history + 1:]
    newest = _checkpoint_time(state)
    if (newest is None or newest < finished or not all(w.since and _parse_stamp(w.since) >= finished for w in after)
            or _parse_stamp(finisher.since or results.started) > finished
            or any(w.effective_format != finisher.effective_format for w in after)
            or after[-1].effective_format != ref.manifest.checkpoint_format):
        return None
    return after[0]


def check_references(refs: dict[str, Reference], content_root: Path) -> list[Diagnostic]:
    """Stale results are errors (a warning while a continuation of their run trains on, see
    ``continuation``); a changed major/minor package version is a warning."""
    diagnostics = []
    for ref in refs.values():
        if not ref.results:
            continue
        current = code_sha256(ref.dir)
        installed = package_versions(ref.manifest.packages)
        installed["python"] = platform.python_version()
        for profile, result in ref.results.items():
            shown = display_path(ref.results_dir(profile) / RESULTS_FILE, content_root)
            going_on = continuation(ref, profile) if result.code_sha256 != current else None
            if going_on is not None:
                diagnostics.append(Diagnostic(
                    shown, 1, 1, "warning",
                    f"results of '{ref.name}' ({profile}) are those its run showed when it finished, by code "
                    f"{result.code_sha256[:12]}; a continuation of its checkpoints (code {going_on.code[:12]}, "
                    f"since {going_on.since}) trains on and the site shows its progress beside them",
                    f"continue it: digest refs run {ref.name} --profile {profile} --resume; "
                    "its results replace these when it finishes"))
            elif result.code_sha256 != current:
                diagnostics.append(Diagnostic(
                    shown, 1, 1, "error",
                    f"results of '{ref.name}' ({profile}) are stale: its code changed since they were made "
                    f"(code_sha256 {result.code_sha256[:12]} ≠ {current[:12]})",
                    f"refresh them: digest refs run {ref.name} --profile {profile}"))
            recorded = dict(result.packages, python=result.python)
            for package, version in recorded.items():
                now = installed.get(package)
                if now and _major_minor(now) != _major_minor(version):
                    diagnostics.append(Diagnostic(
                        shown, 1, 1, "warning",
                        f"'{ref.name}' ({profile}) ran with {package} {version}, now {now} is installed",
                        f"rerun to confirm: digest refs run {ref.name} --profile {profile}"))
    return diagnostics


def is_fresh(ref: Reference, profile: str) -> bool:
    result = ref.results.get(profile)
    return result is not None and result.code_sha256 == code_sha256(ref.dir)


# --- running -------------------------------------------------------------------------------------


def _now() -> str:
    return _stamp(dt.datetime.now(dt.UTC))


def _stamp(moment: dt.datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _relay(stream, prefix: str, tail: collections.deque, progress: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        tail.append(line)
        progress(f"{prefix}{line}")
    stream.close()


def _state_hash_file(state_dir: Path) -> Path:
    return state_dir / "code_sha256.txt"


@dataclass(frozen=True)
class StateWriter:
    """One line of ``state/<profile>/code_sha256.txt``: code that wrote the checkpoints, from when."""

    code: str
    format: int | None  # the manifest's checkpoint_format then; None: written before formats existed
    since: str

    @classmethod
    def parse(cls, line: str) -> StateWriter:
        code, *rest = line.split()
        fmt = int(rest[0]) if rest and rest[0].isdigit() else None
        return cls(code, fmt, rest[1] if len(rest) > 1 else "")

    def line(self) -> str:
        return f"{self.code} {'-' if self.format is None else self.format} {self.since}\n"

    @property
    def effective_format(self) -> int:
        return 1 if self.format is None else self.format  # lines older than formats count as the first


def _state_writers(marker: Path) -> list[StateWriter]:
    """The code that wrote a state folder, oldest first (empty when the folder has no record)."""
    if not marker.is_file():
        return []
    return [StateWriter.parse(line) for line in marker.read_text().splitlines() if line.strip()]


def _checkpoint_files(state: Path) -> list[Path]:
    """The checkpoints a run wrote into its state folder: not the engine's records, the progress
    report, or logs (``*.log``, kept beside them, appended to after the last checkpoint)."""
    if not state.is_dir():
        return []
    ours = {_state_hash_file(state), state / CHECKPOINT_TIME_FILE}
    return sorted(f for f in state.rglob("*")
                  if f.is_file() and f not in ours and f.suffix != ".log"
                  and f.relative_to(state).parts[0] != PROGRESS_DIR)


def _files_sha256(state: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(state).as_posix()}\0".encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _checkpoint_time(state: Path) -> dt.datetime | None:
    """When the run last wrote its checkpoints; None: never."""
    files = _checkpoint_files(state)
    return _saved_time(state, files, _files_sha256(state, files)) if files else None


def _saved_time(state: Path, files: list[Path], files_sha256: str) -> dt.datetime:
    """The time recorded beside the checkpoints while those very files are there (a clone's
    files carry the checkout's time), else the newest file's modification time."""
    record = state / CHECKPOINT_TIME_FILE
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("files_sha256") == files_sha256:
            return dt.datetime.fromisoformat(saved["time"].replace("Z", "+00:00"))
    return dt.datetime.fromtimestamp(max(f.stat().st_mtime for f in files), dt.UTC)


def _record_checkpoint_time(state: Path) -> dt.datetime | None:
    """Write down when the checkpoints now in ``state`` were saved, while the files' own times
    still say so (on the machine that ran), so a clone of them reports the same time; returns it."""
    files = _checkpoint_files(state)
    if not files:
        return None
    files_sha256 = _files_sha256(state, files)
    saved = _saved_time(state, files, files_sha256)
    record = {"files_sha256": files_sha256, "time": _stamp(saved)}
    write_atomic(state / CHECKPOINT_TIME_FILE, json.dumps(record, indent=2) + "\n")
    return saved


def state_summary(ref: Reference, profile: str) -> str | None:
    """One line on the checkpoints a stopped resumable run left: None when there are none, or when
    the profile's results are newer (the run they belong to went on to finish)."""
    state = ref.state_dir(profile)
    newest = _checkpoint_time(state)
    writers = _state_writers(_state_hash_file(state))
    if not ref.manifest.resumable or newest is None or not writers:
        return None
    results = ref.results.get(profile)
    going_on = continuation(ref, profile) if results else None
    if going_on is not None:
        return (f"continuation of the finished run (results of {results.finished}, code "
                f"{results.code_sha256[:12]}): state last written {newest:%Y-%m-%d %H:%M} UTC, by code "
                f"{writers[-1].code[:12]} (format {writers[-1].effective_format}), continuing since "
                f"{going_on.since}; continue: digest refs run {ref.name} --profile {profile} --resume")
    if results and dt.datetime.fromisoformat(results.finished.replace("Z", "+00:00")) >= newest:
        return None
    earlier = f"; earlier code {', '.join(w.code[:12] for w in writers[:-1])}" if len(writers) > 1 else ""
    last = writers[-1]
    return (f"unfinished run: state last written {newest:%Y-%m-%d %H:%M} UTC, by code {last.code[:12]} "
            f"(format {last.effective_format}){earlier}; continue: digest refs run {ref.name} --profile {profile} "
            "--resume")


def _prepare_state(state: Path, code: str, resume: bool, ref: Reference,
                   progress: Callable[[str], None]) -> list[str]:
    """Make the folder for checkpoints and record which code writes them; returns the earlier
    code a resumed run continues from.  A run may continue checkpoints of other code only
    when the reference declares a checkpoint format and both sides have the same one."""
    marker = _state_hash_file(state)
    fmt = ref.manifest.checkpoint_format
    me = StateWriter(code, fmt, _now())
    writers = _state_writers(marker) if resume else []
    if not writers:
        state.mkdir(parents=True, exist_ok=True)
        marker.write_text(me.line())
        return []
    last = writers[-1]
    if last.code == code:
        return [w.code for w in writers if w.code != code]
    if fmt is None:
        raise UsageError(
            f"{ref.name}: the saved state in {state} was made by other code ({last.code[:12]} ≠ {code[:12]}); "
            "rerun without --resume to start over, or, if the new code reads and continues those checkpoints "
            "exactly as the old one would, declare 'checkpoint_format: 1' in its ref.yml")
    if last.effective_format != fmt:
        raise UsageError(
            f"{ref.name}: the saved state in {state} has checkpoint format {last.effective_format}, the code now "
            f"writes format {fmt}; rerun without --resume to start over")
    progress(f"[{ref.name}] continuing checkpoints written by code {last.code[:12]} with code {code[:12]} "
             f"(checkpoint format {fmt} for both)")
    with marker.open("a") as f:
        f.write(me.line())
    return [w.code for w in writers]


def _collect_outputs(ref: Reference, out: Path, profile: str, code: str, started: str, wall: float,
                     trained_with: list[str], metric_names=None, figure_stems=None,
                     finished: str | None = None) -> Results:
    """The run's metrics.json and figures as Results (all the manifest declares, or the names given)."""
    metric_names = list(ref.manifest.metrics) if metric_names is None else list(metric_names)
    figure_stems = ref.manifest.figures if figure_stems is None else figure_stems
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        raise ReferenceRunError(f"{ref.name} ({profile}) wrote no metrics.json")
    try:
        raw = json.loads(metrics_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReferenceRunError(f"{ref.name} ({profile}) wrote unreadable metrics.json: {exc}") from None
    missing = [m for m in metric_names if m not in raw]
    if missing:
        raise ReferenceRunError(f"{ref.name} ({profile}) did not produce metrics: {', '.join(missing)}")
    metrics = {}
    for name in metric_names:
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ReferenceRunError(f"{ref.name} ({profile}) metric {name} is {value!r}, not a finite number")
        metrics[name] = value
    figures = {}
    for stem in figure_stems:
        files = [f"{stem}{suffix}" for suffix in FIGURE_SUFFIXES if (out / f"{stem}{suffix}").is_file()]
        if not files:
            raise ReferenceRunError(f"{ref.name} ({profile}) did not produce figure '{stem}' "
                                    f"(expected {stem}.png and {stem}.svg, or {stem}.gif)")
        figures[stem] = files
    versions = package_versions(ref.manifest.packages)
    return Results(
        name=ref.name, profile=profile, code_sha256=code, python=platform.python_version(),
        numpy=versions.get("numpy") or package_versions(["numpy"])["numpy"], packages=versions,
        platform=platform.platform(), seed=ref.manifest.seed, started=started, finished=finished or _now(),
        wall_seconds=round(wall, 3), metrics=metrics, figures=figures, trained_with=trained_with,
    )


def _install(out: Path, results: Results, target: Path) -> None:
    """Replace ``target`` with the new results in one rename, so a failure leaves the old ones."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for files in results.figures.values():
        for name in files:
            shutil.copy2(out / name, staging / name)
    (staging / RESULTS_FILE).write_text(json.dumps(asdict(results), indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _command(ref: Reference, profile: str, out: Path, state: Path | None, *flags: str) -> list[str]:
    """How the engine calls a reference's script (content/refs/README.md)."""
    command = [sys.executable, ref.manifest.entry, "--profile", profile, "--out", str(out),
               "--seed", str(ref.manifest.seed)]
    return command + (["--state", str(state.resolve())] if state else []) + list(flags)


def _execute(ref: Reference, command: list[str], limit: float,
             progress: Callable[[str], None]) -> tuple[int | None, collections.deque, float]:
    """Run ``command`` in the reference folder, relaying its output, for at most ``limit`` seconds.
    Returns its exit status (None: still running at the limit, and stopped), the last lines of its
    output and its wall time."""
    env = dict(os.environ, **CHILD_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=ref.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    tail: collections.deque = collections.deque(maxlen=STDERR_TAIL)
    readers = [threading.Thread(target=_relay, args=(stream, f"[{ref.name}] ", tail, progress), daemon=True)
               for stream in (proc.stdout, proc.stderr)]
    for reader in readers:
        reader.start()
    try:
        status = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:  # the finally below stops it
        status = None
    finally:
        # Whatever ended the run (success, crash, SIGKILL, time limit, Ctrl-C), nothing it
        # started may outlive it: worker processes it left behind would hold the CPU
        # (and its output pipes) for good.
        _kill_group(proc)
        for reader in readers:
            reader.join(timeout=5)
    return status, tail, time.monotonic() - start


def run_reference(ref: Reference, profile: str, *, resume: bool = False, timeout: float | None = None,
                  stop_after: float | None = None, results_dir: Path | None = None,
                  state_dir: Path | None = None, progress: Callable[[str], None] | None = None,
                  extra_args: tuple[str, ...] = ()) -> Results | None:
    """Run one profile in a subprocess and install its results; raise ReferenceRunError on failure.
    With ``stop_after`` (resumable references only) the run is stopped after that many seconds,
    keeping its checkpoints (and reporting its progress when the manifest declares how), and None
    is returned unless it finished first."""
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    spec = ref.manifest.profiles.get(profile)
    if spec is None:
        raise UsageError(f"{ref.name} has no '{profile}' profile (it has: {', '.join(ref.manifest.profiles)})")
    timeout = timeout or spec.timeout
    code = code_sha256(ref.dir)
    if (resume or stop_after) and not ref.manifest.resumable:
        option = "--resume" if resume else "--stop-after"
        raise UsageError(f"{ref.name} keeps no checkpoints (its ref.yml has no 'resumable: true'); "
                         f"run it without {option}")
    if stop_after is not None and not stop_after > 0:
        raise UsageError(f"--stop-after takes a number of seconds above 0, not {stop_after:g}")
    pausing = stop_after is not None and stop_after < timeout
    state = (state_dir or ref.state_dir(profile)) if ref.manifest.resumable else None
    trained_with = _prepare_state(state, code, resume, ref, progress) if state else []
    target = results_dir or ref.results_dir(profile)
    with tempfile.TemporaryDirectory(prefix=f"digest-{ref.name}-") as tmp:
        out = Path(tmp)
        command = _command(ref, profile, out, state, *(["--resume"] if resume else []), *extra_args)
        progress(f"[{ref.name}] running {profile} profile (time limit {timeout:.0f} s)")
        started = _now()
        status, tail, wall = _execute(ref, command, stop_after if pausing else timeout, progress)
        if state:
            _record_checkpoint_time(state)
        if status is None and pausing:  # checkpoints are written atomically: the last one is whole
            progress(f"[{ref.name}] stopped after {stop_after:.0f} s as asked; its checkpoints stay in "
                     f"{display_path(state, ref.dir.parent.parent)}: continue with --resume")
            # ref.yml as it is now: the report is drawn by the code on disk, which a run of hours may
            # have outlived (an unreadable ref.yml leaves the one the run began with)
            current = load_references(ref.dir.parent.parent).get(ref.name, ref)
            if current.manifest.progress is not None:
                report_progress(current, profile, state_dir=state, progress=progress)
            return None
        if status is None:
            raise ReferenceRunError(_failure(ref.name, profile, f"timed out after {timeout:.0f} s", tail))
        if status != 0:
            how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            raise ReferenceRunError(_failure(ref.name, profile, how, tail))
        if code_sha256(ref.dir) != code:
            raise ReferenceRunError(f"{ref.name}: its code changed while it ran; run it again")
        results = _collect_outputs(ref, out, profile, code, started, wall, trained_with)
        _install(out, results, target)
    if state:  # the run is over: its progress report would only repeat older news
        shutil.rmtree(state / PROGRESS_DIR, ignore_errors=True)
    progress(f"[{ref.name}] {profile} done in {wall:.1f} s, {len(results.metrics)} metrics, "
             f"{len(results.figures)} figures → {display_path(target, ref.dir.parent.parent)}")
    return results


def report_progress(ref: Reference, profile: str, *, state_dir: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> Results:
    """Have the script draw what the profile's last checkpoint shows (``--progress``: no training)
    and install it in ``state/<profile>/progress/``; raise UsageError when there is nothing to show.
    Its ``trained_with`` is every code that wrote the checkpoints, its ``code_sha256`` the code that drew."""
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    spec = ref.manifest.progress
    if spec is None:
        raise UsageError(f"{ref.name} shows no progress of unfinished runs: its ref.yml declares no 'progress'")
    state = state_dir or ref.state_dir(profile)
    checkpoint_time = _record_checkpoint_time(state)
    writers = _state_writers(_state_hash_file(state))
    if checkpoint_time is None or not writers:
        raise UsageError(f"{ref.name} has no checkpoints in {state} to report on; start a run that keeps them: "
                         f"digest refs run {ref.name} --profile {profile} --stop-after SECONDS")
    code = code_sha256(ref.dir)
    with tempfile.TemporaryDirectory(prefix=f"digest-{ref.name}-progress-") as tmp:
        out = Path(tmp)
        status, tail, wall = _execute(ref, _command(ref, profile, out, state, "--progress"), PROGRESS_TIMEOUT,
                                      progress)
        if status != 0:
            how = "timed out" if status is None else f"exited with status {status}"
            raise ReferenceRunError(_failure(ref.name, f"{profile}, progress report", how, tail))
        report = _collect_outputs(
            ref, out, profile, code, started=writers[0].since, wall=wall,
            trained_with=list(dict.fromkeys(w.code for w in writers)), metric_names=spec.metrics,
            figure_stems=spec.figures, finished=_stamp(checkpoint_time))
        _install(out, report, state / PROGRESS_DIR)
    progress(f"[{ref.name}] progress of the unfinished {profile} run (checkpoint of {report.finished}) → "
             f"{display_path(state / PROGRESS_DIR, ref.dir.parent.parent)}")
    return report


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group (the run and every process it started), then reap the run."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is empty: nothing left running
    proc.wait()


def _failure(name: str, profile: str, how: str, tail) -> str:
    lines = "\n".join(f"    {line}" for line in tail) or "    (no output)"
    return f"reference {name} ({profile}) {how}; last lines of its output:\n{lines}"


# --- comparing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    metric: str
    expected: float | None
    got: float | None
    tolerance: str

    @property
    def delta(self) -> float | None:
        if self.expected is None or self.got is None:
            return None
        return self.got - self.expected


def compare(ref: Reference, expected: Results, got: Results) -> list[Drift]:
    """Metrics outside their tolerance (or missing on one side)."""
    drifts = []
    for name, metric in ref.manifest.metrics.items():
        band = metric.band
        if band is None:
            continue
        a, b = expected.metrics.get(name), got.metrics.get(name)
        if a is None or b is None or abs(b - a) > band:
            drifts.append(Drift(name, a, b, metric.tolerance))
    return drifts


def drift_table(name: str, drifts: list[Drift]) -> str:
    rows = [("metric", "expected", "got", "delta", "tolerance")]
    for d in drifts:
        rows.append((d.metric, _fmt(d.expected), _fmt(d.got), _fmt(d.delta), d.tolerance))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"{name}: {len(drifts)} metric(s) drifted beyond tolerance"]
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.6g}"


def verify(ref: Reference, progress: Callable[[str], None] | None = None) -> list[Drift]:
    """Rerun the quick profile into a temporary folder and compare with the committed quick results."""
    expected = ref.results.get("quick")
    if expected is None:
        raise UsageError(f"{ref.name} has no committed quick results to compare with; "
                         f"run: digest refs run {ref.name} --profile quick")
    with tempfile.TemporaryDirectory(prefix=f"digest-verify-{ref.name}-") as tmp:
        got = run_reference(ref, "quick", results_dir=Path(tmp) / "quick", state_dir=Path(tmp) / "state",
                            progress=progress)
    return compare(ref, expected, got)
