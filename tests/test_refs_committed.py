"""CI reruns every reference's quick profile and compares it with the committed results.

A drift beyond a metric's tolerance fails with the table of expected vs got. The progress an
unfinished run shows is redrawn from its committed checkpoint and must be the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from digest.refs import PROGRESS_DIR, drift_table, is_fresh, load_references, report_progress, verify

CONTENT = Path(__file__).resolve().parent.parent / "content"
REFERENCES = load_references(CONTENT)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_committed_results_are_fresh(name):
    ref = REFERENCES[name]
    for profile in ref.results:
        assert is_fresh(ref, profile), f"run: digest refs run {name} --profile {profile}"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_quick_profile_reproduces_committed_results(name):
    drifts = verify(REFERENCES[name], progress=lambda line: None)
    assert not drifts, drift_table(name, drifts)


@pytest.mark.parametrize("name, profile", sorted((n, p) for n, ref in REFERENCES.items() for p in ref.progress))
def test_committed_progress_is_what_the_committed_checkpoint_shows(name, profile, tmp_path):
    ref = REFERENCES[name]
    state = tmp_path / "state"
    shutil.copytree(ref.state_dir(profile), state, ignore=shutil.ignore_patterns(PROGRESS_DIR))
    redrawn = report_progress(ref, profile, state_dir=state, progress=lambda line: None)
    committed = ref.progress[profile]
    assert redrawn.metrics == committed.metrics, f"redraw it: digest refs progress {name} --profile {profile}"
    assert redrawn.figures == committed.figures
