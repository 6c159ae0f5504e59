"""SIGKILL `objsearch index` at 20+ random moments, resuming each time: the end state equals one
clean run, and every intermediate committed state is consistent."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np

from objsearch.store.layout import MANIFEST
from objsearch.store.manifest import read_manifest
from objsearch.datasets.scenes import make_dataset
from tests.conftest import run_cli
from tests.reliability.helpers import index_args, snapshot, start_cli

KILLS = 22


def test_twenty_kills_then_resume_equals_a_clean_run(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 300)
    clean = tmp_path / "clean"
    assert run_cli(*index_args(folder, clean)).returncode == 0
    expected = snapshot(clean)
    assert len(expected[0]) == 900

    root = tmp_path / "killed"
    rng = random.Random(20261124)
    kills, runs = 0, 0
    while kills < KILLS and runs < 3 * KILLS:
        runs += 1
        process = start_cli(*index_args(folder, root))
        generation = read_manifest(root).generation if (root / MANIFEST).exists() else 0
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.0, 1.5))  # anywhere, start-up included
        else:  # after it has committed something, at a random point of the next commits
            deadline = time.time() + 30
            while time.time() < deadline and process.poll() is None:
                if (root / MANIFEST).exists() and read_manifest(root).generation > generation:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.25))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        if (root / MANIFEST).exists():
            snapshot(root)  # whatever was committed is consistent
    assert kills >= KILLS, f"only {kills} of {runs} runs could be killed before finishing"
    final = run_cli(*index_args(folder, root))
    assert final.returncode == 0, final.stderr
    assert snapshot(root) == expected


def test_kills_during_compaction_never_change_what_the_index_holds(tmp_path):
    """`objsearch compact` killed at random moments of its run: every state left behind is the same
    index, and the next compaction finishes and leaves no stray file."""
    import shutil

    from tests.test_segments import build

    root = tmp_path / "idx"
    build(root, np.random.default_rng(7), commits=150, per_commit=8, auto_compact=False)
    expected = snapshot(root)
    shutil.copytree(root, tmp_path / "reference")
    shutil.copytree(root, tmp_path / "pristine")
    started = time.time()
    assert run_cli("compact", "--index", str(tmp_path / "reference")).returncode == 0
    duration = time.time() - started  # start-up, reading, merging, writing, the swap

    rng = random.Random(20261130)
    kills_before_commit, kills_with_half_written_files = 0, 0
    for attempt in range(16):
        if len(read_manifest(root).segments) == 1:  # the last run finished: start again from the uncompacted index
            shutil.rmtree(root)
            shutil.copytree(tmp_path / "pristine", root)
        generation = read_manifest(root).generation
        before = {p for p in root.rglob("*") if p.is_file()}
        shards_before = set(os.listdir(root / "objects"))
        process = start_cli("compact", "--index", str(root))
        if attempt % 2:  # anywhere in the run
            time.sleep(rng.uniform(0.3, 1.0) * duration)
        else:  # just after the merged shard starts being written
            while process.poll() is None and not set(os.listdir(root / "objects")) - shards_before:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.02))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            if read_manifest(root).generation == generation:
                kills_before_commit += 1
                kills_with_half_written_files += bool({p for p in root.rglob("*") if p.is_file()} - before)
        process.wait()
        objects, images = snapshot(root)
        assert sorted(objects) == sorted(expected[0]) and images == expected[1]
        if kills_before_commit >= 3 and kills_with_half_written_files >= 1:
            break
    assert kills_before_commit >= 3 and kills_with_half_written_files >= 1, (kills_before_commit, kills_with_half_written_files)
    final = run_cli("compact", "--index", str(root))
    assert final.returncode == 0, final.stderr
    assert len(read_manifest(root).segments) == 1
    assert sorted(snapshot(root)[0]) == sorted(expected[0])
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.parent != root and p.parent.name != "readers"}
    assert on_disk == {e.path for e in read_manifest(root).files()}  # the killed runs' files are gone
