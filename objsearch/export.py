"""Search results out of objsearch: the photos copied or linked into a folder, each object's crop
as a JPEG, and the hits as CSV or as a COCO detection file (images, boxes, labels, scores) that
pycocotools, FiftyOne and CVAT load. Nothing in the index changes.

A folder written to must not already hold a file of the same name: every name is checked before
anything is written, so a clash leaves the folder as it was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from objsearch.errors import ObjsearchError
from objsearch.hits import Hit

CSV_COLUMNS = ("rank", "similarity", "object_id", "image_id", "path", "x1", "y1", "x2", "y2", "label", "caption",
               "det_score", "image_width", "image_height", "keyword_score", "fused_score")


def export_files(hits: Sequence[Hit], *, photos: str | os.PathLike | None = None, link: bool = False,
                 crops: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """Copy (or symlink, ``link``) each distinct photo of ``hits`` into ``photos`` and write each
    hit's object, cut at full resolution, as ``<object_id>.jpg`` into ``crops`` (folders created
    if needed). Every name in both folders and every source photo is checked before anything is
    written, and what was written is removed again if a write fails. Returns the files written,
    {"photos": [...], "crops": [...]}, in rank order."""
    images: dict[int, str] = {}
    for hit in hits:
        images.setdefault(hit.image_id, hit.path)
    photo_targets = _prepare(photos, _photo_names(images)) if photos is not None else []
    crop_targets = _prepare(crops, [f"{hit.object_id}.jpg" for hit in hits]) if crops is not None else []
    missing = [path for path in images.values() if not Path(path).is_file()]
    if missing:
        raise ObjsearchError(f"{len(missing)} photo(s) are no longer where the index saw them, e.g. {missing[0]}; run `objsearch index` again (nothing was written)")
    written: list[Path] = []
    try:
        for source, target in zip(images.values(), photo_targets):
            _write_photo(Path(source), target, link)
            written.append(target)
        for hit, target in zip(hits, crop_targets):
            _write_crop(hit, target)
            written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return {"photos": photo_targets, "crops": crop_targets}


def _photo_names(images: dict[int, str]) -> list[str]:
    """A file name for each photo, unique in the folder even where names differ only in case:
    its own, or ``<stem>-<image id><suffix>`` when another photo has it."""
    counts: dict[str, int] = {}
    for path in images.values():
        counts[Path(path).name.lower()] = counts.get(Path(path).name.lower(), 0) + 1
    names, taken = [], set()
    for image_id, path in images.items():
        source = Path(path)
        name = source.name if counts[source.name.lower()] == 1 else f"{source.stem}-{image_id}{source.suffix}"
        while name.lower() in taken:  # a renamed photo meeting another's own name
            name = f"{Path(name).stem}-{image_id}{source.suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


def _write_photo(source: Path, target: Path, link: bool) -> None:
    try:
        if link:
            os.symlink(source.resolve(), target)
        else:
            shutil.copy2(source, target)
    except OSError as exc:
        raise ObjsearchError(f"cannot {'link' if link else 'copy'} {source} to {target}: {exc.strerror or exc}") from None


def _write_crop(hit: Hit, target: Path) -> None:
    from objsearch.serve.media import crop_jpeg

    x1, y1, x2, y2 = hit.box_xyxy
    data = crop_jpeg(hit.path, hit.box_xyxy, (hit.image_width, hit.image_height), max_side=int(max(x2 - x1, y2 - y1)) + 1)
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise ObjsearchError(f"cannot write {target}: {exc.strerror or exc}") from None


def hits_csv(hits: Sequence[Hit]) -> str:
    """The hits as CSV with a header row (CSV_COLUMNS; boxes in pixels, xyxy; a score a search did
    not give is empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for hit in hits:
        x1, y1, x2, y2 = hit.box_xyxy
        writer.writerow([hit.rank, _number(hit.similarity), hit.object_id, hit.image_id, hit.path, x1, y1, x2, y2,
                         hit.label, hit.caption or "", hit.det_score, hit.image_width, hit.image_height,
                         _number(hit.keyword_score), _number(hit.fused_score)])
    return out.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def hits_coco(hits: Sequence[Hit]) -> dict:
    """The hits as a COCO detection file: ``images`` (file name = the photo's path, width,
    height), ``annotations`` (bbox [x, y, w, h] in pixels, ``score`` = what the search ranked by (``Hit.ranking_score``),
    ``det_score`` = the detector's confidence, area) and ``categories`` (one per label)."""
    categories: dict[str, int] = {}
    images: dict[int, dict] = {}
    annotations = []
    for hit in hits:
        images.setdefault(hit.image_id, {"id": hit.image_id, "file_name": hit.path, "width": hit.image_width, "height": hit.image_height})
        category = categories.setdefault(hit.label, len(categories) + 1)
        x1, y1, x2, y2 = hit.box_xyxy
        annotations.append({"id": hit.object_id, "image_id": hit.image_id, "category_id": category,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                            "score": hit.ranking_score, "similarity": hit.similarity, "det_score": hit.det_score,
                            "caption": hit.caption})
    return {"images": list(images.values()), "annotations": annotations,
            "categories": [{"id": i, "name": name} for name, i in categories.items()]}


def hits_coco_json(hits: Sequence[Hit]) -> str:
    return json.dumps(hits_coco(hits), indent=2)


def _prepare(folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """``folder`` created if needed, and the paths of ``names`` in it; ObjsearchError (and nothing
    written) when the folder cannot be made or written to, or one of the names already exists."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ObjsearchError(f"cannot create {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ObjsearchError(f"{folder} is not a folder this user can write to")
    if len({name.lower() for name in names}) != len(names):
        raise ValueError("export names must be unique")  # a bug, not the user's
    targets = [folder / name for name in names]
    clashes = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if clashes:
        raise ObjsearchError(f"{len(clashes)} file(s) already exist, e.g. {clashes[0]}; choose an empty folder or remove them (nothing was written)")
    return targets
