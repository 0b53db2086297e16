"""The GitHub workflows: actionlint and zizmor find nothing, and pull requests from forks stay harmless.

actionlint (with shellcheck for `run:` scripts) and zizmor run for real from the
test environment (their PyPI packages ship the binaries); zizmor runs offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
PINNED_RE = re.compile(r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+(\.\d+)*\s*$")


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run `make test` (it installs the test extra)")
    return str(found)


def zizmor(*args: str) -> list[dict]:
    done = subprocess.run([tool("zizmor"), "--offline", "--no-progress", "--format", "json", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 10, 11, 12, 13, 14), done.stderr  # 1x: findings of some severity
    return json.loads(done.stdout)


def load(name: str) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); map it back.
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    return {("on" if key is True else key): value for key, value in data.items()}


def test_actionlint_finds_nothing():
    tool("shellcheck")  # actionlint runs it on every `run:` script it finds on PATH
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([tool("actionlint"), "-no-color"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_zizmor_finds_nothing_in_any_workflow():
    assert zizmor("--persona", "auditor", str(WORKFLOWS)) == []


def test_preview_never_exposes_secrets_to_fork_pull_requests():
    findings = zizmor("--persona", "auditor", "--no-ignores", str(WORKFLOWS / "preview.yml"))
    assert findings == [], [f["ident"] for f in findings]
    preview = load("preview.yml")
    assert set(preview["on"]) == {"pull_request"}  # never pull_request_target: fork code gets no secrets
    assert preview["permissions"] == {}
    text = (WORKFLOWS / "preview.yml").read_text(encoding="utf-8")
    assert "secrets." not in text and "pull_request_target" not in text.replace("`pull_request_target`", "")
    for job in preview["jobs"].values():
        assert all(level in ("read", "none") for level in job.get("permissions", {}).values()), job
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_the_same_preview_on_pull_request_target_would_be_flagged(tmp_path):
    """The check above has teeth: zizmor flags the dangerous trigger when it is there."""
    text = (WORKFLOWS / "preview.yml").read_text(encoding="utf-8")
    unsafe = re.sub(r"^  pull_request:$", "  pull_request_target:", text, flags=re.MULTILINE)
    assert unsafe != text
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "preview.yml").write_text(unsafe, encoding="utf-8")
    assert "dangerous-triggers" in {f["ident"] for f in zizmor(str(folder / "preview.yml"))}


def test_preview_comment_runs_no_code_from_the_pull_request():
    comment = load("preview-comment.yml")
    assert set(comment["on"]) == {"workflow_run"} and comment["on"]["workflow_run"]["workflows"] == ["preview"]
    (job,) = comment["jobs"].values()
    assert [s["uses"].split("@")[0] for s in job["steps"]] == ["actions/github-script"]
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    steps = json.dumps(job["steps"])  # what runs, without the comments that explain it
    for untrusted in ("head_branch", "pull_requests", "display_title", "head_commit", "downloadArtifact",
                      "download-artifact", "checkout"):
        assert untrusted.lower() not in steps.lower(), untrusted
    text = (WORKFLOWS / "preview-comment.yml").read_text(encoding="utf-8")
    # Its one zizmor finding is the trigger itself, and it is ignored with a reason on that line.
    assert {f["ident"] for f in zizmor("--no-ignores", str(WORKFLOWS / "preview-comment.yml"))} == \
        {"dangerous-triggers"}
    assert re.search(r"workflow_run: # zizmor: ignore\[dangerous-triggers\] \S", text)


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_action_is_pinned_and_permissions_start_empty(name):
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    uses = [line for line in text.splitlines() if re.match(r"^\s*-?\s*uses:", line)]
    for line in uses:
        assert PINNED_RE.match(line), f"{name}: pin by full commit SHA with a version comment: {line.strip()}"
    workflow = load(name)
    assert workflow["permissions"] == {}, f"{name}: start from `permissions: {{}}` and widen per job"
    assert "concurrency" in workflow, f"{name}: add a concurrency group"


FORM_TYPES = {"markdown", "input", "textarea", "dropdown", "checkboxes"}


@pytest.mark.parametrize("name", ["note-suggestion.yml", "correction.yml", "bug.yml"])
def test_issue_forms_are_well_formed(name):
    form = yaml.safe_load((ROOT / ".github" / "ISSUE_TEMPLATE" / name).read_text(encoding="utf-8"))
    assert form["name"] and form["description"] and form["body"]
    ids = [item["id"] for item in form["body"] if item["type"] != "markdown"]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z][a-z0-9_-]*", i) for i in ids)
    for item in form["body"]:
        assert item["type"] in FORM_TYPES, item
        assert set(item) <= {"type", "id", "attributes", "validations"}, item
        if item["type"] != "markdown":
            assert item["attributes"]["label"]
        if item["type"] in ("dropdown", "checkboxes"):
            assert item["attributes"]["options"]
    assert any(item.get("validations", {}).get("required") for item in form["body"])


def site_steps() -> list[tuple[str, dict]]:
    """The `where the site is published` step (id: site) of every workflow that has one."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in load(path.name)["jobs"].values():
            found += [(path.name, step) for step in job.get("steps", []) if step.get("id") == "site"]
    return found


@pytest.mark.parametrize("name, step", site_steps())
def test_the_site_address_step_fails_when_the_script_fails(name, step, tmp_path):
    """GitHub runs `run:` with `bash -e`; the address script fails here on the unset GITHUB_REPOSITORY."""
    env = {k: v for k, v in os.environ.items() if k not in ("DIGEST_SITE_URL", "GITHUB_REPOSITORY")}
    output = tmp_path / "output"
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "GITHUB_OUTPUT": str(output)})
    assert done.returncode != 0, f"{name}: the step passed with {output.read_text()!r}"
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "GITHUB_OUTPUT": str(output), "DIGEST_SITE_URL": "https://notes.example.org"})
    assert done.returncode == 0 and output.read_text().endswith("url=https://notes.example.org/\n"), done.stderr


def test_smtp_server_settings_may_be_repository_variables_but_the_password_only_a_secret():
    env = load("weekly.yml")["jobs"]["send"]["env"]
    for name in ("DIGEST_SMTP_HOST", "DIGEST_SMTP_PORT", "DIGEST_SMTP_USERNAME"):
        assert env[name] == f"${{{{ secrets.{name} || vars.{name} }}}}", name
    assert env["DIGEST_SMTP_PASSWORD"] == "${{ secrets.DIGEST_SMTP_PASSWORD }}"


def test_no_pages_run_can_cancel_the_weekly_publish_waiting_for_it():
    """GitHub cancels a pending job of a concurrency group when a newer one queues, even with
    cancel-in-progress false, unless the group queues (`queue: max`): a push's pages run would
    cancel the weekly publish, and with it the send that needs it."""
    groups = [load(name)["concurrency"] for name in ("pages.yml", "weekly.yml")]
    groups.append(load("weekly.yml")["jobs"]["publish"]["concurrency"])
    assert [g["group"] for g in groups] == ["pages", "weekly-digest", "pages"]
    assert all(g.get("queue") == "max" and g["cancel-in-progress"] is False for g in groups), groups
