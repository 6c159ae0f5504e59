"""Retrieval on real photos: R@1 and R@5 by query kind, per model and search mode.

    objsearch bench real-photos [--model bundled] [--mode vector --mode hybrid] [--out DIR]

The 20 photos of ``objsearch.datasets.real_photos`` are indexed with each model, then each query
(text, or a region of one photo) runs through ``Index.search`` / ``search_region``, 10 deep. A hit
finds an object when its box has IoU >= 0.5 with one of the query's hand-drawn boxes; a region
query's hits in its own photo are left out (the region itself is always there). R@k: the share of
queries with a found object among their first k hits. Region queries search by vector in every mode.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.provenance import commit, utc_now, write_result

DEPTH = 10


def run_real_photos(models: list[str], modes: list[str], out_dir: Path | None = None, *, embedders: dict[str, Any] | None = None,
                    annotations: Path | None = None) -> dict:
    """Index the set (``annotations``: its JSON file, by default ``real_photos.ANNOTATIONS``) with
    each of ``models`` (names, or keys of ``embedders``: name -> a loaded embedder) and measure each
    of ``modes``; results.json and results.md are written to ``out_dir``
    when given. Returns the results: ``rows`` (one per model and mode, ``by_kind`` -> R@1, R@5,
    queries) and ``queries`` (per query: the rank of the first object found, or None)."""
    from indexer.pipeline import IndexOptions, index_folders
    from objsearch import open_index
    from objsearch.datasets import real_photos

    code = commit()  # taken before the run: commits made while it runs are not its code
    annotations = annotations or real_photos.ANNOTATIONS
    queries = real_photos.load_queries(annotations)
    work = Path(tempfile.mkdtemp(prefix="real-photos-"))
    rows, per_query, masks, mask_cost = [], {}, {}, {}
    try:
        photos = real_photos.gather(work / "photos", annotations)
        for model in models:
            embedder = (embedders or {}).get(model)
            started = time.perf_counter()
            summary = index_folders([photos], work / model.replace("/", "_"), model=None if embedder else model, embedder=embedder,
                                    options=IndexOptions(progress=False, workers=1))
            index_seconds = time.perf_counter() - started
            with open_index(work / model.replace("/", "_"), model=embedder) as index:
                # a region query searches by vector in every mode: measured once
                region_ranks = {i: first_found(index, photos, q, "vector") for i, q in enumerate(queries) if q.text is None}
                for mode in modes:
                    ranks = [region_ranks[i] if i in region_ranks else first_found(index, photos, q, mode) for i, q in enumerate(queries)]
                    rows.append({"model": model, "mode": mode, "objects": summary.objects_added, "index_seconds": round(index_seconds, 1),
                                 "by_kind": recall_by_kind(queries, ranks)})
                    per_query[f"{model} / {mode}"] = {q.name: rank for q, rank in zip(queries, ranks)}
                masks[model] = mask_quality(index, photos, annotations)
                mask_cost[model] = mask_seconds(index)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {"set": annotations.name, "photos": len(real_photos.photo_names(annotations)), "depth": DEPTH,
               "rows": rows, "queries": per_query, "masks": masks, "mask_ms_per_object": mask_cost}
    if out_dir is not None:
        write_result(out_dir / "results.json", results, code=code)
    results = {"commit": code, "date": utc_now(), **results}
    if out_dir is not None:
        (out_dir / "results.md").write_text(markdown(results) + "\n")
    return results


def first_found(index, photos: Path, query, mode: str) -> int | None:
    """The 1-based rank of the first of ``query``'s top DEPTH hits that finds one of its objects, or None."""
    from objsearch import metrics
    from objsearch.query import Query

    if query.text is not None:
        hits = index.search(Query.text(query.text), DEPTH, mode=mode)
    else:
        own = str(photos / query.image)
        hits = [h for h in index.search_region(photos / query.image, query.box, DEPTH * 4) if h.path != own][:DEPTH]
    if not hits:
        return None
    names = [Path(h.path).name for h in hits]
    gold_names = [name for name, boxes in query.relevant.items() for _ in boxes]
    gold_boxes = [box for boxes in query.relevant.values() for box in boxes]
    found = metrics.iou_hits(np.array(names), np.array([h.box_xyxy for h in hits]), np.array(gold_names), np.array(gold_boxes))
    return int(np.argmax(found)) + 1 if found.any() else None


def mask_quality(index, photos: Path, annotations: Path) -> dict:
    """Each hand-drawn outline (``real_photos.load_masks``) against the mask of the indexed object
    whose box overlaps its box most: mask IoU, and the IoU of that object's box taken as a mask
    (what a mask must beat to be worth storing). None where no object overlaps or it has no mask."""
    from PIL import Image

    from objsearch.box_ops import box_iou
    from objsearch.datasets import real_photos
    from objsearch.embedders.masks import box_mask, decode, mask_iou

    out = {}
    for drawn in real_photos.load_masks(annotations):
        path = str(photos / drawn.photo)
        quoted = path.replace("'", "''")
        objects = index.sql(f"SELECT object_id, x1, y1, x2, y2 FROM objects_images WHERE path = '{quoted}'")[1]
        width, height = Image.open(path).size
        truth = drawn.mask(height, width)
        if not objects:
            out[f"{drawn.photo} {drawn.object}"] = None
            continue
        overlaps = box_iou(np.array([drawn.box], np.float32), np.array([o[1:] for o in objects], np.float32))[0]
        object_id, *box = objects[int(overlaps.argmax())]
        as_mask = box_mask(height, width, box)
        rle = index.masks([object_id]).get(object_id)
        mask = None if rle is None else decode(rle, (height, width))
        out[f"{drawn.photo} {drawn.object}"] = {"box_iou": round(float(overlaps.max()), 3), "mask_iou": None if mask is None else round(mask_iou(mask, truth), 3),
                                                "box_as_mask_iou": round(mask_iou(as_mask, truth), 3)}
    return out


def mask_seconds(index) -> dict:
    """What a GrabCut mask (``objsearch.embedders.masks``) costs for the boxes of the indexed
    objects, each on its photo as the indexer decodes it: median and 90th percentile, ms."""
    from objsearch.embedders.masks import grabcut_mask
    from objsearch.image_decode import decode_image

    seconds = []
    for path, x1, y1, x2, y2 in index.sql("SELECT path, x1, y1, x2, y2 FROM objects_images ORDER BY object_id")[1]:
        decoded = decode_image(path)
        box = np.array([x1, y1, x2, y2]) * decoded.scale
        started = time.perf_counter()
        grabcut_mask(decoded.pixels, box)
        seconds.append(time.perf_counter() - started)
    return {"objects": len(seconds), "median": round(1e3 * float(np.median(seconds)), 1),
            "p90": round(1e3 * float(np.quantile(seconds, 0.9)), 1)} if seconds else {}


def recall_by_kind(queries, ranks: list[int | None]) -> dict[str, dict]:
    """kind (and "coco vocabulary", "all") -> {"queries", "R@1", "R@5"}."""
    from objsearch.datasets.real_photos import COCO_VOCABULARY, KINDS

    groups = {kind: [kind] for kind in KINDS} | {"coco vocabulary": list(COCO_VOCABULARY), "all": list(KINDS)}
    out = {}
    for name, kinds in groups.items():
        chosen = [rank for q, rank in zip(queries, ranks) if q.kind in kinds]
        if chosen:
            out[name] = {"queries": len(chosen), "R@1": round(sum(r == 1 for r in chosen) / len(chosen), 3),
                         "R@5": round(sum(r is not None and r <= 5 for r in chosen) / len(chosen), 3)}
    return out


def markdown(results: dict) -> str:
    """The R@1 / R@5 table by kind, one row per model and mode."""
    kinds = list(results["rows"][0]["by_kind"]) if results["rows"] else []
    masks = [f"{name}: mask IoU {m['mask_iou']} (its box: {m['box_as_mask_iou']})" for per_model in results.get("masks", {}).values()
             for name, m in per_model.items() if m]
    lines = ["| model | mode | " + " | ".join(f"{k} ({results['rows'][0]['by_kind'][k]['queries']}) R@1 / R@5" for k in kinds) + " |",
             "|---|---|" + "---|" * len(kinds)]
    for row in results["rows"]:
        cells = [f"{row['by_kind'][k]['R@1']:.2f} / {row['by_kind'][k]['R@5']:.2f}" for k in kinds]
        lines.append(f"| {row['model']} | {row['mode']} | " + " | ".join(cells) + " |")
    costs = [f"{model}: a mask costs {c['median']} ms per object (median of {c['objects']}; p90 {c['p90']} ms)"
             for model, c in results.get("mask_ms_per_object", {}).items() if c]
    return "\n".join(lines + ([""] + masks if masks else []) + costs)
