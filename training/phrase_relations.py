"""Which phrases the alignment loss must not use as negatives for one another.

Two different strings can both be true of one object: "a red star" and "a small red star" describe
the same small red star. Contrastive alignment that treats every other phrase as a negative would push
that star away from whichever of the two it was not labelled with this time. The rule here: two
different phrases *overlap* when the content words of one (lower-cased, articles dropped) are all
among the other's. An overlapping pair is neither positive nor negative; the loss ignores it.

The rule is lexical, so it also ignores some true negatives ("dog" against "hot dog"): it only ever
removes terms from the loss, never adds a wrong target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_ARTICLES = frozenset({"a", "an", "the"})
_WORD = re.compile(r"[^\W_]+")


@lru_cache(maxsize=65536)
def content_words(phrase: str) -> frozenset[str]:
    """The phrase's words, lower-cased, without articles: "A small red star" -> {small, red, star}."""
    return frozenset(_WORD.findall(phrase.lower())) - _ARTICLES


def overlapping(rows: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """(len(rows), len(columns)) bool: True where the two phrases differ as strings but the content
    words of one are a subset of the other's (so both may describe the same object)."""
    row_words = [content_words(p) for p in rows]
    column_words = [content_words(p) for p in columns]
    out = np.zeros((len(rows), len(columns)), dtype=bool)
    for i, (row, words) in enumerate(zip(rows, row_words)):
        for j, (column, other) in enumerate(zip(columns, column_words)):
            out[i, j] = row != column and (words <= other or other <= words)
    return out
