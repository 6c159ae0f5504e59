"""The store through the indexer, on generated scenes with the blob embedder: what a user indexes
is what comes back, incrementally, with Parquet, FAISS and the manifest always agreeing."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.box_ops import box_iou
from objsearch.errors import IndexLocked, IndexNotFound, ModelMismatch, ObjsearchError
from objsearch.store.layout import DATA_DIRS
from objsearch.store.manifest import read_manifest
from objsearch.store.commit import IndexWriter
from objsearch.datasets.scenes import make_dataset, make_scene
from objsearch.datasets.blob_embedder import build as build_blobs, build_other

OPTIONS = IndexOptions(progress=False, workers=1, commit_every=4, batch_size=3)


def index(folder, root, **kw):
    return index_folders([folder], root, model="objsearch.datasets.blob_embedder:build", embedder=build_blobs(), options=kw.pop("options", OPTIONS))


def consistency(root):
    """(parquet object ids, faiss ids) of the committed state."""
    with open_index(root, model=build_blobs()) as idx:
        parquet_ids = sorted(r[0] for r in idx.sql("SELECT object_id FROM objects")[1])
        faiss_ids = sorted(idx.vectors.all_ids().tolist())
    return parquet_ids, faiss_ids


def test_every_generated_object_is_found_with_its_box(tmp_path):
    truth = make_dataset(tmp_path / "imgs", 10)
    summary = index(tmp_path / "imgs", tmp_path / "idx")
    assert summary.indexed == 10 and not summary.skipped
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        for path, annotations in truth.items():
            rows = idx.sql(f"SELECT x1, y1, x2, y2 FROM objects_images WHERE path = '{path}'")[1]
            assert len(rows) == len(annotations)
            ious = box_iou(np.array([a["bbox_xyxy"] for a in annotations]), np.array(rows))
            assert ious.max(axis=1).min() > 0.95
    parquet_ids, faiss_ids = consistency(tmp_path / "idx")
    assert parquet_ids == faiss_ids and len(set(parquet_ids)) == len(parquet_ids) == summary.objects_added


def test_boxes_are_in_original_pixels_when_images_are_downscaled(tmp_path):
    truth = make_dataset(tmp_path / "imgs", 2, size=(1200, 900))
    index_folders([tmp_path / "imgs"], tmp_path / "idx", embedder=build_blobs(), model="objsearch.datasets.blob_embedder:build",
                  options=IndexOptions(progress=False, workers=1, max_side=300))
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        for path, annotations in truth.items():
            rows = idx.sql(f"SELECT x1, y1, x2, y2, width, height FROM objects_images WHERE path = '{path}'")[1]
            assert {(r[4], r[5]) for r in rows} == {(1200, 900)}
            ious = box_iou(np.array([a["bbox_xyxy"] for a in annotations]), np.array([r[:4] for r in rows]))
            assert ious.max(axis=1).min() > 0.9


def test_text_query_finds_the_coloured_box(tmp_path):
    truth = make_dataset(tmp_path / "imgs", 6)
    index(tmp_path / "imgs", tmp_path / "idx")
    want = {(p, tuple(a["bbox_xyxy"])) for p, anns in truth.items() for a in anns if a["colour"] == "blue"}
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        hits = idx.search_text("blue", k=len(want))
    assert len(hits) == len(want)
    assert all(h.label == "blue box" for h in hits)
    assert {h.path for h in hits} == {p for p, _ in want}


def test_incremental_add_change_delete_and_touch(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 6)
    root = tmp_path / "idx"
    index(folder, root)
    ids_before = dict((r[0], r[1]) for r in open_index(root, model=build_blobs()).sql("SELECT path, list(object_id ORDER BY object_id) FROM objects_images GROUP BY path")[1])

    again = index(folder, root)
    assert (again.indexed, again.unchanged, again.removed) == (0, 6, 0)

    make_scene(folder / "new.png", 999)  # added
    (folder / "scene_0000.png").unlink()  # deleted
    make_scene(folder / "scene_0001.png", 12345, count=2)  # changed content
    touched = folder / "scene_0002.png"
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))  # same bytes, new mtime
    summary = index(folder, root)
    assert (summary.indexed, summary.removed, summary.touched, summary.unchanged) == (2, 1, 1, 3)

    with open_index(root, model=build_blobs()) as idx:
        per_path = dict(idx.sql("SELECT path, list(object_id ORDER BY object_id) FROM objects_images GROUP BY path")[1])
        paths = {r[0] for r in idx.sql("SELECT path FROM images")[1]}
    assert str(folder / "scene_0000.png") not in paths
    assert str(folder / "new.png") in per_path
    assert len(per_path[str(folder / "scene_0001.png")]) == 2
    assert per_path[str(touched)] == ids_before[str(touched)]  # not re-embedded
    parquet_ids, faiss_ids = consistency(root)
    assert parquet_ids == faiss_ids and len(set(parquet_ids)) == len(parquet_ids)


def test_exclude_glob_and_recursion(tmp_path):
    make_dataset(tmp_path / "imgs" / "a" / "b", 2)
    make_dataset(tmp_path / "imgs" / "thumbs", 2)
    summary = index_folders([tmp_path / "imgs"], tmp_path / "idx", embedder=build_blobs(), model="objsearch.datasets.blob_embedder:build",
                            options=IndexOptions(progress=False, workers=1, exclude=("thumbs",)))
    assert summary.indexed == 2


def test_query_on_an_empty_index_returns_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    index(tmp_path / "empty", tmp_path / "idx")
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        assert idx.search_text("red") == []
        assert idx.search_text("red", where="score > 0.5") == []


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFound, match="no index at"):
        open_index(tmp_path / "nothing")


def test_model_mismatch_is_refused_for_queries_and_indexing(tmp_path):
    make_dataset(tmp_path / "imgs", 1)
    index(tmp_path / "imgs", tmp_path / "idx")
    with pytest.raises(ModelMismatch, match="test-blobs"):
        open_index(tmp_path / "idx", model=build_other())
    with pytest.raises(ModelMismatch):
        index_folders([tmp_path / "imgs"], tmp_path / "idx", embedder=build_other(), options=OPTIONS)


def test_an_index_that_never_committed_anything_takes_the_next_model(tmp_path):
    (tmp_path / "empty").mkdir()
    index(tmp_path / "empty", tmp_path / "idx")  # e.g. a first run killed before its first commit
    make_dataset(tmp_path / "imgs", 1)
    index_folders([tmp_path / "imgs"], tmp_path / "idx", embedder=build_other(), options=OPTIONS)
    assert read_manifest(tmp_path / "idx").embedder.name == "other-blobs"
    with pytest.raises(ModelMismatch):  # once it holds objects, the model is fixed
        index(tmp_path / "imgs", tmp_path / "idx")


def test_second_writer_is_told_who_holds_the_lock(tmp_path):
    make_dataset(tmp_path / "imgs", 1)
    index(tmp_path / "imgs", tmp_path / "idx")
    manifest = read_manifest(tmp_path / "idx")
    with IndexWriter(tmp_path / "idx", manifest.embedder):
        started = time.perf_counter()
        with pytest.raises(IndexLocked, match=f"locked by PID {os.getpid()}"):
            IndexWriter(tmp_path / "idx", manifest.embedder)
        assert time.perf_counter() - started < 1.0


def test_uncommitted_work_is_invisible(tmp_path):
    make_dataset(tmp_path / "imgs", 8)
    root = tmp_path / "idx"
    index(tmp_path / "imgs", root)
    generation = read_manifest(root).generation
    before = consistency(root)
    with IndexWriter(root, read_manifest(root).embedder) as writer:
        writer.remove_images([r.image_id for r in writer.known_images().values()])
        # no commit: closing drops the staged removal
    assert read_manifest(root).generation == generation and consistency(root) == before


def _files_on_disk(root):
    """Data files (what a manifest can name) present under ``root``."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and p.parts[len(root.parts)] in DATA_DIRS}


def test_a_reader_keeps_its_generation_until_it_closes_and_nothing_longer(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 4)
    root = tmp_path / "idx"
    index(folder, root)
    reader = open_index(root, model=build_blobs())  # opened, vectors not loaded yet
    pinned = {e.path for e in reader.manifest.files()}
    make_dataset(tmp_path / "more", 12, seed=3)
    for path in (tmp_path / "more").glob("*.png"):
        path.rename(folder / f"more-{path.name}")
    (folder / "scene_0000.png").unlink()  # a removal: tombstones
    index(folder, root)  # several commits (commit_every=4)
    assert read_manifest(root).generation >= 3
    assert len(reader.search_text("red", k=100)) > 0  # the old generation's files are still there
    assert {h.path for h in reader.search_text("red", k=100)} & {str(folder / "scene_0000.png")}
    referenced = {e.path for e in read_manifest(root).files()}
    assert _files_on_disk(root) == referenced | pinned  # the reader's generation, and nothing older
    reader.close()
    IndexWriter(root, read_manifest(root).embedder).close()  # any writer collects garbage
    assert _files_on_disk(root) == referenced
    assert not list((root / "readers").iterdir())


def test_a_killed_reader_pins_nothing(tmp_path):
    import subprocess, sys
    from tests.conftest import REPO

    folder = tmp_path / "imgs"
    make_dataset(folder, 4)
    root = tmp_path / "idx"
    index(folder, root)
    old = {e.path for e in read_manifest(root).files()}
    script = f"import objsearch, time; idx = objsearch.open_index({str(root)!r}); print('open', flush=True); time.sleep(60)"
    reader = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "open"
    with IndexWriter(root, read_manifest(root).embedder) as writer:
        writer.remove_images([r.image_id for r in writer.known_images().values()][:2])
        writer.commit()
    assert _files_on_disk(root) >= old  # the live reader's files are kept
    reader.kill()
    reader.wait()
    IndexWriter(root, read_manifest(root).embedder).close()
    assert _files_on_disk(root) == {e.path for e in read_manifest(root).files()}
    assert not list((root / "readers").iterdir())


def test_files_on_disk_are_those_of_the_last_commit_at_any_commit_rate(tmp_path):
    make_dataset(tmp_path / "imgs", 30)
    root = tmp_path / "idx"
    index_folders([tmp_path / "imgs"], root, model="objsearch.datasets.blob_embedder:build", embedder=build_blobs(),
                  options=IndexOptions(progress=False, workers=1, commit_every=1, batch_size=1))
    manifest = read_manifest(root)
    assert manifest.generation > 30  # every commit, and the merges between them
    assert _files_on_disk(root) == {e.path for e in manifest.files()}
    assert len(manifest.segments) < 8  # 30 one-image segments were merged as they came


def test_a_folder_that_holds_other_files_is_not_taken_over(tmp_path):
    (tmp_path / "project" / "images").mkdir(parents=True)
    (tmp_path / "project" / "images" / "data.parquet").write_bytes(b"user data")
    make_dataset(tmp_path / "imgs", 1)
    with pytest.raises(ObjsearchError, match="not empty and holds no index"):
        index(tmp_path / "imgs", tmp_path / "project")
    assert (tmp_path / "project" / "images" / "data.parquet").read_bytes() == b"user data"


def test_plan_keeps_files_of_unreadable_folders_and_retries_unread_files(tmp_path):
    from indexer.discover import Discovery, FileStat, plan
    from objsearch.store.commit import ImageRecord

    root = str(tmp_path)
    known = {
        f"{root}/locked/a.png": ImageRecord(f"{root}/locked/a.png", 10, 1, "h1", image_id=0),
        f"{root}/gone.png": ImageRecord(f"{root}/gone.png", 10, 1, "h2", image_id=1),
        f"{root}/unread.png": ImageRecord(f"{root}/unread.png", 10, 1, "", status="error", error="cannot read file", image_id=2),
    }
    found = Discovery(files=[FileStat(f"{root}/unread.png", 10, 1)], unreadable_dirs=[(f"{root}/locked", "Permission denied")])
    todo = plan(found, known, [root])
    assert [r.path for r in todo.deleted] == [f"{root}/gone.png"]
    assert [f.path for f, _ in todo.changed] == [f"{root}/unread.png"]


def test_a_rerun_with_nothing_to_do_does_not_load_the_model(tmp_path, monkeypatch):
    import indexer.pipeline

    make_dataset(tmp_path / "imgs", 2)
    index(tmp_path / "imgs", tmp_path / "idx")
    loads = []
    monkeypatch.setattr(indexer.pipeline, "load_embedder", lambda name: loads.append(name) or build_blobs())
    summary = index_folders([tmp_path / "imgs"], tmp_path / "idx", options=OPTIONS)
    assert (summary.unchanged, loads) == (2, [])
    make_scene(tmp_path / "imgs" / "new.png", 5)
    summary = index_folders([tmp_path / "imgs"], tmp_path / "idx", options=OPTIONS)
    assert (summary.indexed, loads) == (1, ["objsearch.datasets.blob_embedder:build"])
