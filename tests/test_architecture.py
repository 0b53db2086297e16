"""The package's boundaries are contracts (pyproject.toml's [tool.importlinter]), checked here so that
`make test` fails with the offending import named when a change crosses one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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


def test_a_site_module_importing_mail_breaks_a_contract_naming_the_import(tmp_path):
    project = _copy_project(tmp_path)
    _add_import(project / "digest/site/search.py", "from digest.mail import compose  # even inside a function")
    run = lint_imports(project)
    assert run.returncode != 0
    assert "digest.site.search -> digest.mail.compose" in run.stdout


def test_a_lower_stage_importing_the_cli_breaks_the_layers(tmp_path):
    project = _copy_project(tmp_path)
    _add_import(project / "digest/content/load.py", "import digest.cli")
    run = lint_imports(project)
    assert run.returncode != 0
    assert "digest.content.load -> digest.cli" in run.stdout


def test_two_modules_of_one_package_importing_each_other_break_the_no_cycle_contract(tmp_path):
    project = _copy_project(tmp_path)  # the search index once took its record type from the renderer
    _add_import(project / "digest/site/search.py", "from digest.site.render import render_site")
    run = lint_imports(project)
    assert run.returncode != 0
    assert "No import cycles" in run.stdout and "BROKEN" in run.stdout
