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
               "det_score", "image_width", "image_height")


def export_photos(hits: Sequence[Hit], folder: str | os.PathLike, *, link: bool = False) -> list[Path]:
    """Copy (or symlink, ``link``) each distinct photo of ``hits`` into ``folder`` (created if
    needed); returns the files written, in rank order. Two photos with one file name are told
    apart by their image id (``photo-<id>.jpg``)."""
    images: dict[int, str] = {}
    for hit in hits:
        images.setdefault(hit.image_id, hit.path)
    names: dict[str, int] = {}
    for path in images.values():
        names[Path(path).name] = names.get(Path(path).name, 0) + 1
    targets = []
    for image_id, path in images.items():
        source = Path(path)
        name = source.name if names[source.name] == 1 else f"{source.stem}-{image_id}{source.suffix}"
        targets.append((source, name))
    written = _prepare(folder, [name for _, name in targets])
    for (source, _), target in zip(targets, written):
        try:
            if link:
                os.symlink(source.resolve(), target)
            else:
                shutil.copy2(source, target)
        except OSError as exc:
            raise ObjsearchError(f"cannot {'link' if link else 'copy'} {source} to {target}: {exc.strerror or exc}") from None
    return written


def export_crops(hits: Sequence[Hit], folder: str | os.PathLike) -> list[Path]:
    """Each hit's object, cut from its photo at full resolution, as ``<object_id>.jpg`` in
    ``folder``; returns the files written, in rank order."""
    from objsearch.serve.media import crop_jpeg

    written = _prepare(folder, [f"{hit.object_id}.jpg" for hit in hits])
    for hit, target in zip(hits, written):
        x1, y1, x2, y2 = hit.box_xyxy
        data = crop_jpeg(hit.path, hit.box_xyxy, (hit.image_width, hit.image_height), max_side=int(max(x2 - x1, y2 - y1)) + 1)
        try:
            target.write_bytes(data)
        except OSError as exc:
            raise ObjsearchError(f"cannot write {target}: {exc.strerror or exc}") from None
    return written


def hits_csv(hits: Sequence[Hit]) -> str:
    """The hits as CSV with a header row (CSV_COLUMNS; boxes in pixels, xyxy)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for hit in hits:
        x1, y1, x2, y2 = hit.box_xyxy
        writer.writerow([hit.rank, f"{hit.similarity:.6f}", hit.object_id, hit.image_id, hit.path, x1, y1, x2, y2,
                         hit.label, hit.caption or "", hit.det_score, hit.image_width, hit.image_height])
    return out.getvalue()


def hits_coco(hits: Sequence[Hit]) -> dict:
    """The hits as a COCO detection file: ``images`` (file name = the photo's path, width,
    height), ``annotations`` (bbox [x, y, w, h] in pixels, ``score`` = the similarity to the query,
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
                            "score": hit.similarity, "det_score": hit.det_score, "caption": hit.caption})
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
    targets = [folder / name for name in names]
    clashes = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if clashes:
        raise ObjsearchError(f"{len(clashes)} file(s) already exist, e.g. {clashes[0]}; choose an empty folder or remove them (nothing was written)")
    return targets
