"""Engine speed on real sample photos: indexing rate, peak memory, query latency, bytes per object.

    python -m benchmarks.engine_speed [--copies 8] [--repeats 50]

Copies of the sample photos (from installed packages) under distinct names make a folder large
enough to time; every figure below comes from this one run, on this machine.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERIES = ("dog", "cat", "horse", "a cup of coffee", "red umbrella", "person on a bicycle")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def copied_samples(work: Path, copies: int) -> Path:
    """``work/photos`` holding ``copies`` copies of each sample photo under distinct names."""
    from objsearch.samples import gather_sample_photos

    originals = gather_sample_photos(work / "originals")
    photos = work / "photos"
    photos.mkdir()
    for copy in range(copies):
        for source in originals:
            shutil.copyfile(source, photos / f"{copy:03d}-{source.name}")
    return photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=8, help="copies of each sample photo")
    parser.add_argument("--repeats", type=int, default=50, help="repeats of each in-process query")
    parser.add_argument("--cli-repeats", type=int, default=5, help="cold `objsearch query` runs")
    args = parser.parse_args()

    from indexer.pipeline import IndexOptions, index_folders
    from objsearch import open_index
    from objsearch.store.manifest import index_size_bytes

    work = Path(tempfile.mkdtemp(prefix="objsearch-bench-"))
    try:
        photos = copied_samples(work, args.copies)
        count = len(list(photos.iterdir()))

        root = work / "index"
        from objsearch.embedders import load_embedder

        started = time.perf_counter()
        embedder = load_embedder("bundled")
        summary = index_folders([photos], root, embedder=embedder, options=IndexOptions(progress=False))
        wall = time.perf_counter() - started
        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        with open_index(root) as index:
            index.search_text("warm-up")
            full, vector_only = [], []
            for _ in range(args.repeats):
                for q in QUERIES:
                    t0 = time.perf_counter()
                    index.search_text(q, k=10)
                    full.append((time.perf_counter() - t0) * 1e3)
            embeddings = index.embedder.embed_texts(list(QUERIES))
            for _ in range(args.repeats):
                for e in embeddings:
                    t0 = time.perf_counter()
                    index.search_embedding(e, k=10)
                    vector_only.append((time.perf_counter() - t0) * 1e3)
            objects = index.manifest.counts["objects"]
        size = index_size_bytes(root)

        cli = []
        for _ in range(args.cli_repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "objsearch", "query", "dog", "--index", str(root)], check=True, capture_output=True)
            cli.append(time.perf_counter() - t0)

        print(f"photos indexed           {summary.indexed} of {count} ({count // args.copies} originals x {args.copies} copies), {objects} objects")
        print(f"indexing wall time       {wall:.1f} s (incl. loading the text encoder) -> {count / wall:.2f} images/s")
        print(f"index_folders only       {summary.seconds:.1f} s -> {summary.images_per_second:.2f} images/s; stages: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(summary.stage_seconds.items())))
        # Decode workers are not counted: RUSAGE_CHILDREN inherits the parent's high-water mark at fork.
        print(f"peak RSS (main process)  {peak_self:.0f} MiB")
        print(f"search_text (in-process) median {statistics.median(full):.2f} ms, p95 {_percentile(full, 0.95):.2f} ms  ({len(full)} queries, incl. text encoding)")
        print(f"search_embedding         median {statistics.median(vector_only):.3f} ms, p95 {_percentile(vector_only, 0.95):.3f} ms  (FAISS + DuckDB row fetch)")
        print(f"cold CLI `objsearch query` median {statistics.median(cli):.2f} s over {len(cli)} runs (process start + model load + query)")
        print(f"index size on disk       {size / 1024:.0f} KiB, {size / max(objects, 1):.0f} bytes per object")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
