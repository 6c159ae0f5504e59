"""Indexing throughput against the model's own limit, and memory as the collection grows.

    python -m benchmarks.throughput [--copies 8] [--memory-images 1000 10000]

1. Model limit vs end to end (bundled embedder, sample photos x copies): the same files are
   decoded up front and fed to `embedder.detect` in batches (model-only images/s), then indexed
   from scratch with `index_folders` (end-to-end images/s, decoding and writing included).
2. Memory: peak RSS of `objsearch index` (a fresh process, the fast test embedder) over N
   generated images, for each N; flat memory means the ratio stays near 1.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from indexer.decode import load_file
from indexer.discover import discover
from indexer.pipeline import IndexOptions, index_folders
from objsearch.embedders import load_embedder
from objsearch.samples import gather_sample_photos

REPO = Path(__file__).resolve().parents[1]


def model_only_vs_end_to_end(work: Path, copies: int, batch_size: int) -> None:
    originals = gather_sample_photos(work / "originals")
    photos = work / "photos"
    photos.mkdir()
    for copy in range(copies):
        for src in originals:
            shutil.copyfile(src, photos / f"{copy:03d}-{src.name}")
    embedder = load_embedder("bundled")
    files = discover([photos]).files
    decoded = [load_file(f, 100_000_000, 1600).image for f in files]
    embedder.detect(decoded[:1] and [decoded[0].pixels])  # warm-up (lazy model loading)
    t0 = time.perf_counter()
    for start in range(0, len(decoded), batch_size):
        embedder.detect([d.pixels for d in decoded[start : start + batch_size]])
    model_rate = len(decoded) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    summary = index_folders([photos], work / "index", embedder=embedder, options=IndexOptions(progress=False, batch_size=batch_size))
    end_to_end = summary.indexed / (time.perf_counter() - t0)
    print(f"bundled embedder, {len(files)} photos, batch {batch_size}: model only {model_rate:.2f} images/s, "
          f"end to end {end_to_end:.2f} images/s -> ratio {end_to_end / model_rate:.2f}")
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(summary.stage_seconds.items())))


def peak_rss_mib(folder: Path, index: Path) -> float:
    code = (
        "import sys; from objsearch.cli import main; sys.argv = ['objsearch', 'index', sys.argv[1], '--index', sys.argv[2], "
        "'--model', 'tests.blob_embedder:build', '--no-progress', '--workers', '2'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's high-water mark across fork + exec.
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(index)], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory_growth(work: Path, sizes: list[int]) -> None:
    sys.path.insert(0, str(REPO))
    from tests.scenes import make_dataset

    peaks = {}
    for n in sizes:
        folder = work / f"scenes-{n}"
        make_dataset(folder, n)
        peaks[n] = peak_rss_mib(folder, work / f"index-{n}")
    base = peaks[sizes[0]]
    print("peak RSS of `objsearch index` (main process, test embedder): " + ", ".join(f"{n:,} images {p:.0f} MiB ({p / base:.2f}x)" for n, p in peaks.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--parts", nargs="+", choices=["model", "memory"], default=["model", "memory"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="objsearch-throughput-"))
    try:
        if "model" in args.parts:
            model_only_vs_end_to_end(work, args.copies, args.batch_size)
        if "memory" in args.parts:
            memory_growth(work, args.memory_images)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
