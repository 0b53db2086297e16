"""Benchmark scripts run as `python bench/NAME.py`, which puts bench/ first on sys.path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_bench_script_imports_the_digest_package_not_a_sibling_file():
    # bench/pong.py loads the Pong reference, which imports digest.refs.style: a bench/digest.py
    # would be imported in its place and the benchmark would fail before measuring anything.
    probe = "import digest.refs.style; print(digest.__file__)"
    found = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, 'bench'); {probe}"],
                           cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == ROOT / "digest" / "__init__.py"
