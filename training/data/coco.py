"""COCO instances format: ``instances_*.json`` (+ optional ``captions_*.json``) -> one :class:`Sample` per image.

The format (https://cocodataset.org/#format-data): ``images`` ``[{id, file_name, height, width}]``,
``annotations`` ``[{id, image_id, category_id, bbox: [x, y, w, h] pixels, segmentation, iscrowd}]``,
``categories`` ``[{id, name}]``. Category ids may be sparse (1..90 in COCO): they become contiguous
indices in sorted-id order, ``categories[i]`` names index ``i`` and ``category_coco_ids[i]`` is the
original id.

Dropped from the targets, counted and logged once at construction:
- crowd annotations (``iscrowd=1``): one box around a whole crowd is not one object, and one-to-one
  set matching would teach the model to draw such boxes;
- boxes whose width or height is <= ``MIN_BOX_SIDE`` px after clipping to the image.
Images whose every annotation was dropped stay in the dataset (as negatives) unless ``skip_empty``.

Images are opened with PIL and converted to RGB without EXIF rotation: the boxes, polygons and the
json's width/height refer to the stored pixels (as in pycocotools and torchvision). A missing file,
an undecodable one, or one whose size disagrees with the json raises ``objsearch.errors.BadImage``
naming the file; nothing is skipped silently, the trainer decides.

This module also holds what the other loaders share: :func:`open_rgb`, :class:`PackedRecords`,
:func:`clean_annotations`, :func:`decode_masks`, :func:`load_annotated_image`, :func:`category_table`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from objsearch.errors import BadImage
from training.data.sample import Sample

log = logging.getLogger(__name__)

#: Tag of the random stream that draws objects' phrases, apart from the one that draws image captions.
_PHRASE_STREAM = 1

PathLike = str | os.PathLike
MIN_BOX_SIDE = 0.5
"""Pixels: a box whose width or height (after clipping to the image) is not above this is dropped."""


def open_rgb(source: PathLike | bytes, name: str | None = None) -> Image.Image:
    """Decode a file (or its bytes, then ``name`` says where they came from) into a PIL RGB image.

    Raises ``BadImage(name, reason)`` when the file is missing or cannot be decoded.
    """
    if name is None:
        name = os.fsdecode(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.convert("RGB")  # convert() loads the pixels, so the file can close
    except FileNotFoundError:
        raise BadImage(name, "file not found") from None
    except Exception as e:  # noqa: BLE001 - Pillow plugins raise OSError, SyntaxError, struct.error, ...
        raise BadImage(name, f"cannot decode image: {' '.join(str(e).split()) or type(e).__name__}") from None


class PackedRecords(Sequence):
    """Picklable records stored as one numpy byte buffer; ``records[i]`` unpickles record ``i``.

    Why: DataLoader workers share the dataset by fork, and merely reading millions of small
    Python objects bumps their reference counts, which copies their memory pages into every
    worker (a 1 GB LVIS index becomes N GB). One byte buffer has no reference counts to touch.
    Same idea as detectron2's ``DatasetFromList(serialize=True)``.
    """

    def __init__(self, records: Iterable[Any]) -> None:
        blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        n = len(self._ends)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range for {n} records")
        i %= n
        start = int(self._ends[i - 1]) if i else 0
        return pickle.loads(self._buffer[start : int(self._ends[i])].tobytes())


def load_json(path: PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def category_table(categories: Sequence[dict]) -> tuple[list[dict], dict[int, int]]:
    """COCO ``categories`` -> (records sorted by id, {original id: contiguous index})."""
    records = sorted(categories, key=lambda c: c["id"])
    return records, {c["id"]: i for i, c in enumerate(records)}


def clean_annotations(
    annotations: Iterable[dict], width: int, height: int, dropped: Counter
) -> tuple[list[dict], np.ndarray]:
    """Drop crowds and degenerate boxes; returns (kept annotations, their ``(N, 4)`` float32 xyxy boxes).

    COCO ``bbox`` is ``[x, y, w, h]`` in pixels; the xyxy box is clipped to ``[0, width] x [0, height]``
    before the ``MIN_BOX_SIDE`` test. ``dropped`` counts what was dropped, by reason.
    """
    kept, boxes = [], []
    for ann in annotations:
        if ann.get("iscrowd", 0):
            dropped["crowd annotations"] += 1
            continue
        x, y, w, h = ann["bbox"]
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x2 - x1 <= MIN_BOX_SIDE or y2 - y1 <= MIN_BOX_SIDE:
            dropped["degenerate boxes"] += 1
            continue
        kept.append(ann)
        boxes.append((x1, y1, x2, y2))
    return kept, np.asarray(boxes, np.float32).reshape(-1, 4)


def segmentation_to_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """One COCO segmentation -> ``(height, width)`` uint8 {0, 1}.

    Accepts polygons (a list of flat ``[x1, y1, x2, y2, ...]`` lists, merged into one mask),
    uncompressed RLE (``counts`` a list of ints) and compressed RLE (``counts`` a string).
    Polygons of fewer than 3 points are ignored (pycocotools would read a 4-number one as a box).
    """
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    elif isinstance(segmentation, dict):
        rle = segmentation
    else:
        raise TypeError(f"unknown segmentation type {type(segmentation).__name__}")
    mask = mask_utils.decode(rle)
    if mask.shape != (height, width):
        raise ValueError(f"segmentation is {mask.shape[0]}x{mask.shape[1]} but its image is {height}x{width} (HxW)")
    return mask


def decode_masks(segmentations: Sequence, height: int, width: int) -> np.ndarray | None:
    """``(N, height, width)`` uint8 {0, 1}, or None when some object has no segmentation at all."""
    if any(not s for s in segmentations):
        return None
    if not segmentations:
        return np.zeros((0, height, width), np.uint8)
    return np.stack([segmentation_to_mask(s, height, width) for s in segmentations])


def load_annotated_image(image_dir: Path, relative_paths: Sequence[str], width: int, height: int) -> Image.Image:
    """Open the first of ``image_dir / p`` that exists and check it is ``width`` x ``height`` pixels.

    Raises ``BadImage`` naming the file when none exists, it cannot be decoded, or its size
    disagrees with the annotations (whose coordinates would then be wrong).
    """
    candidates = [image_dir / p for p in relative_paths]
    path = candidates[0]
    if len(candidates) > 1:  # one stat per candidate; with one candidate open_rgb reports a missing file
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise BadImage(str(candidates[0]), f"file not found (nor {', '.join(map(str, candidates[1:]))})")
    image = open_rgb(path)
    if image.size != (width, height):
        raise BadImage(str(path), f"is {image.width}x{image.height} pixels but its annotations say {width}x{height}")
    return image


def read_captions(captions_json: PathLike) -> dict[Any, list[str]]:
    """COCO ``captions_*.json`` -> {image id: captions in file order}."""
    captions: dict[Any, list[str]] = defaultdict(list)
    for ann in load_json(captions_json)["annotations"]:
        captions[ann["image_id"]].append(ann["caption"].strip())
    return dict(captions)


class CocoDetection:
    """Map-style dataset over a COCO instances file: ``dataset[i]`` is image ``i`` (json order) as a Sample.

    Sample fields: boxes in absolute xyxy pixels; ``category_ids`` contiguous indices into
    ``categories``; ``phrases`` the annotation's ``"caption"`` key when present, else the category
    phrase. An annotation may also list further true descriptions of its object under ``"phrases"``
    (``["a red star"]`` beside the caption "a small red star"); each access then draws the object's
    phrase uniformly from the caption and those, seeded by ``(seed, draw, index)``, and the
    caption becomes the sample's ``object_captions`` entry (what the caption head learns).
    ``masks`` when ``with_masks`` and every kept object has a segmentation (else None and no "mask"
    task); ``caption`` from ``captions_json`` when given and the image has one.
    ``caption_choice="first"`` takes the image's first caption in file order; ``"random"`` draws
    one per access from a generator seeded by ``(seed, draw, index)``, so every DataLoader worker
    agrees and a rerun repeats. ``dataset.sample(i, draw)`` takes the draw number from the caller
    (``MixedDataset`` passes the sampler's, unique per access); ``dataset[i]`` uses the epoch set by
    :meth:`set_epoch` as the draw.

    Attributes: ``categories`` (names), ``category_coco_ids`` (original ids), ``category_phrases``
    (the text used for a category: the name here), ``source``.
    """

    source = "coco"

    def __init__(
        self,
        image_dir: PathLike,
        instances_json: PathLike,
        with_masks: bool = True,
        captions_json: PathLike | None = None,
        *,
        caption_choice: Literal["first", "random"] = "first",
        seed: int = 0,
        skip_empty: bool = False,
    ) -> None:
        if caption_choice not in ("first", "random"):
            raise ValueError(f"caption_choice must be 'first' or 'random', got {caption_choice!r}")
        self.image_dir = Path(image_dir)
        self.with_masks = with_masks
        self.caption_choice = caption_choice
        self.seed = seed
        self.epoch = 0
        data = load_json(instances_json)
        records, self._category_index = category_table(data["categories"])
        self.categories: list[str] = [c["name"] for c in records]
        self.category_coco_ids: list[int] = [c["id"] for c in records]
        self.category_phrases: list[str] = [self._category_phrase(n) for n in self.categories]
        self._read_extra(data, records)
        captions = read_captions(captions_json) if captions_json is not None else None
        dropped: Counter = Counter()
        self._records = PackedRecords(self._image_records(data, captions, skip_empty, dropped))
        log.info("%s %s: %d images; dropped %s", self.source, instances_json, len(self._records), dict(dropped) or "nothing")

    # -- hooks a derived format (LVIS) overrides -------------------------------------------------
    @staticmethod
    def _category_phrase(name: str) -> str:
        return name

    def _relative_paths(self, image: dict) -> tuple[str, ...]:
        """Where the image may lie under ``image_dir``, in the order tried."""
        return (image["file_name"],)

    def _read_extra(self, data: dict, categories: list[dict]) -> None:
        """Read format-specific fields while the whole json is at hand (nothing in COCO)."""

    # ---------------------------------------------------------------------------------------------
    def _image_records(
        self, data: dict, captions: dict | None, skip_empty: bool, dropped: Counter
    ) -> Iterator[dict]:
        by_image: dict[Any, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            by_image[ann["image_id"]].append(ann)
        for image in data["images"]:
            anns, boxes = clean_annotations(by_image.get(image["id"], ()), image["width"], image["height"], dropped)
            if skip_empty and not anns:
                dropped["images left without objects"] += 1
                continue
            try:
                category_ids = np.array([self._category_index[a["category_id"]] for a in anns], np.int64)
            except KeyError as e:
                raise ValueError(f"image {image['id']}: annotation with category id {e} not in categories") from None
            record = {
                "image_id": image["id"],
                "paths": self._relative_paths(image),
                "width": image["width"],
                "height": image["height"],
                "boxes": boxes,
                "category_ids": category_ids,
                "phrases": [a.get("caption") or self.category_phrases[c] for a, c in zip(anns, category_ids)],
            }
            alternatives = [list(a.get("phrases") or ()) for a in anns]
            if any(alternatives):
                record["alternative_phrases"] = alternatives
            if self.with_masks:
                record["segmentations"] = [a.get("segmentation") for a in anns]
            if captions is not None:
                record["captions"] = captions.get(image["id"], [])
            yield record

    def category_instance_counts(self) -> np.ndarray:
        """(C,) int64 kept instances per category (for OHEM's tail weights); no image is decoded."""
        ids = self.image_category_ids()
        return np.bincount(np.concatenate(ids) if ids else np.zeros(0, np.int64), minlength=len(self.categories))

    def image_category_ids(self) -> list[np.ndarray]:
        """Per image, the (K,) int64 category indices of its kept objects (for repeat-factor sampling)."""
        return [self._records[i]["category_ids"] for i in range(len(self._records))]

    def set_epoch(self, epoch: int) -> None:
        """The draw ``dataset[i]`` uses (which caption and phrases it picks); call at each epoch's start."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Sample:
        return self.sample(i, self.epoch)

    def sample(self, i: int, draw: int) -> Sample:
        """Image ``i`` with its per-access choices (phrases, caption) seeded by ``(seed, draw, i)``."""
        record = self._records[i]
        w, h = record["width"], record["height"]
        image = load_annotated_image(self.image_dir, record["paths"], w, h)
        masks = decode_masks(record["segmentations"], h, w) if self.with_masks else None
        caption = self._pick_caption(record.get("captions") or [], i, draw)
        phrases, object_captions = self._pick_phrases(record, i, draw)
        tasks = ("detection",) + (("mask",) if masks is not None else ()) + ("grounding",)
        tasks += (("caption",) if caption is not None else ()) + ("classification",)
        return Sample(
            image=image,
            image_id=record["image_id"],
            source=self.source,
            tasks=tasks,
            boxes_xyxy=record["boxes"],
            category_ids=record["category_ids"],
            masks=masks,
            phrases=phrases,
            object_captions=object_captions,
            caption=caption,
        )

    def _pick_phrases(self, record: dict, i: int, draw: int) -> tuple[list[str], list[str]]:
        """(phrases, object captions): each object's phrase drawn from its caption and its alternative
        phrases, and the captions; or the captions and [] when no object has alternatives."""
        alternatives = record.get("alternative_phrases")
        if alternatives is None:
            return record["phrases"], []
        rng = np.random.default_rng([self.seed, draw, i % len(self), _PHRASE_STREAM])
        drawn = [(caption, *others)[int(rng.integers(1 + len(others)))]
                 for caption, others in zip(record["phrases"], alternatives)]
        return drawn, list(record["phrases"])

    def _pick_caption(self, captions: list[str], i: int, draw: int) -> str | None:
        if not captions:
            return None
        if self.caption_choice == "first":
            return captions[0]
        rng = np.random.default_rng([self.seed, draw, i % len(self)])
        return captions[int(rng.integers(len(captions)))]
