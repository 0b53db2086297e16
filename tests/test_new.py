"""`digest new` writes a note that passes `digest check` unchanged, and refuses bad input early."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from digest.check import check
from digest.cli import main
from digest.romanize import slugify

ROOT = Path(__file__).resolve().parent.parent


def test_new_note_from_flags_passes_check(project, capsys):
    code = main(["new", "--no-input", "--title", "강화학습으로 퐁 배우기: 재현", "--kind", "tutorial",
                 "--tag", "reinforcement-learning", "--person", "andrej-karpathy",
                 "--source", "http://karpathy.github.io/2016/05/31/rl/", "--date", "2016-07-01"])
    assert code == 0, capsys.readouterr()
    path = project / "notes" / "2016" / "ganghwahakseupeuro-pong-baeugi-jaehyeon.yml"
    assert path.is_file()
    result = check(project, today=dt.date(2026, 1, 1))
    assert result.ok, result.lines()
    assert result.diagnostics == []


def test_new_refuses_unknown_tag_with_nearest_id_and_writes_nothing(project, capsys):
    code = main(["new", "--no-input", "--title", "제목", "--kind", "paper", "--tag", "reinforcment-learning",
                 "--source", "https://example.org/x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown tag 'reinforcment-learning'" in err and "reinforcement-learning" in err
    assert not list((project / "notes").rglob("*.yml"))


def test_new_refuses_existing_file(project, capsys):
    args = ["new", "--no-input", "--title", "같은 제목", "--kind", "news",
            "--source", "https://example.org/", "--date", "2016-01-01"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_new_quotes_titles_that_would_break_yaml(project):
    title = 'A: "quoted" #not-a-comment & *star'
    assert main(["new", "--no-input", "--title", title, "--slug", "tricky", "--kind", "paper",
                 "--source", "https://example.org/", "--date", "2016-01-01"]) == 0
    result = check(project, today=dt.date(2026, 1, 1))
    assert result.ok, result.lines()
    from digest.check import load_content

    note = load_content(project, today=dt.date(2026, 1, 1))[0].notes[0]
    assert note.title == title


@pytest.mark.parametrize("title, slug", [
    ("해커를 위한 신경망 가이드", "haekeoreul-wihan-singyeongmang-gaideu"),
    ("GAN 과 PixelCNN", "gan-gwa-pixelcnn"),
    ("Fast Weights RNN", "fast-weights-rnn"),
])
def test_korean_titles_get_readable_romanized_slugs(title, slug):
    assert slugify(title) == slug


def test_new_asks_for_missing_values_in_a_terminal(project):
    """A contributor without flags answers questions in a real terminal (a pty)."""
    import os
    import pty
    import select
    import subprocess
    import sys

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "digest", "new", "--date", "2016-03-01"],
                            stdin=follower, stdout=follower, stderr=follower, cwd=project.parent)
    os.close(follower)
    answers = {"제목": "매칭 네트워크", "종류": "paper", "slug": "", "요약": "원샷 학습을 다룬 논문.",
               "태그": "paper-notes", "인물": "oriol-vinyals", "원문": "https://arxiv.org/abs/1606.04080"}
    seen = b""
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
        for label, answer in list(answers.items()):
            if label in text.rsplit("\n", 1)[-1]:
                os.write(leader, answer.encode() + b"\r")
                answers.pop(label)
                seen = b""
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, seen.decode("utf-8", "ignore")
    path = project / "notes" / "2016" / "maeching-neteuwokeu.yml"
    assert path.is_file()
    assert check(project, today=dt.date(2026, 1, 1)).ok
