"""Training-time augmentation: random horizontal flips, drawn as part of the deterministic batch stream.

A flip mirrors the image, its boxes and masks, and swaps the words "left" and "right" (and
"leftmost" / "rightmost") in its phrases and caption, so "the red star left of the blue ring" still
names the same object, as MDETR and GLIP do for referring expressions.

Which elements are flipped is decided by :class:`FlipBatchSampler`, a wrapper around any batch sampler
of ``(source, index, draw)`` keys (``MixedBatchSampler``): it appends a flip flag to each key, drawn
from a generator seeded by ``(seed, rank, epoch, batch)``, so a run's flips are as reproducible as its
sources and indices, whatever the number of DataLoader workers. :class:`FlippingDataset` wraps the
dataset (``MixedDataset``) to read those ``(source, index, draw, flip)`` keys.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch.utils.data
from PIL import Image

from training.data.sample import Sample

_TAG_FLIP = 2  # keeps this stream independent of MixedBatchSampler's (tags 0 and 1) for one seed
_LEFT_RIGHT = re.compile(r"\b(left|right)(most)?\b", re.IGNORECASE)
_MIRROR = {"left": "right", "right": "left"}


def swap_left_right(text: str) -> str:
    """The text with "left" and "right" exchanged (case kept, "-most" forms too; "leftover" untouched)."""

    def mirrored(match: re.Match) -> str:
        word = match.group(1)
        swapped = _MIRROR[word.lower()]
        if word.isupper():
            swapped = swapped.upper()
        elif word[0].isupper():
            swapped = swapped.capitalize()
        return swapped + (match.group(2) or "")

    return _LEFT_RIGHT.sub(mirrored, text)


def horizontal_flip(sample: Sample) -> Sample:
    """The sample mirrored left to right: image, boxes (x1, x2 = W - x2, W - x1), masks, and the
    spatial words of its phrases, object captions and caption. The input is not modified."""
    width = sample.image.width
    boxes = sample.boxes_xyxy.copy()
    boxes[:, [0, 2]] = width - sample.boxes_xyxy[:, [2, 0]]
    masks = None if sample.masks is None else np.ascontiguousarray(np.asarray(sample.masks)[:, :, ::-1])
    return dataclasses.replace(
        sample,
        image=sample.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        boxes_xyxy=boxes,
        masks=masks,
        phrases=[swap_left_right(p) for p in sample.phrases],
        object_captions=[swap_left_right(p) for p in sample.object_captions],
        caption=None if sample.caption is None else swap_left_right(sample.caption),
    )


class FlipBatchSampler:
    """Wraps a batch sampler of ``(source, index, ...)`` keys and appends a flip flag to each key, True
    with probability ``probability``, from a generator seeded by (seed, rank, epoch, batch).

    ``set_epoch`` and ``len`` pass through to the wrapped sampler.
    """

    def __init__(self, batches, probability: float, seed: int = 0, rank: int = 0) -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"the flip probability must be in [0, 1], got {probability}")
        self.batches = batches
        self.probability = float(probability)
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple]]:
        for b, batch in enumerate(self.batches):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _TAG_FLIP, self.rank, self.epoch, b]))
            flips = rng.random(len(batch)) < self.probability
            yield [(*key, bool(flip)) for key, flip in zip(batch, flips)]


class FlippingDataset(torch.utils.data.Dataset):
    """Wraps a dataset keyed by ``(source, index, ...)`` tuples; ``dataset[(*key, flip)]`` is the item
    ``dataset[key]``, horizontally flipped when ``flip`` (a :class:`Sample`)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple) -> Any:
        *inner, flip = key
        sample = self.dataset[tuple(inner)]
        return horizontal_flip(sample) if flip else sample
