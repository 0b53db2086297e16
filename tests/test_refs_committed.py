"""CI reruns every reference's quick profile and compares it with the committed results.

A drift beyond a metric's tolerance fails with the table of expected vs got.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.refs import drift_table, is_fresh, load_references, verify

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
