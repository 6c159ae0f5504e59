"""The one record every dataset loader yields, whatever its source format."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

#: What a sample can supervise. A loader sets the tasks its annotations support; the criterion
#: computes a loss only for samples that carry the task.
TASKS = ("detection", "mask", "grounding", "caption", "classification")


@dataclass
class Sample:
    """One image and its annotations.

    image:        PIL RGB image (already decoded).
    image_id:     the id in the source dataset (COCO image id, file stem, ...).
    source:       the dataset name ("coco", "lvis", "refcoco", "cc3m", "imagenet", "synthetic").
    tasks:        the subset of ``TASKS`` these annotations support.
    boxes_xyxy:   (N, 4) float32, absolute pixels of ``image``, x1 < x2, y1 < y2.
    category_ids: (N,) int64, index into the loader's ``categories`` list (not the COCO id).
    masks:        (N, H, W) uint8 {0, 1} per object, or None when the source has no masks.
    phrases:      N strings describing each object ("a small red star", a referring expression,
                  or the category name when nothing better exists).
    object_captions: N strings the caption head learns to say for each object, or empty: the
                  phrases then serve (they differ when a loader draws each phrase from several
                  descriptions, "a red star" or "a small red star", and keeps the fullest as the caption).
    caption:      an image-level caption, or None.
    class_id:     image-level class index (ImageNet-style), or None.
    """

    image: Image.Image
    image_id: int | str
    source: str
    tasks: tuple[str, ...]
    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    category_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    masks: np.ndarray | None = None
    phrases: list[str] = field(default_factory=list)
    object_captions: list[str] = field(default_factory=list)
    caption: str | None = None
    class_id: int | None = None

    def __post_init__(self) -> None:
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        self.category_ids = np.asarray(self.category_ids, dtype=np.int64).reshape(-1)
        n = len(self.boxes_xyxy)
        if len(self.category_ids) != n:
            raise ValueError(f"{n} boxes but {len(self.category_ids)} category ids")
        if self.phrases and len(self.phrases) != n:
            raise ValueError(f"{n} boxes but {len(self.phrases)} phrases")
        if self.object_captions and len(self.object_captions) != n:
            raise ValueError(f"{n} boxes but {len(self.object_captions)} object captions")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"{n} boxes but {len(self.masks)} masks")
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; known: {TASKS}")

    @property
    def num_objects(self) -> int:
        return len(self.boxes_xyxy)
