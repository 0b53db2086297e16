"""`digest new` writes a note whose only `digest check` errors are the template text left to replace,
and refuses bad input early."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from digest.authoring.romanize import slugify
from digest.cli import main
from digest.content.validate import TEMPLATE_BODY
from digest.pipeline.check import check

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ["--summary", "카패시의 퐁 강화학습 글을 따라 해 본 기록."]
TEMPLATE_LINES = TEMPLATE_BODY  # the sentences digest new writes for the writer to replace


def write_own_body(project: Path) -> None:
    """What the contributor does next: replace the template's sentences of every new note, and give
    a source that was not fetched its title (digest new wrote its address there)."""
    for path in (project / "notes").rglob("*.yml"):
        text = path.read_text(encoding="utf-8")
        for line in TEMPLATE_LINES:
            text = text.replace(line, "직접 쓴 문장이다.")
        text = re.sub(r"(- url: (\S+)\n\s+title: )\2\n", r"\1원문의 제목\n", text)
        path.write_text(text, encoding="utf-8")


def errors(result) -> list[str]:
    return [d.format() for d in result.diagnostics if d.severity == "error"]


def test_new_note_from_flags_fails_check_only_until_the_body_template_is_replaced(project, capsys):
    code = main(["new", "--no-input", "--title", "강화학습으로 퐁 배우기: 재현", "--kind", "tutorial",
                 "--tag", "reinforcement-learning", "--person", "andrej-karpathy", *SUMMARY,
                 "--source", "http://karpathy.github.io/2016/05/31/rl/", "--date", "2016-07-01"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "next: replace the template text in it with your own" in out
    path = project / "notes" / "2016" / "ganghwahakseupeuro-pong-baeugi-jaehyeon.yml"
    assert path.is_file()
    line = path.read_text(encoding="utf-8").splitlines().index("  " + TEMPLATE_LINES[0]) + 1
    result = check(project, today=dt.date(2026, 1, 1))
    assert any("the source's title is its address" in d.message for d in result.diagnostics)  # not fetched
    assert errors(result) == [
        f"content/notes/2016/ganghwahakseupeuro-pong-baeugi-jaehyeon.yml:{line}:3: error: body still holds "
        f"digest new's template text '{TEMPLATE_LINES[0]}' — replace the template's sentences with your own "
        "text (the '##' headings may stay)"]
    write_own_body(project)
    result = check(project, today=dt.date(2026, 1, 1))
    assert result.ok and result.diagnostics == [], result.lines()


def test_no_input_without_summary_fails_as_help_promises_and_writes_nothing(project, capsys):
    code = main(["new", "--no-input", "--title", "제목", "--kind", "paper", "--source", "https://example.org/x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "a summary is needed: --summary" in err and "Traceback" not in err
    assert not list((project / "notes").rglob("*.yml"))


def test_note_still_holding_the_template_summary_fails_check(project):
    assert main(["new", "--no-input", "--title", "제목", "--kind", "paper", "--source", "https://example.org/x",
                 "--slug", "placeholder", "--date", "2016-01-01", "--summary", "한두 문장으로 요약을 쓰세요."]) == 0
    write_own_body(project)
    result = check(project, today=dt.date(2026, 1, 1))
    assert [d.format() for d in result.diagnostics] == [
        "content/notes/2016/placeholder.yml:11:10: error: summary is still digest new's template text "
        "'한두 문장으로 요약을 쓰세요.' — replace it with one or two sentences of your own about the source"]


def test_new_refuses_unknown_tag_with_nearest_id_and_writes_nothing(project, capsys):
    code = main(["new", "--no-input", "--title", "제목", "--kind", "paper", "--tag", "reinforcment-learning",
                 *SUMMARY, "--source", "https://example.org/x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown tag 'reinforcment-learning'" in err and "reinforcement-learning" in err
    assert not list((project / "notes").rglob("*.yml"))


def test_new_refuses_existing_file(project, capsys):
    args = ["new", "--no-input", "--title", "같은 제목", "--kind", "news", *SUMMARY,
            "--source", "https://example.org/", "--date", "2016-01-01"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "slug 'gateun-jemok' is already used by content/notes/2016/gateun-jemok.yml" in err, err
    assert "--slug gateun-jemok-2" in err


def test_new_refuses_a_slug_used_by_a_note_of_another_year(project, capsys):
    older = project / "notes" / "2026" / "dcgan.yml"
    older.parent.mkdir()
    older.write_text("title: DCGAN\nslug: dcgan\n", encoding="utf-8")  # any note file that names the slug
    renamed = project / "notes" / "2026" / "dcgan-notes.yml"
    renamed.write_text("slug: dcgan-2\n", encoding="utf-8")
    code = main(["new", "--no-input", "--title", "DCGAN 다시 보기", "--kind", "paper", "--slug", "dcgan", *SUMMARY,
                 "--source", "https://arxiv.org/abs/1511.06434", "--date", "2016-01-19"])
    err = capsys.readouterr().err
    assert code == 2
    assert ("slug 'dcgan' is already used by content/notes/2026/dcgan.yml; choose another slug, e.g. "
            "--slug dcgan-3 or a word that tells the two notes apart") in err, err
    assert not (project / "notes" / "2016").exists()


def test_new_quotes_titles_that_would_break_yaml(project):
    title = 'A: "quoted" #not-a-comment & *star'
    assert main(["new", "--no-input", "--title", title, "--slug", "tricky", "--kind", "paper", *SUMMARY,
                 "--source", "https://example.org/", "--date", "2016-01-01"]) == 0
    write_own_body(project)
    result = check(project, today=dt.date(2026, 1, 1))
    assert result.ok, result.lines()
    from digest.pipeline.check import load_content

    note = load_content(project, today=dt.date(2026, 1, 1))[0].notes[0]
    assert note.title == title


@pytest.mark.parametrize("title, slug", [
    ("해커를 위한 신경망 가이드", "haekeoreul-wihan-singyeongmang-gaideu"),
    ("GAN 과 PixelCNN", "gan-gwa-pixelcnn"),
    ("Fast Weights RNN", "fast-weights-rnn"),
])
def test_korean_titles_get_readable_romanized_slugs(title, slug):
    assert slugify(title) == slug


def answer_in_a_terminal(project: Path, answers: dict[str, list[str]]) -> tuple[int, str]:
    """Run `digest new` in a real terminal (a pty), typing each prompt's answers in turn; (exit code,
    everything the terminal showed)."""
    import os
    import pty
    import select
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "digest", "new", "--date", "2016-03-01"],
                            stdin=follower, stdout=follower, stderr=follower, cwd=project.parent)
    os.close(follower)
    seen, shown = b"", ""
    while proc.poll() is None:
        ready, _, _ = select.select([leader], [], [], 10)
        if not ready:
            break
        try:
            chunk = os.read(leader, 1024)
        except OSError:
            break
        seen += chunk
        text = seen.decode("utf-8", "ignore")
        for label, queue in answers.items():
            if queue and label in text.rsplit("\n", 1)[-1]:
                os.write(leader, queue.pop(0).encode() + b"\r")
                shown += text
                seen = b""
                break
    proc.wait(timeout=30)
    os.close(leader)
    return proc.returncode, shown + seen.decode("utf-8", "ignore")


def test_new_asks_for_missing_values_in_a_terminal(project):
    """A contributor without flags answers questions in a real terminal (a pty)."""
    answers = {"제목": ["매칭 네트워크"], "종류": ["paper"], "slug": [""], "요약": ["원샷 학습을 다룬 논문."],
               "태그": ["paper-notes"], "인물": ["oriol-vinyals"], "원문": ["https://arxiv.org/abs/1606.04080"]}
    code, shown = answer_in_a_terminal(project, answers)
    assert code == 0, shown
    path = project / "notes" / "2016" / "maeching-neteuwokeu.yml"
    assert path.is_file()
    write_own_body(project)
    assert check(project, today=dt.date(2026, 1, 1)).ok


def test_a_wrong_answer_is_asked_again_and_the_answers_before_it_stay(project):
    answers = {"제목": ["매칭 네트워크"], "종류": ["papr", "paper"], "slug": ["DCGAN", "matching"],
               "요약": ["원샷 학습을 다룬 논문."], "태그": ["paper-note", "paper-notes"], "인물": ["oriol-vinyals"],
               "원문": ["arxiv.org/abs/1606.04080", "https://arxiv.org/abs/1606.04080"]}
    code, shown = answer_in_a_terminal(project, answers)
    assert code == 0, shown
    assert "unknown kind 'papr': did you mean 'paper'?" in shown
    assert "slug 'DCGAN' must be lowercase letters, digits and hyphens" in shown
    assert "unknown tag 'paper-note': did you mean 'paper-notes'?" in shown
    assert "source 'arxiv.org/abs/1606.04080'" in shown and not any(answers.values())
    text = (project / "notes" / "2016" / "matching.yml").read_text(encoding="utf-8")
    assert 'title: "매칭 네트워크"' in text and "kind: paper" in text and "tags: [paper-notes]" in text
