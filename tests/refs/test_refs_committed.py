"""CI reruns every reference's quick profile and compares it with the committed results.

A drift beyond a metric's tolerance fails with the table of expected vs got. The progress an
unfinished run shows is redrawn from its committed checkpoint and must be the same. Results whose
finished run a continuation carries on (``continuation``) may be of older code: they show what the
run showed when it finished, beside the continuation's progress.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from digest.refs.engine import (
    PROGRESS_DIR,
    continuation,
    drift_table,
    is_fresh,
    load_references,
    report_progress,
    verify,
)

CONTENT = Path(__file__).resolve().parents[2] / "content"
REFERENCES = load_references(CONTENT)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_committed_results_are_fresh(name):
    ref = REFERENCES[name]
    for profile in ref.results:
        assert is_fresh(ref, profile) or continuation(ref, profile), f"run: digest refs run {name} --profile {profile}"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_quick_profile_reproduces_committed_results(name):
    drifts = verify(REFERENCES[name], progress=lambda line: None)
    assert not drifts, drift_table(name, drifts)


# Profiles whose checkpoints are committed: while unfinished they show progress, once finished results.
CHECKPOINTED = sorted((n, p) for n, ref in REFERENCES.items() if ref.manifest.progress
                      for p in ref.manifest.profiles if ref.state_dir(p).is_dir())


def _redraw(ref, profile, tmp_path):
    state = tmp_path / "state"
    shutil.copytree(ref.state_dir(profile), state, ignore=shutil.ignore_patterns(PROGRESS_DIR))
    return report_progress(ref, profile, state_dir=state, progress=lambda line: None)


@pytest.mark.parametrize("name, profile", CHECKPOINTED)
def test_committed_progress_is_what_the_committed_checkpoint_shows(name, profile, tmp_path):
    ref = REFERENCES[name]
    if profile in ref.results and continuation(ref, profile) is None:
        pytest.skip(f"the {profile} run has finished: its results, not its progress, are shown")
    assert ref.unfinished(profile), f"draw and commit it: digest refs progress {name} --profile {profile}"
    assert profile in ref.progress, f"draw and commit it: digest refs progress {name} --profile {profile}"
    redrawn = _redraw(ref, profile, tmp_path)
    committed = ref.progress[profile]
    assert redrawn.metrics == committed.metrics, f"redraw it: digest refs progress {name} --profile {profile}"
    assert redrawn.figures == committed.figures


@pytest.mark.parametrize("name, profile", CHECKPOINTED)
def test_finished_results_come_from_the_committed_checkpoint(name, profile, tmp_path):
    """The training numbers a finished run's results show are those of the checkpoint committed
    beside them, and no stale progress report is left to contradict them."""
    ref = REFERENCES[name]
    if profile not in ref.results:
        pytest.skip(f"the {profile} run is unfinished: its progress is checked instead")
    if continuation(ref, profile):  # tests/refs/test_pong.py checks that its checkpoint begins with them
        pytest.skip(f"a continuation trains on from the finished {profile} run: its progress is checked instead")
    assert not ref.progress_dir(profile).exists(), f"remove {ref.progress_dir(profile)}: the run has finished"
    from_checkpoint = _redraw(ref, profile, tmp_path).metrics
    results = ref.results[profile].metrics
    assert {k: results[k] for k in from_checkpoint} == from_checkpoint
