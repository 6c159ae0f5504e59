"""Killing `objsearch index` at any moment and re-running it ends in the state of one clean run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from objsearch import open_index
from objsearch.store.layout import MANIFEST, read_manifest
from tests.blob_embedder import build as build_blobs
from tests.conftest import BLOBS, REPO, run_cli
from tests.scenes import make_dataset


def snapshot(root):
    """Everything a user can observe of the objects, minus the ids (which a resumed run may renumber)."""
    import faiss

    with open_index(root, model=build_blobs()) as idx:
        rows = idx.sql("SELECT i.path, o.x1, o.y1, o.x2, o.y2, o.label, o.caption, o.embedding, o.object_id FROM objects o JOIN images i USING (image_id) ORDER BY 1, 2, 3")[1]
        faiss_ids = sorted(faiss.vector_to_array(idx.vector_index.id_map).tolist())
        images = idx.sql("SELECT path, status FROM images ORDER BY path")[1]
    object_ids = sorted(r[-1] for r in rows)
    assert object_ids == faiss_ids, "FAISS and Parquet disagree"
    assert len(set(object_ids)) == len(object_ids), "duplicate object ids"
    return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(np.round(r[7], 3))) for r in rows], images


def index_args(folder, root):
    return ["index", str(folder), "--index", str(root), "--model", BLOBS, "--no-progress", "--commit-every", "5", "--batch-size", "2", "--workers", "1"]


def test_kill_and_resume_matches_a_clean_run(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 200)
    clean = tmp_path / "clean"
    assert run_cli(*index_args(folder, clean)).returncode == 0
    expected = snapshot(clean)
    assert len(expected[0]) == 600

    root = tmp_path / "killed"
    rng = random.Random(7)
    env_path = {"PYTHONPATH": str(REPO)}
    kills = 0
    for _ in range(8):
        process = subprocess.Popen([sys.executable, "-m", "objsearch", *index_args(folder, root)], cwd=REPO,
                                   env={**os.environ, **env_path}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Let it get somewhere (start-up, then some commits), then kill it without warning.
        start_generation = read_manifest(root).generation if (root / MANIFEST).exists() else 0
        deadline = time.time() + 30
        target = rng.uniform(0.0, 0.3)
        while time.time() < deadline and process.poll() is None:
            if (root / MANIFEST).exists() and read_manifest(root).generation > start_generation:
                time.sleep(target)
                break
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3, "the runs finished before they could be killed; make the data set larger"
    final = run_cli(*index_args(folder, root))
    assert final.returncode == 0, final.stderr
    assert snapshot(root) == expected
