"""Shared checks of the reliability suite: what a user can observe of an index, and its invariants."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from objsearch import open_index
from objsearch.store.doctor import check_index
from objsearch.datasets.blob_embedder import build as build_blobs
from tests.conftest import REPO

SLOW_BLOBS = "objsearch.datasets.blob_embedder:build_slow"


def snapshot(root, model=None) -> tuple[list, list]:
    """(objects, images) as a user sees them, ids left out (a resumed run may number them
    differently), after asserting the invariants: every file matches its checksum, FAISS ids ==
    Parquet object ids, no duplicate ids, manifest counts == rows. ``model``: the index's embedder
    (default: the blob embedder)."""
    assert check_index(root) == []
    with open_index(root, model=model or build_blobs()) as idx:
        rows = idx.sql("SELECT i.path, o.x1, o.y1, o.x2, o.y2, o.label, o.caption, o.embedding, o.object_id "
                       "FROM objects o JOIN images i USING (image_id) ORDER BY 1, 2, 3")[1]
        faiss_ids = sorted(idx.vectors.all_ids().tolist())
        images = idx.sql("SELECT path, status, error FROM images ORDER BY path")[1]
        counts = idx.manifest.counts
    object_ids = sorted(r[-1] for r in rows)
    assert object_ids == faiss_ids, "FAISS and Parquet disagree"
    assert len(set(object_ids)) == len(object_ids), "duplicate object ids"
    assert (counts["objects"], counts["images"]) == (len(rows), len(images))
    return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(np.round(r[7], 3))) for r in rows], images


def index_args(folder, root, model: str = SLOW_BLOBS, commit_every: int = 5) -> list[str]:
    return ["index", str(folder), "--index", str(root), "--model", model, "--no-progress",
            "--commit-every", str(commit_every), "--batch-size", "2", "--workers", "1"]


def start_cli(*args: str, **popen_kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "objsearch", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)
