"""Samples -> a model batch: letterboxed uint8 images and per-image targets in model units."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from objsearch.box_ops import xyxy_to_cxcywh
from objsearch.model.preprocess import letterbox, letterbox_masks
from training.data.sample import Sample


@dataclass
class Target:
    """One image's supervision, in the model's units.

    boxes:        (n, 4) float32 normalised cxcywh on the square input.
    labels:       (n,) int64 index into ``category_names`` (-1: unknown).
    masks:        (n, M, M) float32 in [0, 1] over the whole square input, or None.
    phrases:      n object descriptions (may be empty when the source has none).
    object_captions: n caption-head targets, or empty (the phrases serve).
    category_names: the source's label set (zero-shot classification targets).
    tasks:        what this sample supervises (see training.data.sample.TASKS).
    scale:        model-input pixels per original pixel.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    phrases: list[str]
    category_names: list[str]
    tasks: frozenset[str]
    source: str
    image_id: int | str
    scale: float
    caption: str | None = None
    class_id: int | None = None
    object_captions: list[str] = field(default_factory=list)
    extras: dict = field(default_factory=dict)

    @property
    def caption_targets(self) -> list[str]:
        """n texts the caption head learns: ``object_captions``, or the phrases when there are none."""
        return self.object_captions or self.phrases


class Collator:
    """``collate(samples)`` -> {"images": (B, 3, S, S) uint8, "targets": list[Target]}.

    ``category_names``: source name -> its category list, so targets carry their label set.
    """

    def __init__(self, image_size: int, mask_size: int, category_names: dict[str, list[str]]) -> None:
        self.image_size = image_size
        self.mask_size = mask_size
        self.category_names = category_names

    def target_for(self, sample: Sample, scale: float) -> Target:
        size = self.image_size
        boxes = xyxy_to_cxcywh(sample.boxes_xyxy * scale / size) if sample.num_objects else np.zeros((0, 4))
        masks = None
        if sample.masks is not None and "mask" in sample.tasks:
            masks = letterbox_masks(np.asarray(sample.masks, dtype=np.uint8), scale, size, self.mask_size)
        return Target(
            boxes=torch.as_tensor(np.clip(boxes, 0, 1), dtype=torch.float32),
            labels=torch.as_tensor(sample.category_ids, dtype=torch.long),
            masks=masks,
            phrases=list(sample.phrases),
            object_captions=list(sample.object_captions),
            category_names=self.category_names.get(sample.source, []),
            tasks=frozenset(sample.tasks),
            source=sample.source,
            image_id=sample.image_id,
            scale=scale,
            caption=sample.caption,
            class_id=sample.class_id,
        )

    def __call__(self, samples: list[Sample]) -> dict:
        images, targets = [], []
        for sample in samples:
            tensor, scale = letterbox(np.asarray(sample.image.convert("RGB")), self.image_size)
            images.append(tensor)
            targets.append(self.target_for(sample, scale))
        return {"images": torch.stack(images), "targets": targets}
