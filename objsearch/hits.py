"""The result type every search returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Hit:
    """One object returned by a search.

    ``box_xyxy`` is in absolute pixels of the original image (after EXIF orientation).
    ``similarity`` is the inner product of the query and object embeddings (cosine, in [-1, 1]);
    None in a keyword search, which embeds nothing.
    ``keyword_score``: the BM25 score of the object's label and caption for the query's words
    (higher is better; ``objsearch.store.keywords``), in keyword and hybrid searches; None where
    the words did not match it.
    ``fused_score``: in a hybrid search, the reciprocal-rank-fusion score the hits are ranked by
    (``objsearch.fusion``); None otherwise.
    ``det_score`` is the detector's confidence for the object, in [0, 1].
    ``image_width``/``image_height``: the image's size in pixels (after EXIF orientation), the
    frame ``box_xyxy`` is in; None where the index does not know it.
    """

    rank: int
    object_id: int
    image_id: int
    path: str
    box_xyxy: tuple[float, float, float, float]
    similarity: float | None
    det_score: float
    label: str
    caption: str | None
    image_width: int | None = None
    image_height: int | None = None
    keyword_score: float | None = None
    fused_score: float | None = None

    @property
    def ranking_score(self) -> float:
        """The score the search ranked this hit by: fused, else similarity, else keyword score."""
        for score in (self.fused_score, self.similarity, self.keyword_score):
            if score is not None:
                return score
        raise ValueError("a hit without any score")

    def to_dict(self) -> dict:
        row = asdict(self)
        row["box_xyxy"] = list(self.box_xyxy)
        return row
