"""Composed queries: several terms, each weighted, added or subtracted.

    2:golden retriever + @1234 - @photos/pool.jpg[10,20,200,300] - grass

Grammar (whitespace around ``+`` and ``-`` is what makes them operators: ``t-shirt`` is one word):

    query  := ["-"] term (("+" | "-") term)*
    term   := [weight ":"] atom                 weight: a number, e.g. 2, 0.5
    atom   := "@" digits                        an indexed object, by id
            | "@" path ["[" x1,y1,x2,y2 "]"]    a region of an image file (pixels); no box = the whole image
            | text                              anything else: words, embedded as text

How terms combine: each term's embedding (unit length) is multiplied by its signed weight, the
results are summed and the sum is scaled back to unit length. Because every stored embedding is
unit length too and the index ranks by inner product, this ranks objects by the weighted sum of
their cosine similarities to the terms: a positive term pulls, a negative one pushes away, and a
weight of 2 counts twice. (It is also what rclip does.) A query needs one positive term at least.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from objsearch.errors import BadQuery

MAX_TERMS = 16
_OPERATOR = re.compile(r"(?:^|(?<=\s))([+-])(?=\s|$)")
_WEIGHT = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*:")
_OBJECT_ID = re.compile(r"[0-9]+")
MIN_WEIGHT, MAX_WEIGHT = 1e-3, 1e3
MAX_OBJECT_ID = 2**63 - 1
_BOX = re.compile(r"\[([^\[\]]*)\]\s*$")


@dataclass(frozen=True)
class Term:
    """One term: ``weight`` (signed) times the embedding of ``text``, of object ``object_id``, or of
    the region ``box`` (pixels, xyxy; None = the whole image) of the image file ``image``."""

    weight: float = 1.0
    text: str | None = None
    object_id: int | None = None
    image: str | None = None
    box: tuple[float, float, float, float] | None = None

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "object" if self.object_id is not None else "region"

    def __str__(self) -> str:
        atom = self.text if self.text is not None else f"@{self.object_id}" if self.object_id is not None else (
            f"@{self.image}" + ("" if self.box is None else "[" + ",".join(f"{v:g}" for v in self.box) + "]"))
        return f"{abs(self.weight):g}:{atom}"


@dataclass(frozen=True)
class Query:
    """Terms to combine (see the module's docstring). Build one with ``Query.parse`` or
    ``Query.text("dog") + Query.object(12) - Query.text("grass", weight=0.5)``."""

    terms: tuple[Term, ...] = field(default_factory=tuple)

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def text(cls, text: str, weight: float = 1.0) -> "Query":
        return cls((Term(weight=_checked_weight(weight), text=text),))

    @classmethod
    def object(cls, object_id: int, weight: float = 1.0) -> "Query":
        return cls((Term(weight=_checked_weight(weight), object_id=int(object_id)),))

    @classmethod
    def region(cls, image: str, box: tuple[float, float, float, float] | None = None, weight: float = 1.0) -> "Query":
        return cls((Term(weight=_checked_weight(weight), image=str(image), box=None if box is None else tuple(float(v) for v in box)),))

    def __add__(self, other: "Query") -> "Query":
        return Query(self.terms + other.terms)

    def __sub__(self, other: "Query") -> "Query":
        return Query(self.terms + tuple(Term(-t.weight, t.text, t.object_id, t.image, t.box) for t in other.terms))

    def __str__(self) -> str:
        parts = []
        for i, term in enumerate(self.terms):
            sign = "-" if term.weight < 0 else "+"
            parts.append(str(term) if i == 0 and sign == "+" else f"{sign} {term}")
        return " ".join(parts)

    def check(self) -> "Query":
        """BadQuery unless the query has 1 to MAX_TERMS terms, one of them positive."""
        if not self.terms:
            raise BadQuery("the query is empty")
        if len(self.terms) > MAX_TERMS:
            raise BadQuery(f"a query has at most {MAX_TERMS} terms; this one has {len(self.terms)}")
        if not any(t.weight > 0 for t in self.terms):
            raise BadQuery("a query needs at least one positive term (what to find), not only terms to avoid")
        return self

    # -- parsing -----------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "Query":
        """The query ``text`` in the grammar above; BadQuery (one line, pointing at the character)
        when it does not follow it."""
        if not text.strip():
            raise BadQuery("the query text is empty")
        terms = []
        sign, start, operator_at = 1.0, 0, 0
        pieces = list(_OPERATOR.finditer(text))
        if pieces and not text[: pieces[0].start()].strip() and pieces[0].group(1) == "-":
            sign, start, operator_at = -1.0, pieces[0].end(), pieces[0].start()
            pieces = pieces[1:]
        for match in [*pieces, None]:
            end = match.start() if match else len(text)
            if not text[start:end].strip():
                raise _error(text, operator_at, "an empty term (two operators in a row, or one at an end)")
            terms.append(_parse_term(text, start, end, sign))
            if match:
                sign, start, operator_at = (1.0 if match.group(1) == "+" else -1.0), match.end(), match.start()
        return cls(tuple(terms)).check()


def combine(embeddings: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The query embedding of terms: ``embeddings`` (T, D) unit rows, ``weights`` (T,) signed ->
    (D,) float32, unit length (one term: its embedding unchanged). BadQuery when terms cancel out."""
    if len(embeddings) == 1:  # one term: its embedding as the model gives it (as a plain text search)
        return np.asarray(embeddings[0], np.float32)
    total = (np.asarray(weights, np.float32)[:, None] * np.asarray(embeddings, np.float32)).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise BadQuery("the query's terms cancel each other out")
    return total / norm


def _parse_term(text: str, start: int, end: int, sign: float) -> Term:
    chunk = text[start:end]
    offset = start + len(chunk) - len(chunk.lstrip())
    weight = 1.0
    if found := _WEIGHT.match(chunk):
        try:
            weight = _checked_weight(float(found.group(1)))
        except BadQuery as exc:
            raise _error(text, start + found.start(1), str(exc)) from None
        offset = start + found.end()
        chunk = text[offset:end]
        if not chunk.strip():
            raise _error(text, offset, "a weight needs a term after its ':'")
        offset += len(chunk) - len(chunk.lstrip())
    atom = text[offset:end].strip()
    if not atom.startswith("@"):
        return Term(weight=sign * weight, text=atom)
    reference = atom[1:]
    if _OBJECT_ID.fullmatch(reference):
        if int(reference) > MAX_OBJECT_ID:
            raise _error(text, offset + 1, "no object has so large an id")
        return Term(weight=sign * weight, object_id=int(reference))
    box = None
    if found := _BOX.search(reference):
        box_at = offset + 1 + found.start(1)
        try:
            values = tuple(float(v) for v in found.group(1).split(","))
        except ValueError:
            values = ()
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise _error(text, box_at, "a box is four numbers x1,y1,x2,y2 (pixels)")
        box = values
        reference = reference[: found.start()].rstrip()
    if not reference:
        raise _error(text, offset + 1, "'@' wants an object id or an image path")
    return Term(weight=sign * weight, image=reference, box=box)


def _checked_weight(weight: float) -> float:
    if not math.isfinite(weight) or weight <= 0:
        raise BadQuery(f"a weight is a positive number (use '-' to push a term away), got {weight:g}")
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise BadQuery(f"a weight is between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}, got {weight:g}")
    return float(weight)


def _error(text: str, position: int, message: str) -> BadQuery:
    """BadQuery that shows where: 'bad query at character 7 ("2x:dog"): ...'."""
    snippet = text[max(0, position - 10): position + 10]
    return BadQuery(f"bad query at character {position + 1} (near {snippet!r}): {message}")
