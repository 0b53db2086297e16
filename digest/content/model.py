"""The content model: typed records read from YAML, in one place.

The validator, the JSON Schema (``digest schema``), the site, the feeds and
the email all read these records. Each field's metadata says what it is for
(``doc``) and, where it has one, the rule its value follows; the validator and
the schema generator both walk the same dataclass fields.

To add a kind of note, add one line to ``KINDS``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

SEOUL = ZoneInfo("Asia/Seoul")  # notes' dates, weeks and mail dates are Korean

# id -> Korean label shown on the site and in emails. Extend here, nowhere else.
KINDS: dict[str, str] = {
    "paper": "논문",
    "qa": "질의응답",
    "tutorial": "튜토리얼",
    "course": "강의",
    "event": "행사",
    "news": "소식",
    "translation": "번역",
}

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
ID_RE = SLUG_RE
# New-style arXiv ids (0704.0001 on) and old-style ones (hep-th/9901001).
ARXIV_RE = re.compile(r"^(?:[0-9]{2}(?:0[1-9]|1[0-2])\.[0-9]{4,5}|[a-z-]+(?:\.[A-Z]{2})?/[0-9]{7})(?:v[0-9]+)?$")


def spec(doc: str, *, pattern: re.Pattern | None = None, enum: tuple[str, ...] | None = None,
         fmt: str | None = None, example: str = "", min_items: int = 0, key_pattern: re.Pattern | None = None,
         registry: str = "", default=..., default_factory=...):
    """A dataclass field with the metadata the validator and schema share. ``registry``: ids of that
    registry file, which the validator checks against it (with suggestions) rather than by pattern."""
    meta = {"doc": doc, "pattern": pattern, "enum": enum, "format": fmt, "example": example,
            "min_items": min_items, "key_pattern": key_pattern, "registry": registry}
    kwargs = {"metadata": meta}
    if default is not ...:
        kwargs["default"] = default
    if default_factory is not ...:
        kwargs["default_factory"] = default_factory
    return field(**kwargs)


@dataclass(frozen=True)
class Source:
    url: str = spec("web address of the source, http or https", fmt="uri",
                    example="https://arxiv.org/abs/1606.04080")
    title: str = spec("title of the source as published", example="Matching Networks for One Shot Learning")
    arxiv: str | None = spec("arXiv id, e.g. 1606.04080 (no 'arXiv:' prefix)", pattern=ARXIV_RE,
                             example="1606.04080", default=None)
    date: dt.date | None = spec("publication date, YYYY-MM-DD", default=None, example="2016-06-13")


@dataclass(frozen=True)
class Note:
    title: str = spec("Korean title of the note", example="매칭 네트워크로 원샷 학습하기")
    slug: str = spec("URL name: lowercase letters, digits and hyphens; equals the file name",
                     pattern=SLUG_RE, example="matching-networks")
    date: dt.date = spec("date of the note, YYYY-MM-DD; its year is the folder name", example="2016-08-15")
    kind: str = spec("kind of note", enum=tuple(KINDS), example="paper")
    tags: tuple[str, ...] = spec("tag ids from content/tags.yml", pattern=ID_RE, example="[reinforcement-learning]",
                                 registry="tags")
    people: tuple[str, ...] = spec("person ids from content/people.yml", pattern=ID_RE,
                                   example="[andrej-karpathy]", registry="people")
    sources: tuple[Source, ...] = spec("what the note is about: at least one link", min_items=1,
                                     example="[{url: https://..., title: ...}]")
    summary: str = spec("one or two Korean sentences for cards, feeds and email", example="...")
    body: str = spec("the note in Markdown (Korean)", example="|\n  본문")
    refs: tuple[str, ...] = spec("reference implementations whose results the body cites",
                                 pattern=ID_RE, default=(), example="[backprop-gates]")
    series: str | None = spec("name of a series the note belongs to", default=None)
    draft: bool = spec("true keeps the note off the site, feeds and email", default=False)
    updated: dt.date | None = spec("date of the last substantial revision, YYYY-MM-DD", default=None)
    # Where the record came from; not YAML fields.
    path: str = field(default="", compare=False, metadata={"internal": True})

    @property
    def url(self) -> str:
        """Site-relative URL, stable: /notes/<yyyy>/<slug>/."""
        return f"notes/{self.date.year}/{self.slug}/"

    @property
    def kind_label(self) -> str:
        return KINDS[self.kind]


@dataclass(frozen=True)
class Tag:
    name: str = spec("name shown on the site, e.g. 'Andrej Karpathy' or '강화학습'")
    description: str = spec("one Korean sentence: what notes with this tag are about", default="")
    id: str = field(default="", metadata={"internal": True})
    path: str = field(default="", compare=False, metadata={"internal": True})


@dataclass(frozen=True)
class Person:
    ko: str = spec("name in Hangul, e.g. 안드레이 카패시")
    en: str = spec("name in Latin letters, e.g. Andrej Karpathy")
    url: str | None = spec("home page, http or https", fmt="uri", default=None)
    id: str = field(default="", metadata={"internal": True})
    path: str = field(default="", compare=False, metadata={"internal": True})


METRIC_RE = re.compile(r"^[a-z0-9_]+(?:\.[a-z0-9_]+)*$")
FIGURE_RE = re.compile(r"^[a-z0-9_-]+$")
PROFILE_RE = re.compile(r"^(quick|full)$")
TOLERANCE_RE = re.compile(r"^(exact|none|[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?)$")
# A safe subset of Python's format spec: fill/align, sign, width, grouping, precision, type.
NUMBER_FORMAT_RE = re.compile(r"^[<>=^]?[+\- ]?#?0?\d{0,2}[,_]?(?:\.\d{1,2})?[eEfFgGd%]?$")
PROFILES = ("quick", "full")


@dataclass(frozen=True)
class ProfileSpec:
    timeout: int = spec("seconds before the run is stopped and reported as failed", example="300")


@dataclass(frozen=True)
class MetricSpec:
    tolerance: str = spec("how far a quick rerun may drift from the committed value: exact, none "
                          "(not compared: timings), or an absolute band such as 0.05",
                          pattern=TOLERANCE_RE, example="exact")

    @property
    def band(self) -> float | None:
        """0.0 for exact, None when not compared, else the absolute band."""
        if self.tolerance == "none":
            return None
        return 0.0 if self.tolerance == "exact" else float(self.tolerance)


@dataclass(frozen=True)
class ProgressMetric:
    label: str = spec("Korean label shown beside the value", example="에피소드")
    fmt: str = spec("number format, as in ref(..., fmt=...)", pattern=NUMBER_FORMAT_RE, default="",
                    example=",d")


@dataclass(frozen=True)
class FigureSpec:
    label: str = spec("Korean caption shown under the figure, and its alt text for readers who "
                      "cannot see it", example="학습 곡선: 에피소드마다의 러닝 리워드")


@dataclass(frozen=True)
class ProgressSpec:
    metrics: dict[str, ProgressMetric] = spec("metrics a checkpoint can report (a subset of 'metrics')",
                                              key_pattern=METRIC_RE, example="{episodes: {label: 에피소드}}")
    figures: dict[str, FigureSpec] = spec("figures drawn from a checkpoint (a subset of 'figures'), each "
                                          "with its own caption",
                                          key_pattern=FIGURE_RE, default_factory=dict,
                                          example="{learning_curve: {label: 지금까지의 학습 곡선}}")


@dataclass(frozen=True)
class RefManifest:
    """content/refs/<name>/ref.yml: what a reference implementation runs and produces."""

    title: str = spec("Korean title of the reference", example="게이트를 통한 역전파")
    entry: str = spec("the Python file to run, inside the reference folder",
                      pattern=re.compile(r"^[A-Za-z0-9_-]+\.py$"), example="gates.py")
    seed: int = spec("seed passed as --seed", example="1")
    profiles: dict[str, ProfileSpec] = spec("quick (CI, every push) and full (the real result)",
                                            key_pattern=PROFILE_RE, example="{quick: {timeout: 300}}")
    metrics: dict[str, MetricSpec] = spec("every metric the run must produce, with its tolerance",
                                          key_pattern=METRIC_RE, example="{accuracy: {tolerance: 0.05}}")
    figures: dict[str, FigureSpec] = spec("figures the run must produce (.png and .svg, or .gif), by file "
                                          "stem, each with its Korean caption",
                                          key_pattern=FIGURE_RE, default_factory=dict,
                                          example="{learning_curve: {label: 학습 곡선}}")
    resumable: bool = spec("true for long runs that checkpoint into state/<profile>/ and accept --resume",
                           default=False)
    checkpoint_format: int | None = spec(
        "for resumable runs: the version of what a checkpoint holds and means; --resume continues "
        "checkpoints of other code with the same format (bump it when the algorithm or the checkpoint "
        "changes); without it only the code that wrote a checkpoint may continue it",
        default=None, example="1")
    progress: ProgressSpec | None = spec(
        "for resumable runs: what a stopped run's checkpoint shows on the site while training goes on "
        "(the script's --progress mode draws it; cite it with ref_progress)", default=None)
    packages: tuple[str, ...] = spec("packages whose versions are recorded with the results",
                                     default=("numpy", "matplotlib"), example="[numpy, gymnasium]")
    name: str = field(default="", metadata={"internal": True})
    path: str = field(default="", compare=False, metadata={"internal": True})


WEEK_FILE_RE = re.compile(r"^([0-9]{4})-W([0-9]{2})$")


@dataclass(frozen=True)
class IssueIntro:
    """content/digest/<yyyy>-W<ww>.yml: the editor's optional words for one week's email issue."""

    intro: str = spec("a few short Korean paragraphs opening the issue, plain text; a blank line "
                      "between paragraphs", example="|\n  이번 주에는 ...")
    title: str | None = spec("one-line headline, used as the email subject (default: the first note's "
                             "title)", default=None, example="강화학습으로 퐁 배우기")
    week: str = field(default="", metadata={"internal": True})  # "2016-W26", from the file name
    path: str = field(default="", compare=False, metadata={"internal": True})


@dataclass(frozen=True)
class Content:
    """Everything under content/, validated: what every later stage reads."""

    root: Path
    notes: tuple[Note, ...]  # published and drafts, newest first
    tags: dict[str, Tag]
    people: dict[str, Person]
    intros: dict[str, IssueIntro] = field(default_factory=dict)  # ISO week "2016-W26" -> intro

    @property
    def published(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if not n.draft)
