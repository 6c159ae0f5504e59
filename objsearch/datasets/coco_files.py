"""Reading COCO-format annotation files (instances and RefCOCO-style refs), checked field by field.

A malformed file raises ``objsearch.errors.BadDataset`` naming the file and the field (for example
``annotations[3].bbox``), so ``objsearch bench coco-search --data`` ends in one line, not a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from objsearch.errors import BadDataset


def load_coco_instances(path: Path | str) -> dict:
    """Read and check a COCO instances JSON: the one place objsearch validates one.

    Required: ``images`` (each ``{"id", "file_name"}``), ``categories`` (each ``{"id", "name"}``) and
    ``annotations`` (each ``{"id", "image_id", "category_id", "bbox": [x, y, width, height]}``, four
    finite numbers, width and height >= 0); ids are integers or strings, unique within images,
    categories and annotations; every ``category_id`` is a listed category. An annotation whose
    ``image_id`` is not listed is allowed (it is never evaluated). Filled in when absent: ``iscrowd``
    0 (else it must be 0 / 1 / a boolean, and is stored as 0 or 1) and ``area`` the box's
    width x height (else a finite number >= 0). Raises BadDataset, naming the file and the field,
    for a file that is not JSON or breaks any of these.
    """
    path = Path(path)
    coco = _read_json(path)
    if not isinstance(coco, dict):
        raise BadDataset(path, None, f"not COCO instances JSON: expected an object with images, annotations and "
                                     f"categories, got {_json_kind(coco)}")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise BadDataset(path, key, "missing (COCO instances JSON has images, annotations and categories)")
        if not isinstance(coco[key], list):
            raise BadDataset(path, key, f"expected a list, got {_json_kind(coco[key])}")
    _check_records(path, "images", coco["images"], "file_name")
    category_ids = _check_records(path, "categories", coco["categories"], "name")
    _check_records(path, "annotations", coco["annotations"])
    for i, ann in enumerate(coco["annotations"]):
        where, which = f"annotations[{i}]", f" (annotation id {ann['id']!r})"
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise BadDataset(path, f"{where}.{key}", "missing" + which)
        if not _is_id(ann["image_id"]):
            raise BadDataset(path, f"{where}.image_id", f"expected an integer or a string, got {_short(ann['image_id'])}{which}")
        if ann["category_id"] not in category_ids:
            raise BadDataset(path, f"{where}.category_id", f"{_short(ann['category_id'])} is not the id of any of "
                                                           f"the categories{which}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox)) and min(bbox[2:]) >= 0):
            raise BadDataset(path, f"{where}.bbox", f"expected 4 finite numbers [x, y, width, height] with width "
                                                    f"and height >= 0, got {_short(bbox)}{which}")
        crowd = ann.setdefault("iscrowd", 0)
        if isinstance(crowd, (str, list, dict)) or crowd not in (0, 1):
            raise BadDataset(path, f"{where}.iscrowd", f"expected 0 or 1, got {_short(crowd)}{which}")
        ann["iscrowd"] = int(crowd)
        area = ann.setdefault("area", bbox[2] * bbox[3])
        if not _is_number(area) or area < 0:
            raise BadDataset(path, f"{where}.area", f"expected a finite number >= 0, got {_short(area)}{which}")
    return coco


def load_coco_refs(path: Path | str) -> list[dict]:
    """Read and check a RefCOCO-style refs JSON: a list of ``{"ann_id", "sentences": [{"sent": str}, ...]}``
    (other keys are kept, unchecked). Raises BadDataset, naming the file and the field, otherwise."""
    path = Path(path)
    refs = _read_json(path)
    if not isinstance(refs, list):
        raise BadDataset(path, None, f"not RefCOCO-style refs: expected a list of refs, got {_json_kind(refs)}")
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise BadDataset(path, f"[{i}]", f"expected an object, got {_json_kind(ref)}")
        for key in ("ann_id", "sentences"):
            if key not in ref:
                raise BadDataset(path, f"[{i}].{key}", "missing")
        if not _is_id(ref["ann_id"]):
            raise BadDataset(path, f"[{i}].ann_id", f"expected an integer or a string, got {_short(ref['ann_id'])}")
        if not isinstance(ref["sentences"], list):
            raise BadDataset(path, f"[{i}].sentences", f"expected a list, got {_json_kind(ref['sentences'])}")
        for j, sentence in enumerate(ref["sentences"]):
            if not isinstance(sentence, dict) or not isinstance(sentence.get("sent"), str):
                raise BadDataset(path, f"[{i}].sentences[{j}].sent", f"expected a string, got "
                                 f"{_short(sentence.get('sent') if isinstance(sentence, dict) else sentence)}")
    return refs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadDataset(path, None, f"not valid JSON ({exc})") from None


def _check_records(path: Path, key: str, records: list, text_field: str | None = None) -> set:
    """Each of ``records`` is an object with a unique integer or string ``id`` (and a non-empty string
    ``text_field``); returns the ids."""
    ids = set()
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadDataset(path, f"{key}[{i}]", f"expected an object, got {_json_kind(record)}")
        if "id" not in record:
            raise BadDataset(path, f"{key}[{i}].id", "missing")
        if not _is_id(record["id"]):
            raise BadDataset(path, f"{key}[{i}].id", f"expected an integer or a string, got {_short(record['id'])}")
        if record["id"] in ids:
            raise BadDataset(path, f"{key}[{i}].id", f"{record['id']!r} is the id of an earlier one too")
        ids.add(record["id"])
        if text_field is not None:
            if text_field not in record:
                raise BadDataset(path, f"{key}[{i}].{text_field}", f"missing ({key[:-1]} id {record['id']!r})")
            if not isinstance(record[text_field], str) or not record[text_field]:
                raise BadDataset(path, f"{key}[{i}].{text_field}", f"expected a non-empty string, got "
                                                                   f"{_short(record[text_field])}")
    return ids


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
