"""Synthetic content for benchmarks: N realistic notes plus registries, in a folder."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
from pathlib import Path

TAGS = [f"tag-{i:03d}" for i in range(60)]
PEOPLE = [f"person-{i:03d}" for i in range(200)]
PARAGRAPH = ("이 노트는 합성 벤치마크용으로 만든 글입니다. 모델의 구조와 학습 방법, 실험 결과를 "
             "자신의 말로 정리하고 원문 링크를 답니다. ")


def write_content(root: Path, count: int, seed: int = 0, body_paragraphs: int = 8) -> Path:
    """Write ``count`` valid notes under ``root/content`` and return that folder."""
    rng = random.Random(seed)
    content = root / "content"
    if content.exists():
        shutil.rmtree(content)
    (content / "notes").mkdir(parents=True)
    (content / "tags.yml").write_text(
        "".join(f"{t}:\n  name: 태그 {t}\n  description: 합성 태그\n" for t in TAGS), encoding="utf-8")
    (content / "people.yml").write_text(
        "".join(f"{p}:\n  ko: 사람 {p}\n  en: Person {p}\n" for p in PEOPLE), encoding="utf-8")
    start = dt.date(2015, 1, 1)
    for i in range(count):
        date = start + dt.timedelta(days=rng.randrange(3650))
        slug = f"note-{i:05d}"
        folder = content / "notes" / str(date.year)
        folder.mkdir(exist_ok=True)
        body = "\n\n".join(f"  ## 절 {k}\n\n  {PARAGRAPH * 3}" for k in range(body_paragraphs))
        text = (
            f"title: {json.dumps(f'합성 노트 {i}번: 강화학습과 생성 모델', ensure_ascii=False)}\n"
            f"slug: {slug}\ndate: {date.isoformat()}\nkind: paper\n"
            f"tags: [{', '.join(rng.sample(TAGS, 3))}]\n"
            f"people: [{', '.join(rng.sample(PEOPLE, 2))}]\n"
            "sources:\n"
            f"  - url: https://arxiv.org/abs/1606.{i % 10000:05d}\n"
            "    title: A synthetic paper\n"
            f"    arxiv: \"1606.{i % 10000:05d}\"\n"
            "summary: 합성 노트의 요약입니다. 두 문장으로 씁니다.\n"
            f"body: |\n{body}\n"
        )
        (folder / f"{slug}.yml").write_text(text, encoding="utf-8")
    return content
