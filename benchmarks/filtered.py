"""Filtered search: latency and exactness of `--where` at 50%, 1% and 0.01% selectivity.

    python -m benchmarks.filtered [--objects 1000000] [--queries 100]

Builds a real index (Parquet + FAISS through IndexWriter, so the automatic index choice applies)
of clustered synthetic embeddings whose `label` column selects 50% / 1% / 0.01% of the objects,
then times `Index.search_embedding(q, k=10, where=...)` end to end (DuckDB selection included) and
compares each result with brute-force top-10 over the filtered objects' stored embeddings.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.ann import clustered_vectors
from objsearch.embedders.base import Detections
from objsearch.search import open_index
from objsearch.store.commit import ImageRecord, IndexWriter
from objsearch.store.manifest import EmbedderInfo

OBJECTS_PER_IMAGE = 100


def build_index(root: Path, data: np.ndarray, labels: np.ndarray) -> float:
    info = EmbedderInfo("synthetic", "1", data.shape[1], source="synthetic")
    t0 = time.perf_counter()
    with IndexWriter(root, info) as writer:
        for image, start in enumerate(range(0, len(data), OBJECTS_PER_IMAGE)):
            stop = min(start + OBJECTS_PER_IMAGE, len(data))
            n = stop - start
            detections = Detections(np.tile([0, 0, 10, 10], (n, 1)), np.ones(n), labels[start:stop].tolist(), data[start:stop])
            writer.add_image(ImageRecord(f"/synthetic/{image:07d}.jpg", 1, 1, "0", 640, 480), detections)
            if image % 2000 == 1999:
                writer.commit()
        writer.commit()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    data = clustered_vectors(args.objects, args.dim, 1000, 0.8, seed=1)
    # Nested selections: u < 0.5 is 'half' or finer, u < 0.01 'one-percent' or finer, u < 1e-4 'rare'.
    u = rng.random(args.objects)
    labels = np.full(args.objects, "other", dtype=object)
    labels[u < 0.5] = "half"
    labels[u < 0.01] = "one-percent"
    labels[u < 0.0001] = "rare"
    cases = [
        ("label IN ('half', 'one-percent', 'rare')", u < 0.5),
        ("label IN ('one-percent', 'rare')", u < 0.01),
        ("label = 'rare'", u < 0.0001),
    ]
    queries = clustered_vectors(args.queries, args.dim, 1000, 0.8, seed=2)
    work = Path(tempfile.mkdtemp(prefix="objsearch-filtered-"))
    try:
        build_s = build_index(work / "idx", data, labels)
        index = open_index(work / "idx")
        index._embedder = object()  # never used: queries here are embeddings
        print(f"{args.objects:,} objects, index {index.manifest.index_type}, built in {build_s:.0f} s")
        stored = data  # object_id i holds data[i]: ids are allocated in order
        print("| predicate | selected | p50 ms | p95 ms | exact top-10 (share of queries) | recall@10 |\n|---|---|---|---|---|---|")
        for predicate, mask in cases:
            selected = np.flatnonzero(mask)
            index.search_embedding(queries[0], 10, where=predicate)  # warm-up
            latencies, exact, recall = [], 0, []
            for q in queries:
                t0 = time.perf_counter()
                hits = index.search_embedding(q, 10, where=predicate)
                latencies.append((time.perf_counter() - t0) * 1e3)
                scores = stored[selected] @ q
                truth = set(selected[np.argsort(-scores, kind="stable")[:10]].tolist())
                got = {h.object_id for h in hits}
                exact += got == truth
                recall.append(len(got & truth) / max(len(truth), 1))
            print(f"| `{predicate}` | {len(selected) / args.objects:.4%} ({len(selected):,}) | {statistics.median(latencies):.1f} | "
                  f"{np.percentile(latencies, 95):.1f} | {exact / len(queries):.2f} | {np.mean(recall):.4f} |", flush=True)
        index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
