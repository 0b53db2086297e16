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



def _empty_content(root: Path, tags: dict[str, tuple[str, str]], people: dict[str, tuple[str, str]]) -> Path:
    """A fresh root/content with its registries: tag id → (name, description), person id → (ko, en)."""
    content = root / "content"
    if content.exists():
        shutil.rmtree(content)
    (content / "notes").mkdir(parents=True)
    (content / "tags.yml").write_text(
        "".join(f"{t}:\n  name: {name}\n  description: {about}\n" for t, (name, about) in tags.items()),
        encoding="utf-8")
    (content / "people.yml").write_text(
        "".join(f"{p}:\n  ko: {ko}\n  en: {en}\n" for p, (ko, en) in people.items()), encoding="utf-8")
    return content


def _place(content: Path, rng: random.Random, i: int) -> tuple[dt.date, str, Path]:
    """A random date in 2015–2024, the note's slug, and its (created) year folder."""
    date = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(3650))
    folder = content / "notes" / str(date.year)
    folder.mkdir(exist_ok=True)
    return date, f"note-{i:05d}", folder

def write_content(root: Path, count: int, seed: int = 0, body_paragraphs: int = 8) -> Path:
    """Write ``count`` valid notes under ``root/content`` and return that folder."""
    rng = random.Random(seed)
    content = _empty_content(root, {t: (f"태그 {t}", "합성 태그") for t in TAGS},
                             {p: (f"사람 {p}", f"Person {p}") for p in PEOPLE})
    for i in range(count):
        date, slug, folder = _place(content, rng, i)
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


# --- realistic notes for the site benchmark (bench/site.py) -------------------------------------

NOUNS = (
    "강화학습 신경망 역전파 기울기 손실 함수 모델 데이터 학습률 정책 보상 환경 에이전트 합성곱 순환 "
    "어텐션 트랜스포머 임베딩 토큰 언어 모델 생성 판별자 생성자 잠재 공간 분포 확률 샘플 배치 정규화 "
    "드롭아웃 가중치 편향 활성화 함수 최적화 경사 하강법 모멘텀 논문 실험 결과 성능 정확도 검증 "
    "테스트 과적합 일반화 데이터셋 레이블 분류 회귀 군집 차원 축소 특징 표현 인코더 디코더 "
    "시퀀스 번역 요약 질의응답 추론 계획 탐색 가치 함수 행동 상태 전이 마르코프 몬테카를로 "
    "시뮬레이션 로봇 제어 비전 이미지 영상 음성 인식 텍스트 문장 단어 문맥 구조 알고리즘 구현 코드 "
    "라이브러리 프레임워크 텐서플로 파이토치 넘파이 그래픽카드 메모리 연산 병렬 분산 서버 클러스터 "
    "연구자 저자 강의 튜토리얼 블로그 발표 학회 워크숍 세미나 리뷰 토론 질문 답변 설명 직관 수식 "
    "증명 정리 가정 한계 장점 단점 비교 기준 지표 벤치마크 재현 코드베이스 저장소 버전 설치 환경설정"
).split()
PARTICLES = "이 가 은 는 을 를 의 에 에서 으로 로 와 과 도 만 까지 부터 처럼 보다".split()
ENDINGS = ("이다", "한다", "했다", "된다", "있다", "없다", "보인다", "설명한다", "정리했다", "제안한다",
           "보여 준다", "다룬다", "비교한다", "소개한다", "구현했다")
SYLLABLES = ("가나다라마바사아자차카타파하거너더러머버서어저처커터퍼허"
             "고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후")
CODE_BLOCK = ("  ```python\n  import numpy as np\n\n  def policy_forward(x, w1, w2):\n"
              "      h = np.maximum(0, w1 @ x)  # ReLU\n      return 1.0 / (1.0 + np.exp(-(w2 @ h)))\n  ```")
MATH_BLOCK = ("  $$\n  \\nabla_\\theta J(\\theta) = "
              "\\mathbb{E}\\left[\\sum_t \\nabla_\\theta \\log \\pi_\\theta(a_t|s_t) R\\right]\n  $$")


def _names(rng: random.Random, count: int) -> list[str]:
    """Made-up proper nouns (people, systems, data sets): a vocabulary that grows with the notes."""
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(count)]


def _sentence(rng: random.Random, words: list[str]) -> str:
    n = rng.randint(5, 11)
    eojeols = [rng.choice(words) + rng.choice(PARTICLES) for _ in range(n - 1)]
    if rng.random() < 0.3:
        eojeols.insert(rng.randrange(len(eojeols)), rng.choice(("GAN", "RNN", "LSTM", "DQN", "PPO", "BERT",
                                                                 "ImageNet", "CIFAR-10", "Gym", "ReLU")))
    return " ".join(eojeols) + " " + rng.choice(ENDINGS) + "."


def write_site_content(root: Path, count: int, seed: int = 0, tags: int = 50, people: int = 10,
                       words_per_note: int = 580) -> Path:
    """``count`` notes like real ones: ~580 Korean words each, code and math, 50 tags, 10 people."""
    rng = random.Random(seed)
    tag_ids = [f"tag-{i:02d}" for i in range(tags)]
    person_ids = [f"person-{i:02d}" for i in range(people)]
    content = _empty_content(root, {t: (f"주제 {i}", f"합성 태그 {i}번의 노트") for i, t in enumerate(tag_ids)},
                             {p: (f"연구자 {i}", f"Researcher {i}") for i, p in enumerate(person_ids)})
    vocabulary = NOUNS + _names(rng, max(200, count * 2))
    for i in range(count):
        date, slug, folder = _place(content, rng, i)
        words = NOUNS + rng.sample(vocabulary, 40)  # each note has its own few proper nouns
        paragraphs, total = [], 0
        while total < words_per_note:
            paragraph = " ".join(_sentence(rng, words) for _ in range(rng.randint(3, 6)))
            total += paragraph.count(" ") + 1
            paragraphs.append("  " + paragraph)
        paragraphs.insert(len(paragraphs) // 3, CODE_BLOCK)
        paragraphs.insert(2 * len(paragraphs) // 3, MATH_BLOCK)
        headed = []
        for k, paragraph in enumerate(paragraphs):
            if k % 3 == 0:
                headed.append(f"  ## {rng.choice(NOUNS)}와 {rng.choice(NOUNS)}")
            headed.append(paragraph)
        title = f"{rng.choice(words)}{rng.choice(('으로', '와', '의'))} {rng.choice(NOUNS)} {rng.choice(NOUNS)} ({i})"
        text = (
            f"title: {json.dumps(title, ensure_ascii=False)}\n"
            f"slug: {slug}\ndate: {date.isoformat()}\nkind: {rng.choice(('paper', 'tutorial', 'qa', 'news'))}\n"
            f"tags: [{', '.join(rng.sample(tag_ids, 3))}]\n"
            f"people: [{', '.join(rng.sample(person_ids, 2))}]\n"
            "sources:\n"
            f"  - url: https://arxiv.org/abs/1606.{i % 10000:05d}\n"
            "    title: A synthetic paper\n"
            f"    arxiv: \"1606.{i % 10000:05d}\"\n"
            f"summary: {json.dumps(_sentence(rng, words) + ' ' + _sentence(rng, words), ensure_ascii=False)}\n"
            "body: |\n" + "\n\n".join(headed) + "\n"
        )
        (folder / f"{slug}.yml").write_text(text, encoding="utf-8")
    return content
