"""Writes that fail (a full disk, an injected I/O error) end in a clear message, with the last
committed state intact; the next run completes the work."""

from __future__ import annotations

import errno
import shutil
import subprocess
import uuid

import pytest
from typer.testing import CliRunner

from objsearch.store import layout, parquet, vectors
from indexer.pipeline import IndexOptions, index_folders
from objsearch.cli import app
from objsearch.store.manifest import read_manifest
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import build as build_blobs
from tests.conftest import BLOBS
from tests.reliability.helpers import snapshot

OPTIONS = IndexOptions(progress=False, workers=1, commit_every=4, batch_size=2)


def dataset_and_clean_run(tmp_path, images: int):
    """Generate ``images`` scenes and index them once, undisturbed: (folder, what a user sees)."""
    folder = tmp_path / "imgs"
    make_dataset(folder, images)
    index_folders([folder], tmp_path / "clean", embedder=build_blobs(), model=BLOBS, options=OPTIONS)
    return folder, snapshot(tmp_path / "clean")


def inject_write_failure(monkeypatch, fail_on: int, code: int = errno.EIO) -> None:
    """Make the ``fail_on``-th durable write of the store (1-based) raise OSError, half-way: after
    the temp file is written, before it is renamed into place."""
    real = layout.durable_write
    calls = {"n": 0}

    def write(path, content):
        calls["n"] += 1
        if calls["n"] != fail_on:
            return real(path, content)

        def write_then_fail(tmp):
            content(tmp)
            raise OSError(code, f"injected: {errno.errorcode[code]}", str(path))

        return real(path, write_then_fail)

    for module in (layout, parquet, vectors):
        monkeypatch.setattr(module, "durable_write", write)


@pytest.mark.parametrize("fail_on", [1, 2, 3, 4, 5, 7, 10, 13])
def test_an_io_error_at_any_write_leaves_the_last_commit_intact(tmp_path, monkeypatch, fail_on):
    """Write 1 is the new index's empty manifest; then each commit makes 4 durable writes (images
    shard, objects shard, vectors, manifest), so these points hit each kind of write, in the
    first and later commits."""
    folder, expected = dataset_and_clean_run(tmp_path, 12)

    root = tmp_path / "idx"
    inject_write_failure(monkeypatch, fail_on)
    with pytest.raises(OSError, match="injected"):
        index_folders([folder], root, embedder=build_blobs(), model=BLOBS, options=OPTIONS)
    monkeypatch.undo()
    if fail_on == 1:
        assert not (root / "manifest.json").exists()  # nothing was ever committed
        before = -1
    else:
        before = read_manifest(root).generation
        snapshot(root)  # consistent, whatever got committed
    index_folders([folder], root, embedder=build_blobs(), model=BLOBS, options=OPTIONS)
    assert read_manifest(root).generation > before
    assert snapshot(root) == expected


def test_the_cli_reports_an_io_error_in_one_line(tmp_path, monkeypatch):
    make_dataset(tmp_path / "imgs", 6)
    inject_write_failure(monkeypatch, 7, errno.ENOSPC)
    result = CliRunner().invoke(app, ["index", str(tmp_path / "imgs"), "--index", str(tmp_path / "idx"), "--model", BLOBS, "--no-progress", "--workers", "1", "--commit-every", "2", "--batch-size", "2"])
    assert result.exit_code == 1
    assert "No space left on device" in result.output or "ENOSPC" in result.output
    assert "last committed state" in result.output and "Traceback" not in result.output


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 128 KiB tmpfs: a real full disk. Needs root (CI and this project's machines run as root)."""
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the injected-error tests cover the same path")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_stops_indexing_cleanly_and_a_later_run_completes(tmp_path, small_tmpfs):
    folder, expected = dataset_and_clean_run(tmp_path, 400)

    root = small_tmpfs / "idx"
    runner = CliRunner()
    args = ["index", str(folder), "--index", str(root), "--model", BLOBS, "--no-progress", "--workers", "1", "--commit-every", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    partial = snapshot(root)  # the last commit that fitted is intact
    assert 0 < len(partial[0]) < len(expected[0])

    # The user makes room (here: moves the index to a larger disk) and runs again.
    bigger = tmp_path / "moved"
    shutil.copytree(root, bigger)
    assert runner.invoke(app, [*args[:3], str(bigger), *args[4:]]).exit_code == 0
    assert snapshot(bigger) == expected
