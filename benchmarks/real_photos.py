"""Retrieval on real photos: R@1 and R@5 by query kind, per model and search mode.

    objsearch bench real-photos [--model bundled] [--mode vector --mode hybrid] [--out DIR]

The 20 photos of ``objsearch.datasets.real_photos`` are indexed with each model, then each query
(text, or a region of one photo) runs through ``Index.search`` / ``search_region``, 10 deep. A hit
finds an object when its box has IoU >= 0.5 with one of the query's hand-drawn boxes; a region
query's hits in its own photo are left out (the region itself is always there). R@k: the share of
queries with a found object among their first k hits. Region queries search by vector in every mode.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.provenance import commit, utc_now

DEPTH = 10


def run_real_photos(models: list[str], modes: list[str], out_dir: Path | None = None, *, embedders: dict[str, Any] | None = None) -> dict:
    """Index the set with each of ``models`` (names, or keys of ``embedders``: name -> a loaded
    embedder) and measure each of ``modes``; results.json and results.md are written to ``out_dir``
    when given. Returns the results: ``rows`` (one per model and mode, ``by_kind`` -> R@1, R@5,
    queries) and ``queries`` (per query: the rank of the first object found, or None)."""
    from indexer.pipeline import IndexOptions, index_folders
    from objsearch import open_index
    from objsearch.datasets import real_photos

    queries = real_photos.load_queries()
    work = Path(tempfile.mkdtemp(prefix="real-photos-"))
    rows, per_query = [], {}
    try:
        photos = real_photos.gather(work / "photos")
        for model in models:
            embedder = (embedders or {}).get(model)
            started = time.perf_counter()
            summary = index_folders([photos], work / model.replace("/", "_"), model=None if embedder else model, embedder=embedder,
                                    options=IndexOptions(progress=False, workers=1))
            index_seconds = time.perf_counter() - started
            with open_index(work / model.replace("/", "_"), model=embedder) as index:
                for mode in modes:
                    ranks = [first_found(index, photos, q, mode) for q in queries]
                    rows.append({"model": model, "mode": mode, "objects": summary.objects_added, "index_seconds": round(index_seconds, 1),
                                 "by_kind": recall_by_kind(queries, ranks)})
                    per_query[f"{model} / {mode}"] = {q.name: rank for q, rank in zip(queries, ranks)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {"commit": commit(), "date": utc_now(), "photos": len(real_photos.photo_names()), "depth": DEPTH,
               "rows": rows, "queries": per_query}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
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
    lines = ["| model | mode | " + " | ".join(f"{k} ({results['rows'][0]['by_kind'][k]['queries']}) R@1 / R@5" for k in kinds) + " |",
             "|---|---|" + "---|" * len(kinds)]
    for row in results["rows"]:
        cells = [f"{row['by_kind'][k]['R@1']:.2f} / {row['by_kind'][k]['R@5']:.2f}" for k in kinds]
        lines.append(f"| {row['model']} | {row['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
