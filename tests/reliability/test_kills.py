"""SIGKILL `objsearch index` at 20+ random moments, resuming each time: the end state equals one
clean run, and every intermediate committed state is consistent."""

from __future__ import annotations

import random
import signal
import time

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
