"""Indexing as units of work: parts from any scheduler, and `objsearch index --ray` on a local Ray
(2 CPUs). A Ray-built index equals a locally built one; a killed driver, a lost worker and a
failing batch lose only unfinished work, and the next run ends equal to one clean run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import numpy as np
from PIL import Image

from indexer.parts import list_parts, staging_dir
from indexer.pipeline import IndexOptions, index_folders
from indexer.work import index_files, pending_files
from objsearch import open_index
from objsearch.datasets.blob_embedder import SlowBlobEmbedder, build as build_blobs
from objsearch.datasets.scenes import make_dataset
from tests.conftest import BLOBS, run_cli
from tests.reliability.helpers import SLOW_BLOBS, index_args, snapshot, start_cli

FLAKY = "tests.ray_models:flaky"


class CountingBlobs(SlowBlobEmbedder):
    """The blob embedder, counting the images it embeds."""

    def __init__(self) -> None:
        self.embedded = 0

    def detect(self, images):
        self.embedded += len(images)
        return super().detect(images)


def clean_index(folder, root):
    index_folders([folder], root, embedder=build_blobs(), model=BLOBS, options=IndexOptions(progress=False, workers=1))
    return snapshot(root)


def test_parts_from_a_plain_loop_are_committed_without_embedding_them_again(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 30)
    expected = clean_index(folder, tmp_path / "clean")

    root = tmp_path / "idx"
    files = pending_files([folder], root)
    assert len(files) == 30
    for start in range(0, 30, 8):  # what a batch scheduler would run, one task per chunk
        index_files(files[start:start + 8], staging_dir(root), BLOBS)
    index_files(files[:8], staging_dir(root), BLOBS)  # a retried task: the same files twice
    Image.new("RGB", (320, 240), "white").save(folder / "scene_0003.png")  # changed after its part was made
    expected_changed = clean_index(folder, tmp_path / "clean2")

    counting = CountingBlobs()
    summary = index_folders([folder], root, embedder=counting, model=BLOBS, options=IndexOptions(progress=False, workers=1))
    assert counting.embedded == 1, "only the file changed since its part was made is embedded again"
    assert (summary.recovered, summary.indexed) == (29, 1)
    assert list_parts(staging_dir(root)) == []
    assert snapshot(root) == expected_changed != expected


def test_a_part_of_another_model_is_not_committed(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 4)
    root = tmp_path / "idx"
    index_files(pending_files([folder], root), staging_dir(root), "objsearch.datasets.blob_embedder:build_other")
    counting = CountingBlobs()
    summary = index_folders([folder], root, embedder=counting, model=BLOBS, options=IndexOptions(progress=False, workers=1))
    assert (counting.embedded, summary.recovered) == (4, 0)
    assert list_parts(staging_dir(root)) == []


def test_a_part_holding_work_of_another_folder_is_kept_for_its_run(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    make_dataset(first, 3)
    make_dataset(second, 3, seed=1)
    root = tmp_path / "idx"
    index_files(pending_files([first, second], root), staging_dir(root), BLOBS)  # one part for both folders
    counting = CountingBlobs()
    options = IndexOptions(progress=False, workers=1)
    assert index_folders([first], root, embedder=counting, model=BLOBS, options=options).recovered == 3
    assert len(list_parts(staging_dir(root))) == 1, "the other folder's finished work was deleted"
    assert index_folders([second], root, embedder=counting, model=BLOBS, options=options).recovered == 3
    assert counting.embedded == 0 and list_parts(staging_dir(root)) == []


def _objects_by_file(root, model) -> tuple[list, list]:
    with open_index(root, model=model) as idx:
        objects = idx.sql("SELECT i.path, o.x1, o.y1, o.x2, o.y2, o.label, o.caption, o.score, o.embedding "
                          "FROM objects o JOIN images i USING (image_id) ORDER BY 1, 2, 3, 6")[1]
        images = idx.sql("SELECT path, status, error, width, height, content_hash FROM images ORDER BY path")[1]
    strip = lambda path: os.path.basename(path)  # noqa: E731  (the two indexes' folders differ)
    return [(strip(o[0]), *o[1:8], np.asarray(o[8], np.float32)) for o in objects], [(strip(i[0]), *i[1:]) for i in images]


def test_ray_index_equals_local_index_of_the_same_photos(sample_photos, bundled_index, bundled_embedder, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(sample_photos, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    root = tmp_path / "ray-index"
    result = run_cli("index", str(folder), "--index", str(root), "--ray", "local", "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1" in result.stdout

    ray_objects, ray_images = _objects_by_file(root, bundled_embedder)
    local_objects, local_images = _objects_by_file(bundled_index, bundled_embedder)
    assert len(ray_objects) == len(local_objects) > 10
    for ray_row, local_row in zip(ray_objects, local_objects):
        assert ray_row[:8] == local_row[:8]  # file, box, label, caption, score
        np.testing.assert_allclose(ray_row[8], local_row[8], atol=1e-3)  # float16 embeddings
    assert [i for i in ray_images if i[0] != "broken.jpg"] == local_images
    broken = next(i for i in ray_images if i[0] == "broken.jpg")
    assert broken[1] == "error" and "corrupt image header" in broken[2]
    assert list_parts(staging_dir(root)) == []


def test_killed_ray_driver_loses_only_unfinished_work(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 120)
    expected = clean_index(folder, tmp_path / "clean")

    root = tmp_path / "idx"
    # Nothing is committed before the end (commit every 1000 images): everything finished before
    # the kill exists only as parts, which the next run must commit without embedding again.
    args = [*index_args(folder, root, SLOW_BLOBS, commit_every=1000), "--batch-size", "4", "--ray", "local"]
    driver = start_cli(*args, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(list_parts(staging_dir(root))) < 3 and driver.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, "the run ended before it could be killed: " + driver.communicate()[1][-2000:]
        staged = len(list_parts(staging_dir(root)))
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        _kill_group(driver)
    assert staged >= 3

    result = run_cli(*args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    recovered = int(result.stdout.split("more from an earlier run")[0].rsplit(", ", 1)[1])
    indexed = int(result.stdout.split("indexed ", 1)[1].split(" ")[0])
    assert recovered >= 4 * staged - 4 and recovered + indexed == 120  # parts hold 4 files each (the last may hold fewer)
    assert snapshot(root) == expected
    assert list_parts(staging_dir(root)) == []


def test_lost_worker_is_retried_and_a_file_the_model_fails_on_is_redone_by_the_next_run(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 40)
    Image.new("RGB", (97, 61), "white").save(folder / "odd.png")
    expected = clean_index(folder, tmp_path / "clean")

    root = tmp_path / "idx"
    marker = tmp_path / "died"
    args = [*index_args(folder, root, FLAKY, commit_every=8), "--batch-size", "4", "--ray", "local"]
    env = {"OBJSEARCH_TEST_DIE_ONCE": str(marker), "OBJSEARCH_TEST_FAIL_WIDTH": "97"}
    first = run_cli(*args, timeout=600, env_extra=env)
    assert marker.exists(), "the actor was never killed"
    assert first.returncode == 1, first.stdout + first.stderr[-3000:]
    failed = [line for line in first.stdout.splitlines() if line.startswith("  not indexed ")]
    assert len(failed) == 1 and "odd.png" in failed[0] and "injected failure" in failed[0]  # its batch's other files are indexed
    assert "run the same command again" in first.stderr
    with open_index(root, model=build_blobs()) as idx:
        assert idx.manifest.counts["images"] == 40  # the lost worker's batch was rerun by Ray

    second = run_cli(*args, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "indexed 1 images" in second.stdout
    assert snapshot(root) == expected


def _kill_group(process: subprocess.Popen) -> None:
    """Whatever of a killed driver's local Ray is still running (it should follow its driver)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_bad_or_unreachable_ray_address_is_a_one_line_error(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 2)
    for address, message in [("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"), ("photos", "--ray wants 'local', 'auto', HOST:PORT")]:
        started = time.time()
        result = run_cli("index", str(folder), "--index", str(tmp_path / "idx"), "--model", BLOBS, "--ray", address, timeout=120)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert time.time() - started < 60


def test_a_model_that_cannot_load_on_the_workers_ends_the_run_with_its_reason(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    make_dataset(first, 2)
    make_dataset(second, 2, seed=1)
    root = tmp_path / "idx"
    assert run_cli("index", str(first), "--index", str(root), "--model", FLAKY, "--no-progress").returncode == 0
    started = time.time()
    # The driver does not load the index's model; the actors cannot.
    result = run_cli("index", str(second), "--index", str(root), "--no-progress", "--ray", "local", timeout=300,
                     env_extra={"OBJSEARCH_TEST_BROKEN_LOAD": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: the Ray run failed: RuntimeError: injected: the model's files are missing on this node"
    assert time.time() - started < 120
    with open_index(root, model=build_blobs()) as idx:
        assert idx.manifest.counts["images"] == 2
