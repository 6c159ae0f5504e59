"""The result type every search returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Hit:
    """One object returned by a search.

    ``box_xyxy`` is in absolute pixels of the original image (after EXIF orientation).
    ``similarity`` is the inner product of the query and object embeddings (cosine, in [-1, 1]);
    ``det_score`` is the detector's confidence for the object, in [0, 1].
    ``image_width``/``image_height``: the image's size in pixels (after EXIF orientation), the
    frame ``box_xyxy`` is in; None where the index does not know it.
    """

    rank: int
    object_id: int
    image_id: int
    path: str
    box_xyxy: tuple[float, float, float, float]
    similarity: float
    det_score: float
    label: str
    caption: str | None
    image_width: int | None = None
    image_height: int | None = None

    def to_dict(self) -> dict:
        row = asdict(self)
        row["box_xyxy"] = list(self.box_xyxy)
        return row
