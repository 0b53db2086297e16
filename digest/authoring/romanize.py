"""Hangul → Latin letters (Revised Romanization, syllable by syllable), for slugs.

Sound changes across syllables are ignored: a slug must be readable and
stable, not a pronunciation guide.
"""

from __future__ import annotations

import re
import unicodedata

INITIALS = "g kk n d tt r m b pp s ss - j jj ch k t p h".split()
MEDIALS = "a ae ya yae eo e yeo ye o wa wae oe yo u wo we wi yu eu ui i".split()
FINALS = "- k k k n n n t l k m l l l p l m p p t t ng t t k t p t".split()
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def romanize(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if HANGUL_FIRST <= code <= HANGUL_LAST:
            index = code - HANGUL_FIRST
            initial, rest = divmod(index, 21 * 28)
            medial, final = divmod(rest, 28)
            parts = (INITIALS[initial], MEDIALS[medial], FINALS[final])
            out.append("".join(p for p in parts if p != "-"))
            if final:  # keep syllables apart so 'an-a' and 'a-na' differ
                out.append("")
        else:
            out.append(ch)
    return "".join(out)


def slugify(text: str, max_words: int = 8) -> str:
    """A URL name from a (Korean) title: lowercase ASCII words joined by hyphens."""
    latin = unicodedata.normalize("NFKD", romanize(text)).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", latin.lower())
    return "-".join(words[:max_words])
