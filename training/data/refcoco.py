"""RefCOCO / RefCOCO+ / RefCOCOg referring expressions -> one :class:`Sample` per sentence.

Inputs, as the REFER release (github.com/lichengunc/refer) lays them out:

- ``refs(unc).p`` (or ``refs(umd).p``, ``refs(google).p``): a pickle of a list of dicts
  ``{ref_id, ann_id, image_id, split, sentences: [{sent, raw, tokens, sent_id}], category_id,
  file_name, sent_ids}``. The same list written as ``.json`` is accepted too (our synthetic
  generator writes ``refs_{split}.json``). A pickle can run code when loaded: load only files from
  the official release or from yourself.
- ``instances.json``: COCO instances over the train2014 images; it holds the boxes and masks.
  The image file is the instances image record's ``file_name``: the refs' ``file_name`` carries an
  annotation suffix (``COCO_train2014_000000581857_16.jpg``) that names no file on disk.

Choices:
- one Sample per sentence (not per ref with a random sentence), as most grounding trainers
  iterate; ``sent`` (the REFER-normalised lower-case text; ``raw`` when absent) is the phrase;
- the referent is the Sample's single object: its box, category index and mask;
- tasks are ("grounding",) plus "mask" with masks, and not "detection": the image's other objects
  are unlabelled here, so a detection loss would push them to background.
Refs of other splits are skipped (``split=None`` keeps all; records without a ``split`` key are
kept). A ref whose annotation is missing from the instances raises at construction; a ref whose
annotation is a crowd or has a degenerate box is dropped and counted in the log, as in COCO.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from training.data.coco import (
    PackedRecords,
    PathLike,
    category_table,
    clean_annotations,
    decode_masks,
    load_annotated_image,
    load_json,
)
from training.data.sample import Sample

log = logging.getLogger(__name__)


def read_refs(refs_file: PathLike) -> list[dict]:
    """The refs list from a REFER pickle (``.p``, ``.pkl``, ``.pickle``) or a ``.json`` list."""
    path = Path(refs_file)
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if path.suffix in (".p", ".pkl", ".pickle"):
        with open(path, "rb") as f:
            # The REFER pickles were written by Python 2; their byte strings are UTF-8 text.
            return pickle.load(f, encoding="utf-8")
    raise ValueError(f"{path}: expected a REFER pickle (.p) or a .json list of refs")


class RefCocoGrounding:
    """Map-style dataset: ``dataset[i]`` is sentence ``i`` of the split's refs, as a Sample.

    Sample: ``boxes_xyxy`` (1, 4) absolute pixels of the referent; ``category_ids`` (1,) its index
    into ``categories`` (sorted-id order of the instances' categories); ``phrases`` [sentence];
    ``masks`` (1, H, W) when ``with_masks`` and the referent has a segmentation.
    """

    source = "refcoco"

    def __init__(
        self,
        image_dir: PathLike,
        refs_file: PathLike,
        instances_json: PathLike,
        split: str | None = "train",
        *,
        with_masks: bool = True,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.split = split
        self.with_masks = with_masks
        instances = load_json(instances_json)
        categories, category_index = category_table(instances["categories"])
        self.categories: list[str] = [c["name"] for c in categories]
        dropped: Counter = Counter()
        records = self._sentence_records(read_refs(refs_file), instances, category_index, dropped)
        self._records = PackedRecords(records)
        log.info("refcoco %s split=%s: %d sentences; dropped %s", refs_file, split, len(self._records), dict(dropped) or "nothing")

    def _sentence_records(
        self, refs: list[dict], instances: dict, category_index: dict[int, int], dropped: Counter
    ) -> Iterator[dict]:
        images = {im["id"]: im for im in instances["images"]}
        annotations = {a["id"]: a for a in instances["annotations"]}
        for ref in refs:
            if self.split is not None and ref.get("split", self.split) != self.split:
                continue
            ann = annotations.get(ref["ann_id"])
            if ann is None or ann["image_id"] not in images:
                raise ValueError(f"ref {ref.get('ref_id')}: annotation {ref['ann_id']} is not in the instances file")
            image = images[ann["image_id"]]
            kept, boxes = clean_annotations([ann], image["width"], image["height"], dropped)
            if not kept:
                dropped["refs"] += 1
                continue
            for sentence in ref["sentences"]:
                yield {
                    "image_id": image["id"],
                    "file_name": image["file_name"],
                    "width": image["width"],
                    "height": image["height"],
                    "box": boxes,
                    "category_id": category_index[ann["category_id"]],
                    "segmentation": ann.get("segmentation") if self.with_masks else None,
                    "phrase": sentence.get("sent") or sentence["raw"],
                }

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Sample:
        record = self._records[i]
        w, h = record["width"], record["height"]
        image = load_annotated_image(self.image_dir, (record["file_name"],), w, h)
        masks = decode_masks([record["segmentation"]], h, w) if self.with_masks else None
        return Sample(
            image=image,
            image_id=record["image_id"],
            source=self.source,
            tasks=("grounding",) + (("mask",) if masks is not None else ()),
            boxes_xyxy=record["box"],
            category_ids=[record["category_id"]],
            masks=masks,
            phrases=[record["phrase"]],
        )
