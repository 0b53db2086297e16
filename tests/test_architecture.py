"""The package's boundaries are contracts (pyproject.toml's [tool.importlinter]), checked here so that
`make test` fails with the offending import named when a change crosses one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=project, capture_output=True, text=True,
                          env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_package_keeps_every_import_contract():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 3 kept, 0 broken." in run.stdout


def _copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "digest", project / "digest", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def _add_import(module: Path, line: str) -> None:
    module.write_text(module.read_text(encoding="utf-8") + f"\n\ndef _crossing():\n    {line}\n", encoding="utf-8")


CROSSINGS = {
    "a site module importing mail, even inside a function": (
        "digest/site/search.py", "from digest.mail import compose", "digest.site.search -> digest.mail.compose"),
    "a lower stage importing the CLI": (
        "digest/content/load.py", "import digest.cli", "digest.content.load -> digest.cli"),
    # the search index once took its record type from the renderer, which imports the index
    "two modules of one package importing each other": (
        "digest/site/search.py", "from digest.site.render import render_site", "No import cycles"),
}


@pytest.mark.parametrize("module, line, named", CROSSINGS.values(), ids=CROSSINGS.keys())
def test_an_import_across_a_boundary_fails_naming_it(tmp_path, module, line, named):
    project = _copy_project(tmp_path)
    _add_import(project / module, line)
    run = lint_imports(project)
    assert run.returncode != 0 and "BROKEN" in run.stdout
    assert named in run.stdout
