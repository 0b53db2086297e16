"""The `digest` command explains itself: every subcommand has a clear --help, and misuse is one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from digest.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _subcommands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(sub, (*prefix, name))


COMMANDS = sorted(set(_subcommands(build_parser())))


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "digest", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_top_level_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in {c[0] for c in COMMANDS}:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_subcommand_has_help(command):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: digest " + " ".join(command) in result.stdout
    assert len(result.stdout.strip().splitlines()) >= 3


def test_unknown_command_is_one_clear_line_without_traceback():
    result = run("chek")
    assert result.returncode == 2
    assert "invalid choice: 'chek'" in result.stderr and "Traceback" not in result.stderr


def test_missing_content_folder_is_explained(tmp_path):
    result = run("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "no notes folder" in result.stderr and "--content" in result.stderr
    assert "Traceback" not in result.stderr


def test_build_makes_the_site_from_the_content_it_was_given(tmp_path, monkeypatch, capsys):
    """`digest build --content DIR` checks DIR, builds the site from DIR and composes the digest from DIR."""
    import shutil

    from digest.cli import main

    content = tmp_path / "content"
    (content / "notes" / "2016").mkdir(parents=True)
    for name in ("tags.yml", "people.yml"):
        shutil.copy(ROOT / "content" / name, content / name)
    shutil.copy(ROOT / "content" / "notes" / "2016" / "fast-weights-rnn.yml", content / "notes" / "2016")
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("DIGEST_CONTENT", raising=False)
    assert main(["build", "--content", str(content), "--site-dir", str(tmp_path / "site"),
                 "--outbox", str(tmp_path / "outbox")]) == 0
    built = {p.parent.name for p in (tmp_path / "site" / "notes").rglob("index.html")}
    assert "fast-weights-rnn" in built
    assert "reinforce-pong-at-gym" not in built  # a note of ./content, not of the content given
    said = capsys.readouterr().err  # and says where to look at both
    assert f"the site: {tmp_path / 'site'}/ (to browse it: .venv/bin/mkdocs serve)" in said
    issue = tmp_path / "outbox" / "2016-W43"
    assert f"the email: {issue}/issue.html in a browser" in said and (issue / "issue.html").is_file()
