"""Indexing throughput against the model's own limit, and memory as the collection grows.

    python -m benchmarks.throughput [--copies 8] [--batch-size 8] [--objembed runs/tiny/final]
                                    [--batch-sizes 1 4 8 16 32] [--memory-images 1000 10000]

1. Model limit vs end to end, for the bundled embedder (sample photos x copies) and, when its
   checkpoint exists, the tiny ObjEmbed (synthetic test images x copies): the same files are decoded
   up front and fed to `embedder.detect` in batches (model-only images/s), then indexed from
   scratch with `index_folders` (end-to-end images/s, decoding and writing included).
2. Batch sizes: model-only images/s of each embedder at each ``--batch-sizes`` value (what the
   automatic CPU batch size is based on).
3. Memory: peak RSS of `objsearch index` (a fresh process, the fast test embedder) over N
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
from objsearch.datasets.scenes import make_dataset
from objsearch.embedders import load_embedder
from objsearch.samples import gather_sample_photos

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OBJEMBED = REPO / "runs" / "tiny" / "final"
DEFAULT_OBJEMBED_IMAGES = REPO / "runs" / "synthetic" / "images" / "test"


def copied_photos(originals: list[Path], folder: Path, copies: int) -> Path:
    folder.mkdir(parents=True)
    for copy in range(copies):
        for src in originals:
            shutil.copyfile(src, folder / f"{copy:03d}-{src.name}")
    return folder


def model_only_rate(embedder, pixels: list, batch_size: int) -> float:
    """Images/s of ``embedder.detect`` alone over already decoded images."""
    embedder.detect(pixels[:1])  # warm-up (lazy model loading)
    t0 = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        embedder.detect(pixels[start : start + batch_size])
    return len(pixels) / (time.perf_counter() - t0)


def model_only_vs_end_to_end(name: str, embedder, photos: Path, index: Path, batch_size: int) -> None:
    files = discover([photos]).files
    pixels = [load_file(f, 100_000_000, 1600).image.pixels for f in files]
    model_rate = model_only_rate(embedder, pixels, batch_size)
    t0 = time.perf_counter()
    summary = index_folders([photos], index, embedder=embedder, options=IndexOptions(progress=False, batch_size=batch_size))
    end_to_end = summary.indexed / (time.perf_counter() - t0)
    print(f"{name}, {len(files)} images, batch {batch_size}: model only {model_rate:.2f} images/s, "
          f"end to end {end_to_end:.2f} images/s -> ratio {end_to_end / model_rate:.2f}")
    print("  stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(summary.stage_seconds.items())))


def batch_sweep(name: str, embedder, photos: Path, sizes: list[int]) -> None:
    files = discover([photos]).files
    pixels = [load_file(f, 100_000_000, 1600).image.pixels for f in files]
    rates = {size: model_only_rate(embedder, pixels, size) for size in sizes}
    print(f"{name}, model only by batch size ({len(files)} images): "
          + ", ".join(f"{size}: {rate:.2f}" for size, rate in rates.items()) + " images/s")


def embedders_and_images(work: Path, copies: int, objembed: Path) -> list[tuple[str, object, Path]]:
    """(name, embedder, folder of images) for each embedder this run measures."""
    runs = [("bundled embedder", load_embedder("bundled"),
             copied_photos(gather_sample_photos(work / "originals"), work / "photos", copies))]
    synthetic = sorted(DEFAULT_OBJEMBED_IMAGES.glob("*.png"))[:100]
    if objembed.is_dir() and synthetic:
        runs.append((f"tiny ObjEmbed ({objembed})", load_embedder(str(objembed)),
                     copied_photos(synthetic, work / "synthetic", max(1, copies // 4))))
    else:
        print(f"no ObjEmbed checkpoint at {objembed} or no images in {DEFAULT_OBJEMBED_IMAGES}: "
              "run `python -m training.train` first to measure the tiny ObjEmbed")
    return runs


def peak_rss_mib(folder: Path, index: Path) -> float:
    code = (
        "import sys; from objsearch.cli import main; sys.argv = ['objsearch', 'index', sys.argv[1], '--index', sys.argv[2], "
        "'--model', 'objsearch.datasets.blob_embedder:build', '--no-progress', '--workers', '2'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's high-water mark across fork + exec.
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(index)], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory_growth(work: Path, sizes: list[int]) -> None:
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
    parser.add_argument("--objembed", type=Path, default=DEFAULT_OBJEMBED, help="ObjEmbed checkpoint directory")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--memory-images", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--parts", nargs="+", choices=["model", "batch", "memory"], default=["model", "batch", "memory"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="objsearch-throughput-"))
    try:
        if "model" in args.parts or "batch" in args.parts:
            for number, (name, embedder, images) in enumerate(embedders_and_images(work, args.copies, args.objembed)):
                if "model" in args.parts:
                    model_only_vs_end_to_end(name, embedder, images, work / f"index-{number}", args.batch_size)
                if "batch" in args.parts:
                    batch_sweep(name, embedder, images, args.batch_sizes)
        if "memory" in args.parts:
            memory_growth(work, args.memory_images)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
