"""Authors of a paper or page → person ids of content/people.yml, and entries for new people.

Names are matched by their Latin spelling (``en``), ignoring case, accents,
punctuation and middle names or initials: "Richard Sutton" finds "Richard S.
Sutton". Unknown authors become proposed registry entries, printed as YAML to
paste or appended to people.yml with ``digest new --add-people``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from digest.content.model import ID_RE, Person
from digest.content.yamlread import Map, decode, parse
from digest.errors import UsageError, YamlInputError
from digest.templates import environment

# Letters NFKD does not split into ASCII plus an accent.
_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss",
                       "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th", "ı": "i"})


@dataclass(frozen=True)
class NewPerson:
    """A registry entry to add: id, Latin name as published, Hangul name (Latin until someone writes it)."""

    id: str
    en: str
    ko: str

    @property
    def ko_missing(self) -> bool:
        return self.ko == self.en


def fold(name: str) -> str:
    """Lowercase ASCII words of a name: 'Aäron van den Oord' → 'aaron van den oord'."""
    ascii_ = unicodedata.normalize("NFKD", name.translate(_FOLD)).encode("ascii", "ignore").decode()
    return " ".join(re.findall(r"[a-z0-9]+", ascii_.lower()))


def _short(folded: str) -> str:
    """First and last word, so middle names and initials do not matter."""
    words = folded.split()
    return f"{words[0]} {words[-1]}" if len(words) > 1 else folded


def match(authors: list[str] | tuple[str, ...], people: dict[str, Person]) -> tuple[list[str], list[str]]:
    """(ids of registered people, in author order; names of authors not in the registry)."""
    full = {fold(p.en): ident for ident, p in people.items()}
    short: dict[str, str | None] = {}
    for ident, person in people.items():
        key = _short(fold(person.en))
        short[key] = None if key in short and short[key] != ident else ident  # ambiguous: no match
    found, unknown = [], []
    for name in authors:
        folded = fold(name)
        ident = full.get(folded) or short.get(_short(folded))
        if ident and ident not in found:
            found.append(ident)
        elif not ident and folded:
            unknown.append(name)
    return found, unknown


def person_id(name: str, taken) -> str:
    """An id for a new person: 'Charles Blundell' → 'charles-blundell', '-2' added if taken."""
    base = "-".join(fold(name).split()) or "person"
    ident, n = base, 2
    while ident in taken:
        ident, n = f"{base}-{n}", n + 1
    return ident


def propose(names: list[str], people: dict[str, Person], ko_names: dict[str, str] | None = None) -> list[NewPerson]:
    taken = set(people)
    proposed = []
    for name in names:
        ident = person_id(name, taken)
        taken.add(ident)
        ko = (ko_names or {}).get(name, "").strip() or name
        proposed.append(NewPerson(ident, name, ko))
    return proposed


def render(entries: list[NewPerson]) -> str:
    return environment().get_template("people_new.yml.j2").render(entries=entries).lstrip("\n")


def appended_text(path: Path, entries: list[NewPerson]) -> str:
    """people.yml with ``entries`` added at the end, checked to read back as the same registry plus them."""
    shown = path.as_posix()
    try:
        old = decode(shown, path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {shown}: {exc.strerror}") from None
    text = old + ("" if old.endswith("\n") or not old else "\n") + render(entries)
    try:
        root = parse(shown, text)
    except YamlInputError as exc:  # people.yml itself does not read well: `digest check` says why
        raise UsageError(f"cannot add people to {shown}: {exc}; fix it (see `digest check`), then retry") from None
    if not isinstance(root, Map) or any(e.id not in root.entries or not ID_RE.fullmatch(e.id) for e in entries):
        raise UsageError(f"{shown} is not a mapping of id → person; fix it, then retry")
    return text
