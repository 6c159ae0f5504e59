"""Write path at collection scale: commits at the indexer's cadence up to 1M objects, in one run.

    python -m benchmarks.write_scaling [--objects 1000000] [--per-commit 384] [--out benchmarks/results/write_scaling.json]

``IndexWriter`` receives synthetic images of 6 objects each (clustered 512-d unit vectors, float16
as stored, boxes, labels, captions) and commits every 64 images, the CLI's default cadence, with
automatic compaction on. At every tenth the writer is closed and opened again (timed) and one
image is deleted (its objects become tombstones). It
reports, in one run:

- commit time (compaction included) p50/p99/max in the first and last tenth of the commits;
- writer open time at every tenth (verified-checksum cache warm) and once with the cache removed
  (every file hashed, what every open cost before);
- peak disk use against the live data: the index folder is measured right before every manifest
  swap (when a commit's or merge's new files and the files it supersedes both exist), against the
  files of the generation committed at that moment;
- file count (peak and final), segments;
- query p50 with the row fetch (``Index.search_embedding``, k=10), the FAISS part alone, and
  recall@10 against exact search, on the state the last commit left and after ``objsearch
  compact`` (one segment: what a fresh build gives); ``--keep-uncompacted DIR`` keeps a copy of
  the former to inspect;

and writes the raw figures to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.ann import clustered_vectors
from benchmarks.provenance import commit, write_result
from objsearch.embedders.base import Detections
from objsearch.search import open_index
from objsearch.store import commit as commit_module
from objsearch.store.commit import ImageRecord, IndexWriter, compact_index
from objsearch.store.layout import VERIFIED
from objsearch.store.manifest import EmbedderInfo, read_manifest

OBJECTS_PER_IMAGE = 6
K = 10


def folder_bytes(root: Path) -> tuple[int, int]:
    """(bytes, files) of every file under ``root``."""
    sizes = [p.stat().st_size for p in root.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def live_bytes(root: Path) -> int:
    manifest = read_manifest(root)
    return sum(e.size for e in manifest.files()) + (root / "manifest.json").stat().st_size


class DiskWatch:
    """Measures the index folder right before each manifest swap (the most it ever holds)."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak_bytes, self.peak_files, self.peak_ratio = root, 0, 0, 0.0
        self._real = commit_module.write_manifest

    def __enter__(self):
        def watched(root, manifest):
            size, files = folder_bytes(root)
            live = sum(e.size for e in read_manifest(root).files())  # the live data: still the committed generation
            self.peak_bytes, self.peak_files = max(self.peak_bytes, size), max(self.peak_files, files)
            if live > (64 << 20):  # ratios of tiny indexes say nothing
                self.peak_ratio = max(self.peak_ratio, size / live)
            self._real(root, manifest)

        commit_module.write_manifest = watched
        return self

    def __exit__(self, *exc):
        commit_module.write_manifest = self._real


def detections(vectors: np.ndarray, rng: np.random.Generator) -> Detections:
    n = len(vectors)
    xy = rng.uniform(0, 500, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 140, (n, 2))], axis=1)
    labels = [f"class{c}" for c in rng.integers(0, 80, n)]
    return Detections(boxes, rng.uniform(0.3, 1.0, n), labels, vectors, captions=[f"a {label}" for label in labels])


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p99": float(np.percentile(values, 99)), "max": max(values), "n": len(values)}


def timed_queries(root: Path, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    with open_index(root) as idx:
        idx.search_embedding(queries[0], K)  # warm-up: loads every segment
        latencies, recalls = [], []
        for q, t in zip(queries, truth):
            t0 = time.perf_counter()
            hits = idx.search_embedding(q, K)
            latencies.append((time.perf_counter() - t0) * 1e3)
            recalls.append(len({h.object_id for h in hits} & set(t.tolist())) / K)
        vector_ms = []  # the FAISS part alone (every segment searched, top k merged)
        for q in queries:
            t0 = time.perf_counter()
            idx.vectors.search(q[None], K)
            vector_ms.append((time.perf_counter() - t0) * 1e3)
        segments = len(idx.manifest.segments)
        image_shards = len(idx.manifest.image_shards)
    return {"p50_ms": statistics.median(latencies), "p99_ms": float(np.percentile(latencies, 99)),
            "vector_search_p50_ms": statistics.median(vector_ms), "recall@10": float(np.mean(recalls)),
            "segments": segments, "image_shards": image_shards, "files": folder_bytes(root)[1]}


def run(objects: int, per_commit: int, dim: int, n_queries: int, work: Path, keep_uncompacted: Path | None = None) -> dict:
    import faiss

    root = work / "index"
    data = clustered_vectors(objects, dim, 1000, 0.8, seed=1)
    queries = clustered_vectors(n_queries, dim, 1000, 0.8, seed=2)
    rng = np.random.default_rng(0)
    info = EmbedderInfo("synthetic", "1", dim, source="synthetic")
    images_per_commit = per_commit // OBJECTS_PER_IMAGE
    n_commits = -(-objects // per_commit)
    tenth = max(1, n_commits // 10)
    commit_ms, opens_ms, max_ratio_after = [], [], 0.0
    deleted_ids: list[int] = []
    started = time.perf_counter()
    writer = IndexWriter(root, info)
    with DiskWatch(root) as watch:
        try:
            image = 0
            for number in range(n_commits):
                if number and number % tenth == 0:
                    writer.close()
                    t0 = time.perf_counter()
                    writer = IndexWriter(root, info)
                    opens_ms.append((time.perf_counter() - t0) * 1e3)
                    # A deleted file: its image row goes, its objects become tombstones.
                    known = list(writer.known_images().values())
                    victim = known[int(rng.integers(len(known)))]
                    writer.remove_images([victim.image_id])
                    deleted_ids.append(victim.image_id)
                start = number * per_commit
                for offset in range(start, min(start + per_commit, objects), OBJECTS_PER_IMAGE):
                    chunk = data[offset : offset + OBJECTS_PER_IMAGE]
                    writer.add_image(ImageRecord(f"/photos/{image:08d}.jpg", 1000, image, f"{image:032x}", 640, 480), detections(chunk, rng))
                    image += 1
                t0 = time.perf_counter()
                writer.commit()
                commit_ms.append((time.perf_counter() - t0) * 1e3)
                if number % 50 == 0 or number == n_commits - 1:
                    size, _ = folder_bytes(root)
                    max_ratio_after = max(max_ratio_after, size / live_bytes(root)) if size > (64 << 20) else max_ratio_after
                    logging.getLogger("write_scaling").info("commit %d/%d: %.0f ms, %d segments", number + 1, n_commits, commit_ms[-1], len(writer.manifest.segments))
        finally:
            writer.close()
    ingest_s = time.perf_counter() - started
    manifest = read_manifest(root)
    with open_index(root) as idx:
        live_ids = idx.vectors.all_ids()
    _, positions = faiss.knn(queries, data[live_ids], K, metric=faiss.METRIC_INNER_PRODUCT)
    truth = live_ids[positions]

    t0 = time.perf_counter()
    IndexWriter(root, info).close()
    warm_open_ms = (time.perf_counter() - t0) * 1e3
    (root / VERIFIED).unlink()
    t0 = time.perf_counter()
    IndexWriter(root, info).close()
    cold_open_ms = (time.perf_counter() - t0) * 1e3

    before = timed_queries(root, queries, truth)
    final_bytes, final_files = folder_bytes(root)
    segment_rows = [s.rows for s in read_manifest(root).segments]
    if keep_uncompacted:
        shutil.copytree(root, keep_uncompacted)
    live_before = live_bytes(root)
    t0 = time.perf_counter()
    with DiskWatch(root) as compact_watch:
        compact_index(root)
    compact_s = time.perf_counter() - t0
    after = timed_queries(root, queries, truth)

    first, last = commit_ms[:tenth], commit_ms[-tenth:]
    return {
        "objects": objects, "objects_per_commit": per_commit, "images_per_commit": images_per_commit, "commits": n_commits,
        "dim": dim, "queries": n_queries, "images_replaced": len(deleted_ids), "ingest_seconds": ingest_s,
        "commit_ms_first_tenth": percentiles(first), "commit_ms_last_tenth": percentiles(last),
        "commit_p50_last_over_first": statistics.median(last) / statistics.median(first),
        "writer_open_ms_each_tenth": opens_ms, "writer_open_ms_end_warm": warm_open_ms, "writer_open_ms_end_cold_cache": cold_open_ms,
        "peak_disk_bytes": watch.peak_bytes, "peak_disk_over_live": watch.peak_ratio, "disk_over_live_after_commits": max_ratio_after,
        "peak_files": watch.peak_files, "final_bytes": final_bytes, "final_files": final_files, "live_bytes": live_before,
        "segments_at_end": len(manifest.segments), "segment_rows_at_end": segment_rows, "tombstones_at_end": manifest.tombstone_count,
        "query_before_compaction": before, "query_after_compaction": after,
        "query_p50_before_over_after": before["p50_ms"] / after["p50_ms"],
        "compact_seconds": compact_s, "compact_peak_disk_over_live": compact_watch.peak_ratio,
        "index_type_after_compaction": read_manifest(root).index_type,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--per-commit", type=int, default=64 * OBJECTS_PER_IMAGE, help="objects per commit (default: 64 images of 6)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, help="write the raw figures here (JSON)")
    parser.add_argument("--work", type=Path, help="folder for the index (default: a temporary one, deleted after)")
    parser.add_argument("--keep-uncompacted", type=Path, help="copy the index as the last commit left it here, to inspect")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    code = commit()
    work = Path(tempfile.mkdtemp(prefix="objsearch-write-", dir=args.work))
    try:
        result = run(args.objects, args.per_commit, args.dim, args.queries, work, args.keep_uncompacted)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        write_result(args.out, result, code=code)


if __name__ == "__main__":
    main()
