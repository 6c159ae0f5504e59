"""Indexing with Ray Data against indexing in one process, on the same photos, in one run.

    python -m benchmarks.ray_indexing [--copies 20] [--cpus 2] [--actors 0] [--out FILE]

The sample photos (from installed packages) copied under distinct names make a few hundred files.
They are indexed with the bundled model three times, one after the other (never side by side):
locally (``index_folders``), then on a local Ray started with ``--cpus`` CPUs, over a small
subset and over all of them. Ray's start-up is ``ray.init`` plus the fixed cost of a run (actors
starting, each loading the model, the pipeline filling), taken from the two Ray runs' times as
the intercept of time against images. The two full indexes are then compared object by object.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.provenance import commit, report

RESULT = Path(__file__).parent / "results" / "ray_indexing" / "local-2cpu.json"


def _contents(root: Path, folder: Path, embedder) -> tuple[list, list]:
    """(objects, images) of an index, by path relative to ``folder``, ids left out."""
    from objsearch import open_index

    with open_index(root, model=embedder) as index:
        objects = index.sql("SELECT i.path, o.x1, o.y1, o.x2, o.y2, o.label, o.caption, o.score, o.embedding "
                            "FROM objects o JOIN images i USING (image_id) ORDER BY 1, 2, 3, 6")[1]
        images = index.sql("SELECT path, status, error, width, height, content_hash FROM images ORDER BY path")[1]
    relative = lambda path: str(Path(path).relative_to(folder))  # noqa: E731
    return ([(relative(o[0]), *o[1:8], np.asarray(o[8], np.float32)) for o in objects],
            [(relative(i[0]), *i[1:]) for i in images])


def _compare(a: tuple[list, list], b: tuple[list, list]) -> dict:
    objects_a, objects_b = a[0], b[0]
    same_rows = len(objects_a) == len(objects_b) and all(x[:8] == y[:8] for x, y in zip(objects_a, objects_b))
    diff = max((float(np.abs(x[8] - y[8]).max()) for x, y in zip(objects_a, objects_b)), default=0.0)
    return {"objects": [len(objects_a), len(objects_b)], "same_paths_boxes_labels_captions_scores": same_rows,
            "same_image_rows": a[1] == b[1], "max_embedding_abs_diff": diff,
            "equal": same_rows and a[1] == b[1] and diff <= 1e-3}


def _timed_index(photos: Path, root: Path, embedder, options) -> tuple[float, object]:
    from indexer.pipeline import index_folders

    started = time.perf_counter()
    summary = index_folders([photos], root, embedder=embedder, model="bundled", options=options)
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20, help="copies of each sample photo")
    parser.add_argument("--small", type=int, default=24, help="files in the small Ray run (for the fixed cost)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--actors", type=int, default=0, help="model actors (0 = automatic, as `objsearch index --ray`)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    code = commit()

    import ray

    from indexer.pipeline import IndexOptions
    from objsearch.embedders import load_embedder
    from objsearch.samples import gather_sample_photos

    work = Path(tempfile.mkdtemp(prefix="objsearch-ray-bench-"))
    try:
        originals = gather_sample_photos(work / "originals")
        photos, small = work / "photos", work / "small"
        photos.mkdir()
        small.mkdir()
        for copy in range(args.copies):
            for src in originals:
                shutil.copyfile(src, photos / f"{copy:03d}-{src.name}")
        for path in sorted(photos.iterdir())[:args.small]:
            shutil.copyfile(path, small / path.name)
        count = len(originals) * args.copies
        embedder = load_embedder("bundled")

        local_s, local = _timed_index(photos, work / "local", embedder, IndexOptions(progress=False))
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - started
        try:
            small_s, _ = _timed_index(small, work / "ray-small", embedder, IndexOptions(progress=False, ray="local", ray_actors=args.actors))
            ray_s, on_ray = _timed_index(photos, work / "ray", embedder, IndexOptions(progress=False, ray="local", ray_actors=args.actors))
        finally:
            ray.shutdown()
        per_image = (ray_s - small_s) / (count - args.small)
        fixed_s = small_s - args.small * per_image
        equality = _compare(_contents(work / "local", photos, embedder), _contents(work / "ray", photos, embedder))

        result = {
            "photos": count, "distinct_photos": len(originals), "ray_cpus": args.cpus, "ray_actors": args.actors or "automatic",
            "local": {"seconds": round(local_s, 2), "images_per_s": round(count / local_s, 3), "objects": local.objects_added},
            "ray": {"seconds": round(ray_s, 2), "images_per_s": round(count / ray_s, 3), "objects": on_ray.objects_added,
                    "steady_images_per_s": round(1 / per_image, 3)},
            "ray_over_local_images_per_s": round(local_s / ray_s, 3),
            "ray_steady_over_local": round(local_s / count / per_image, 3),
            "ray_start_up": {"ray_init_s": round(init_s, 2), "run_fixed_cost_s": round(fixed_s, 2),
                             "small_run": {"files": args.small, "seconds": round(small_s, 2)}},
            "indexes_equal": equality,
        }
        report(args.out, result, code=code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
