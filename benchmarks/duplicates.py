"""The cost of `objsearch duplicates` (FAISS range searches, then connected components) at 100k objects.

    python -m benchmarks.duplicates [--objects 100000] [--planted 0.01] [--threshold 0.95] [--out FILE]

An index is written the way the indexer writes one (6 objects an image, 64 images a commit,
automatic merges) from the ANN benchmark's clustered 512-d vectors (1,000 clusters, noise 0.8),
where a share (``--planted``) of the objects are near-copies of others (the copy plus noise of
norm ~0.05, as re-encoding a photo gives). Reported: the seconds ``duplicate_groups`` takes (median
of 3 runs), the groups found, and how many planted pairs ended in one group.
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
from benchmarks.provenance import commit, report
from benchmarks.write_scaling import detections

OBJECTS_PER_IMAGE = 6
IMAGES_PER_COMMIT = 64
RESULT = Path(__file__).parent / "results" / "duplicates" / "100k.json"


def build(root: Path, vectors: np.ndarray) -> None:
    from objsearch.store.commit import ImageRecord, IndexWriter
    from objsearch.store.manifest import EmbedderInfo

    rng = np.random.default_rng(0)
    with IndexWriter(root, EmbedderInfo("synthetic", "1", vectors.shape[1], source="synthetic")) as writer:
        per_commit = OBJECTS_PER_IMAGE * IMAGES_PER_COMMIT
        for image, start in enumerate(range(0, len(vectors), OBJECTS_PER_IMAGE)):
            chunk = vectors[start:start + OBJECTS_PER_IMAGE]
            writer.add_image(ImageRecord(f"/photos/{image:07d}.jpg", 1000, image, f"{image:032x}", 640, 480), detections(chunk, rng))
            if (start + OBJECTS_PER_IMAGE) % per_commit == 0:
                writer.commit()
        writer.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--planted", type=float, default=0.01, help="share of objects that are near-copies of another")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    code = commit()

    from objsearch import open_index
    from objsearch.duplicates import duplicate_groups

    vectors = clustered_vectors(args.objects, 512, 1000, 0.8, seed=3)
    rng = np.random.default_rng(4)
    copies = rng.choice(args.objects, int(args.objects * args.planted), replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(args.objects), copies), len(copies), replace=False)
    noisy = vectors[originals] + rng.normal(0, 0.05 / np.sqrt(512), (len(copies), 512)).astype(np.float32)
    vectors[copies] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    work = Path(tempfile.mkdtemp(prefix="objsearch-dups-"))
    try:
        started = time.perf_counter()
        build(work / "index", vectors)
        build_s = time.perf_counter() - started
        with open_index(work / "index") as index:
            segments = len(index.manifest.segments)
            ids = index.vectors.all_ids()  # object id = position + 0 (the writer numbers objects in order)
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                groups = duplicate_groups(index, args.threshold)
                runs.append(time.perf_counter() - started)
        group_of = {object_id: number for number, group in enumerate(groups) for object_id in group}
        found = sum(1 for a, b in zip(ids[copies], ids[originals]) if a in group_of and group_of[a] == group_of.get(b))
        result = {
            "objects": args.objects, "dim": 512, "segments": segments, "threshold": args.threshold,
            "index_build_s": round(build_s, 1),
            "duplicate_groups_s": {"median": round(statistics.median(runs), 2), "runs": [round(r, 2) for r in runs]},
            "groups": len(groups), "objects_in_groups": sum(map(len, groups)), "largest_group": max(map(len, groups), default=0),
            "planted_pairs": len(copies), "planted_pairs_grouped": found,
        }
        report(args.out, result, code=code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
