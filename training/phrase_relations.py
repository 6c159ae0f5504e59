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
    words of one are a subset of the other's (so both may describe the same object).

    One matrix product: with ``R`` (rows x words) and ``C`` (columns x words) the 0/1 word incidence,
    ``(R @ C.T)[i, j]`` counts the shared words, and a phrase's words are a subset of the other's
    exactly when that count equals its own word count.
    """
    row_words = [content_words(p) for p in rows]
    column_words = [content_words(p) for p in columns]
    word_ids: dict[str, int] = {}
    for words in row_words + column_words:
        for word in words:
            word_ids.setdefault(word, len(word_ids))
    row_incidence = _incidence(row_words, word_ids)  # (R, W)
    column_incidence = _incidence(column_words, word_ids)  # (C, W)
    shared = row_incidence @ column_incidence.T  # (R, C)
    row_inside = shared == row_incidence.sum(1)[:, None]
    column_inside = shared == column_incidence.sum(1)[None, :]
    string_ids: dict[str, int] = {}
    row_ids = np.array([string_ids.setdefault(p, len(string_ids)) for p in rows], dtype=np.int64)
    column_ids = np.array([string_ids.setdefault(p, len(string_ids)) for p in columns], dtype=np.int64)
    return (row_inside | column_inside) & (row_ids[:, None] != column_ids[None, :])


def _incidence(phrase_words: list[frozenset[str]], word_ids: dict[str, int]) -> np.ndarray:
    """(len(phrase_words), len(word_ids)) float32: 1 where the phrase holds the word (float for BLAS;
    the counts it feeds stay exact integers)."""
    out = np.zeros((len(phrase_words), len(word_ids)), dtype=np.float32)
    phrase_index = [i for i, words in enumerate(phrase_words) for _ in words]
    word_index = [word_ids[w] for words in phrase_words for w in words]
    out[phrase_index, word_index] = 1
    return out
