"""`digest check` on a corpus of broken notes: every problem at its line and column, in one pass.

Each file in tests/content/broken/ is one case. Its first lines are YAML comments:

    # expect: LINE:COL: [warning: ]substring of the message or hint
    # path: notes/2016/some-slug.yml      (where the case is placed under a fixture content/)
    # also: notes/2016/gan-and-pixelcnn.yml   (optional: a real note copied beside it)
    # expect in notes/2016/gan-and-pixelcnn.yml: LINE:COL: substring   (optional: a problem the case
                                          causes in that other file, e.g. the note whose slug it reuses)
    # generate: huge                      (optional: the test pads the file over the size limit)

LINE and COL are 1-based in the file as written (the comment lines count). A case must
report exactly its expected diagnostics: no more, no fewer, no traceback, one line each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from digest import cli
from digest.pipeline.check import check

ROOT = Path(__file__).resolve().parents[2]
CONTENT = ROOT / "content"
BROKEN = Path(__file__).resolve().parent / "broken"
_SCRIPT = Path(sys.executable).parent / "digest"  # the console script of this environment
DIGEST = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "digest"]

EXPECT_RE = re.compile(r"^# expect(?: in (\S+))?: (\d+):(\d+): (?:(error|warning): )?(.+)$")
LINE_RE = re.compile(r"^(?P<path>\S+\.ya?ml):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): (?P<text>.+)$")
SUMMARY_RE = re.compile(r"^digest check (ok|failed): (\d+) file\(s\), (\d+) error\(s\), (\d+) warning\(s\)$")


@dataclass(frozen=True)
class Expect:
    path: str | None  # None: the case's own file; else relative to content/
    line: int
    col: int
    severity: str
    text: str


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    path: str  # relative to the fixture content/ folder
    also: tuple[str, ...]
    expects: tuple[Expect, ...]
    generate: str | None

    @property
    def shown(self) -> str:
        return f"content/{self.path}"

    @property
    def errors(self) -> int:
        return sum(e.severity == "error" for e in self.expects)

    @property
    def warnings(self) -> int:
        return sum(e.severity == "warning" for e in self.expects)


def parse_case(file: Path) -> Case:
    data = file.read_bytes()
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    expects, also, path, generate = [], [], None, None
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if m := EXPECT_RE.match(line):
            expects.append(Expect(m[1], int(m[2]), int(m[3]), m[4] or "error", m[5].strip()))
        elif line.startswith("# path: "):
            path = line.removeprefix("# path: ").strip()
        elif line.startswith("# also: "):
            also.append(line.removeprefix("# also: ").strip())
        elif line.startswith("# generate: "):
            generate = line.removeprefix("# generate: ").split()[0]
    assert expects, f"{file.name}: no '# expect:' line"
    assert path, f"{file.name}: no '# path:' line"
    return Case(file.stem, data, path, tuple(also), tuple(expects), generate)


CASES = [parse_case(f) for f in sorted(BROKEN.glob("*.yml"))]


def make_content(base: Path) -> Path:
    """A content folder with the real registries and reference manifests, and no notes."""
    content = base / "content"
    (content / "notes").mkdir(parents=True)
    shutil.copy(CONTENT / "tags.yml", content / "tags.yml")
    shutil.copy(CONTENT / "people.yml", content / "people.yml")
    # Each reference's manifest and code, without results/ and state/ (no staleness checks here).
    for manifest in sorted(CONTENT.glob("refs/*/ref.yml")):
        target = content / "refs" / manifest.parent.name
        target.mkdir(parents=True)
        for file in manifest.parent.iterdir():
            if file.is_file():
                shutil.copy(file, target / file.name)
    assert (content / "refs" / "backprop-gates" / "ref.yml").is_file()  # the corpus's suggestions name it
    return content


def place(case: Case, base: Path) -> Path:
    content = make_content(base)
    for extra in case.also:
        target = content / extra
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CONTENT / extra, target)
    data = case.data
    if case.generate == "huge":
        filler = ("  " + "긴 본문 줄이다. " * 8 + "\n").encode()
        data += filler * (300 * 1024 // len(filler) + 1)
        assert len(data) > 300 * 1024
    elif case.generate is not None:
        raise AssertionError(f"{case.name}: unknown generator {case.generate!r}")
    target = content / case.path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return content


def files_in(content: Path) -> int:
    """Notes, the two registries and the reference manifests: what the summary line counts."""
    notes = sum(1 for p in (content / "notes").rglob("*") if p.suffix in (".yml", ".yaml"))
    return notes + 2 + len(list(content.glob("refs/*/ref.yml")))


def assert_report(case: Case, lines: list[str], rc: int, files: int) -> None:
    __tracebackhide__ = True
    assert not any(line.startswith("Traceback") for line in lines), "\n".join(lines)
    *diagnostic_lines, last = lines
    summary = SUMMARY_RE.match(last)
    assert summary, f"last line is not the summary: {last!r}\n" + "\n".join(lines)
    parsed = []
    for line in diagnostic_lines:
        m = LINE_RE.match(line)
        assert m, f"not a one-line diagnostic: {line!r}\nall output:\n" + "\n".join(lines)
        parsed.append(m)
    expected_paths = {case.shown} | {f"content/{e.path}" for e in case.expects if e.path}
    others = [m[0] for m in parsed if m["path"] not in expected_paths]
    assert not others, f"diagnostics for files other than the case: {others}"
    report = "\n".join(lines)
    for e in case.expects:
        shown = f"content/{e.path}" if e.path else case.shown
        hits = [m for m in parsed if (m["path"], int(m["line"]), int(m["col"]), m["sev"]) ==
                (shown, e.line, e.col, e.severity) and e.text in m["text"]]
        assert hits, f"expected {shown}:{e.line}:{e.col}: {e.severity}: ...{e.text}...\ngot:\n{report}"
    assert len(parsed) == len(case.expects), f"expected exactly {len(case.expects)} diagnostic(s), got:\n{report}"
    assert (summary[1], int(summary[2]), int(summary[3]), int(summary[4])) == (
        "failed" if case.errors else "ok", files, case.errors, case.warnings), report
    assert rc == (1 if case.errors else 0), f"exit code {rc}\n{report}"


def test_corpus_is_big_enough():
    assert len(CASES) >= 45
    assert sum(len(c.expects) >= 3 for c in CASES) >= 3  # combinations
    assert any(c.warnings and not c.errors for c in CASES)  # a warning-only case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_note(case: Case, tmp_path, capsys, monkeypatch):
    content = place(case, tmp_path)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    rc = cli.main(["check", "--content", str(content)])
    out, err = capsys.readouterr()
    assert err == "", err
    assert_report(case, out.splitlines(), rc, files_in(content))


def test_check_function_agrees_with_cli(tmp_path):
    case = next(c for c in CASES if c.name == "combo-four-errors")
    content = place(case, tmp_path)
    result = check(content)
    assert not result.ok
    assert [(d.line, d.col) for d in result.diagnostics] == sorted((e.line, e.col) for e in case.expects)
    assert all(d.line >= 1 and d.col >= 1 and "\n" not in d.message + d.hint for d in result.diagnostics)


def test_paths_argument_limits_the_report(tmp_path, capsys):
    content = place(next(c for c in CASES if c.name == "unknown-tag"), tmp_path)
    fine = content / "notes" / "2016" / "gan-and-pixelcnn.yml"
    shutil.copy(CONTENT / "notes" / "2016" / "gan-and-pixelcnn.yml", fine)
    rc = cli.main(["check", "--content", str(content), str(fine)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 1 and out[0].startswith("digest check ok"), out


def test_duplicate_slug_is_reported_on_the_older_note_when_only_it_is_checked(tmp_path, capsys):
    content = place(next(c for c in CASES if c.name == "duplicate-slug"), tmp_path)
    older = content / "notes" / "2016" / "gan-and-pixelcnn.yml"
    rc = cli.main(["check", "--content", str(content), str(older)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1, out
    assert out[0] == ("content/notes/2016/gan-and-pixelcnn.yml:2:7: error: duplicate slug 'gan-and-pixelcnn', "
                      "also used by content/notes/2017/gan-and-pixelcnn.yml — each note needs its own slug: give "
                      "the newer note another slug (and file name); keep the published note's URL"), out
    assert out[-1].startswith("digest check failed") and len(out) == 2, out


@pytest.mark.parametrize("given, message", [
    ("content/notes/2016/typo.yml", "no such file or folder 'content/notes/2016/typo.yml'"),
    ("content/notes/2099", "no such file or folder 'content/notes/2099'"),
    ("README.md", "'README.md' is outside the content folder content/"),
    ("content/notes/2016/notes.txt", "'content/notes/2016/notes.txt' is not a YAML content file"),
])
def test_path_that_names_nothing_to_check_is_an_error(given, message, tmp_path, capsys, monkeypatch):
    content = place(next(c for c in CASES if c.name == "duplicate-slug"), tmp_path)
    (tmp_path / "README.md").write_text("not content\n", encoding="utf-8")
    (content / "notes" / "2016" / "notes.txt").write_text("draft\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["check", "--content", "content", given, "content/notes/2017"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1, out
    assert f"{given}:1:1: error: {message}" in "\n".join(out), out
    assert any(line.startswith("content/notes/2017/gan-and-pixelcnn.yml:6:7: error: duplicate slug")
               for line in out), out  # the other, valid path is still checked in the same pass
    assert out[-1].startswith("digest check failed"), out


SUBPROCESS_CASES = ["combo-six-errors-and-a-warning", "invalid-utf8-euc-kr", "anchor-bomb", "date-in-the-future"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_console_script(name, tmp_path):
    case = next(c for c in CASES if c.name == name)
    content = place(case, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "DIGEST_DEBUG")}
    proc = subprocess.run([*DIGEST, "check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert_report(case, proc.stdout.splitlines(), proc.returncode, files_in(content))


def test_github_annotations(tmp_path, capsys, monkeypatch):
    case = next(c for c in CASES if c.name == "combo-six-errors-and-a-warning")
    content = place(case, tmp_path)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    rc = cli.main(["check", "--content", str(content)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    annotations = [line for line in out if line.startswith("::")]
    assert len(annotations) == len(case.expects)
    for e in case.expects:
        prefix = f"::{e.severity} file={case.shown},line={e.line},col={e.col},"
        assert any(a.startswith(prefix) and e.text in a for a in annotations), (prefix, annotations)
    plain = [line for line in out if not line.startswith("::")]
    assert_report(case, plain, rc, files_in(content))


def test_a_job_repeating_the_check_can_leave_the_annotations_to_another(tmp_path, capsys, monkeypatch):
    case = next(c for c in CASES if c.name == "combo-six-errors-and-a-warning")
    content = place(case, tmp_path)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("DIGEST_ANNOTATE", "0")
    assert cli.main(["check", "--content", str(content)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out and not any(line.startswith("::") for line in out)  # the plain report stays


def test_github_annotation_escapes_newlines_and_colons(tmp_path, capsys, monkeypatch):
    case = next(c for c in CASES if c.name == "arxiv-trailing-newline")
    content = place(case, tmp_path)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    cli.main(["check", "--content", str(content)])
    annotations = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::error")]
    assert len(annotations) == 1
    assert annotations[0].startswith(f"::error file={case.shown},line=12,col=12,title=digest check::")


def test_committed_content_passes():
    proc = subprocess.run([*DIGEST, "check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"})
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("digest check ok"), proc.stdout


# --- a broken registry: its own errors, not an "unknown tag" in every note ---------------------------


def content_with_notes(base: Path) -> Path:
    content = make_content(base)
    for note in ("2016/gan-and-pixelcnn.yml", "2016/fast-weights-rnn.yml"):
        (content / "notes" / note).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CONTENT / "notes" / note, content / "notes" / note)
    return content


@pytest.mark.parametrize("registry, broken, first", [
    ("tags.yml", "openai:\n  name: OpenAI again\n", "duplicate key 'openai'"),
    ("people.yml", "lex-fridman2:\n\ten: Lex\n", "tab character"),
])
def test_registry_that_does_not_load_reports_its_own_error_and_skips_id_checks(
        registry, broken, first, tmp_path, capsys):
    content = content_with_notes(tmp_path)
    with (content / registry).open("a", encoding="utf-8") as handle:
        handle.write(broken)
    lines = (content / registry).read_text(encoding="utf-8").splitlines()
    rc = cli.main(["check", "--content", str(content)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1, out
    what = "tag" if registry == "tags.yml" else "person"
    assert len(out) == 3, out  # the registry's error, the note about skipped checks, the summary
    assert out[0].startswith(f"content/{registry}:{len(lines) - 1 if what == 'tag' else len(lines)}:")
    assert f"error: {first}" in out[0], out
    assert out[1].startswith(out[0].split(" ")[0]) and (
        f"warning: the {what} ids of notes were not checked, because {registry} did not load") in out[1], out
    assert not any(f"unknown {what}" in line for line in out), out


def test_registry_entry_with_an_error_is_reported_once_not_in_each_note(tmp_path, capsys):
    content = content_with_notes(tmp_path)
    text = (content / "tags.yml").read_text(encoding="utf-8")
    (content / "tags.yml").write_text(text.replace("openai:\n  name:", "openai:\n  nmae:", 1), encoding="utf-8")
    rc = cli.main(["check", "--content", str(content)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert all(line.startswith("content/tags.yml:") for line in out[:-1]), out
    assert any("unknown field 'nmae'" in line and "did you mean 'name'?" in line for line in out), out
    assert not any("unknown tag" in line for line in out), out


def test_tabs_inside_quoted_values_and_the_literal_body_are_content(tmp_path, capsys):
    content = make_content(tmp_path)
    note = content / "notes" / "2016" / "makefile.yml"
    note.parent.mkdir(parents=True)
    note.write_text(
        "title: \"Make\t입문\"\nslug: makefile\ndate: 2016-06-30\nkind: tutorial\ntags: [backprop]\n"
        "people: [andrej-karpathy]\nsources:\n  - url: https://example.org/make\n    title: 'GNU\tMake'\n"
        "summary: \"탭이\t들어간 요약이다.\"\nbody: |\n  ```make\n  all:\n  \tgo build ./...\n  ```\n\n"
        "  ```go\n  func main() {\n  \tfmt.Println(\"hi\")\n  }\n  ```\n", encoding="utf-8")
    rc = cli.main(["check", "--content", str(content)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out == [f"digest check ok: {files_in(content)} file(s), 0 error(s), 0 warning(s)"], out
    from digest.pipeline.check import load_content

    written = load_content(content)[0].notes[0]
    assert "all:\n\tgo build ./...\n" in written.body and written.summary == "탭이\t들어간 요약이다."


def test_a_person_without_a_hangul_name_is_a_warning_at_ko(tmp_path, capsys):
    content = content_with_notes(tmp_path)
    with (content / "people.yml").open("a", encoding="utf-8") as handle:
        handle.write("charles-blundell:\n  ko: Charles Blundell  # 한글 이름으로 바꾸세요\n  en: Charles Blundell\n")
    line = len((content / "people.yml").read_text(encoding="utf-8").splitlines()) - 1
    assert cli.main(["check", "--content", str(content)]) == 0  # a warning does not fail the check
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"content/people.yml:{line}:7: warning: ko 'Charles Blundell' has no Hangul, yet pages show "
                      "it as the person's Korean name — write the name as Koreans read it, e.g. ko: 안드레이 카패시")


def test_a_source_titled_with_its_own_address_is_a_warning(tmp_path, capsys):
    content = content_with_notes(tmp_path)
    note = content / "notes" / "2016" / "fast-weights-rnn.yml"
    text = note.read_text(encoding="utf-8")
    url = re.search(r"- url: (\S+)", text)[1]
    title_line = re.search(r"- url: \S+\n(\s+title: .*)", text)[1]
    note.write_text(text.replace(title_line, f"    title: {url}", 1), encoding="utf-8")
    assert cli.main(["check", "--content", str(content)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "warning: the source's title is its address" in out[0], out
    assert out[0].startswith("content/notes/2016/fast-weights-rnn.yml:"), out
