"""Vector, keyword and hybrid search side by side on the synthetic set, by query kind.

    python -m benchmarks.hybrid_search --model runs/tiny/final [--data runs/synthetic] [--split test] [--out FILE]

The split's images are indexed with the model (an ObjEmbed checkpoint trained on the synthetic
set: its labels are shape names and its captions come from its caption head, "a small red
star"), then every text query of ``objsearch.evaluation.text_queries`` (category "star",
attribute "red star", the split's referring expressions) runs through ``Index.search`` in each
mode, 100 deep (each query in the three modes in turn, which one first rotating; every text
embedded once before the clock runs, as a warm server has). A hit is relevant when its box has IoU >= 0.5 with one of the query's objects.
Reported per kind and mode: R@1, R@5, R@10, mAP@100 and the median query time (warm); and the
top 5 of "star - red" in each mode as (shape, colour) of the annotated object each hit overlaps.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.provenance import commit, report
from objsearch.search import SEARCH_MODES as MODES

RESULT = Path(__file__).parent / "results" / "hybrid_search" / "synthetic.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an ObjEmbed checkpoint trained on the synthetic set")
    parser.add_argument("--data", type=Path, default=Path("runs/synthetic"), help="the synthetic set (objsearch.datasets.synthetic)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    code = commit()

    from indexer.pipeline import IndexOptions, index_folders
    from objsearch import open_index
    from objsearch.embedders.base import load_embedder
    from objsearch.evaluation import RANK_DEPTH, CocoSplit, retrieval_summary, text_queries
    from objsearch.query import Query

    split = CocoSplit(args.data / "images" / args.split, args.data / "annotations" / f"instances_{args.split}.json",
                      args.data / "annotations" / f"refs_{args.split}.json")
    annotations = [a for a in split.gt["annotations"] if not a["iscrowd"]]
    cat_index = {c["id"]: i for i, c in enumerate(sorted(split.gt["categories"], key=lambda c: c["id"]))}
    queries = text_queries(split, annotations, split.category_names, cat_index)
    image_of_file = {r["file_name"]: r["id"] for r in split.gt["images"]}
    embedder = load_embedder(args.model)
    work = Path(tempfile.mkdtemp(prefix="hybrid-bench-"))
    try:
        started = time.perf_counter()
        summary = index_folders([split.image_dir], work / "idx", embedder=embedder, options=IndexOptions(progress=False, workers=1))
        index_seconds = time.perf_counter() - started
        with open_index(work / "idx", model=embedder) as index:
            for by_text in queries.values():  # torch sets up kernels for each new token length on first use: not timed
                embedder.embed_texts(list(by_text))
                for text in by_text:
                    embedder.embed_texts([text])
            results = {}
            for kind, by_text in queries.items():
                hits = {mode: [] for mode in MODES}
                seconds = {mode: [] for mode in MODES}
                for number, (text, gold) in enumerate(by_text.items()):
                    # Each query in every mode in turn, the first mode rotating, so drift falls on all.
                    for mode in MODES[number % 3:] + MODES[:number % 3]:
                        started = time.perf_counter()
                        found = index.search(Query.text(text), RANK_DEPTH, mode=mode)
                        seconds[mode].append(time.perf_counter() - started)
                        hits[mode].append(_relevant(found, gold, image_of_file))
                relevant = [len(gold) for gold in by_text.values()]
                results[kind] = {mode: {**retrieval_summary(hits[mode], relevant), "median_ms": round(1e3 * statistics.median(seconds[mode]), 2)}
                                 for mode in MODES}
            star_minus_red = {mode: [_described(h, annotations, image_of_file, split.category_names, cat_index)
                                     for h in index.search("star - red", 5, mode=mode)] for mode in MODES}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(args.out, {
        "what": "vector, keyword and hybrid (reciprocal rank fusion) search on the synthetic set, by query kind",
        "model": args.model, "data": str(args.data), "split": args.split,
        "indexed": {"images": summary.indexed, "objects": summary.objects_added, "seconds": round(index_seconds, 1)},
        "queries": {kind: len(by_text) for kind, by_text in queries.items()},
        "results": results,
        "star_minus_red_top5": star_minus_red,
    }, code=code)


def _relevant(hits, gold: list[dict], image_of_file: dict[str, int]) -> np.ndarray:
    """(len(hits),) whether each hit's box has IoU >= 0.5 with one of ``gold`` (each gold object claimed once)."""
    from objsearch import metrics

    if not hits:
        return np.zeros(0, bool)
    return metrics.iou_hits(np.array([image_of_file[Path(h.path).name] for h in hits]), np.array([h.box_xyxy for h in hits]),
                            np.array([a["image_id"] for a in gold]),
                            np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in gold)]))


def _described(hit, annotations: list[dict], image_of_file: dict[str, int], names: list[str], cat_index: dict[int, int]) -> str:
    """"colour shape" of the annotated object the hit's box overlaps most (IoU), or "nothing"."""
    from objsearch.box_ops import box_iou

    image_id = image_of_file[Path(hit.path).name]
    candidates = [a for a in annotations if a["image_id"] == image_id]
    if not candidates:
        return "nothing"
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in candidates)], np.float32)
    overlaps = box_iou(np.array([hit.box_xyxy], np.float32), boxes)[0]
    best = candidates[int(overlaps.argmax())]
    return "nothing" if overlaps.max() < 0.5 else f"{best['colour']} {names[cat_index[best['category_id']]]}"


if __name__ == "__main__":
    main()
