"""Queries during indexing never fail and never see half a commit; a second writer is refused at once."""

from __future__ import annotations

import time

from objsearch import open_index
from objsearch.store.layout import MANIFEST
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import build as build_blobs
from tests.conftest import run_cli
from tests.reliability.helpers import index_args, snapshot, start_cli


def test_queries_while_indexing_see_only_whole_commits(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 150)
    root = tmp_path / "idx"
    writer = start_cli(*index_args(folder, root, commit_every=3))
    while not (root / MANIFEST).exists():
        time.sleep(0.01)
    embedder = build_blobs()
    states, queries, queries_with_red = set(), 0, 0
    while writer.poll() is None:
        objects, images = snapshot(root)  # opens the index; asserts every invariant
        # Every commit holds whole images: each indexed scene has its three boxes.
        per_path = {}
        for row in objects:
            per_path[row[0]] = per_path.get(row[0], 0) + 1
        assert set(per_path.values()) <= {3}
        # The index only grows, so the red boxes of this snapshot are there when the query runs.
        expected_red = min(5, sum(row[5] == "red box" for row in objects))
        with open_index(root, model=embedder) as index:
            hits = index.search_text("red", k=5, where="score > 0.5")
        assert [h.label for h in hits[:expected_red]] == ["red box"] * expected_red
        assert all(h.similarity > 0.95 for h in hits[:expected_red])  # 1 / sqrt(1 + the size terms squared)
        queries_with_red += expected_red > 0
        states.add(len(objects))
        queries += 1
    assert writer.returncode == 0, writer.stderr.read()
    assert queries >= 10 and len(states) >= 3, (queries, states)  # really ran alongside the writer
    assert queries_with_red >= 5, queries_with_red
    assert len(snapshot(root)[0]) == 450


def test_a_second_writer_is_refused_at_once_with_the_holders_pid(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 150)
    root = tmp_path / "idx"
    first = start_cli(*index_args(folder, root))
    try:
        while not (root / MANIFEST).exists():
            time.sleep(0.01)
        started = time.perf_counter()
        second = run_cli(*index_args(folder, root), timeout=60)
        elapsed = time.perf_counter() - started
        assert first.poll() is None, "the first writer finished too early for the test"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 1
    assert f"locked by PID {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert elapsed < 15  # interpreter start-up included; no waiting on the lock
