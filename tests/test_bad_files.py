"""Broken files are skipped with their reason recorded; the rest is indexed."""

from __future__ import annotations

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import build as build_blobs


def test_bad_files_are_recorded_and_do_not_stop_indexing(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 3)
    good = (folder / "scene_0000.png").read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.jpg").write_text("this is not an image")
    (folder / "random.png").write_bytes(bytes(range(256)) * 8)
    (folder / "readme.txt").write_text("ignored: not an image extension")
    summary = index_folders([folder], tmp_path / "idx", embedder=build_blobs(), model="objsearch.datasets.blob_embedder:build", options=IndexOptions(progress=False, workers=2))
    assert summary.indexed == 3
    assert {p.rsplit("/", 1)[1] for p, _ in summary.skipped} == {"empty.jpg", "truncated.png", "notes.jpg", "random.png"}
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        errors = dict((p.rsplit("/", 1)[1], e) for p, e in idx.errors())
    assert "0 bytes" in errors["empty.jpg"] and "truncated" in errors["truncated.png"]
    assert "not an image" in errors["notes.jpg"]
    # A second run does not retry unchanged broken files, and keeps their record.
    again = index_folders([folder], tmp_path / "idx", embedder=build_blobs(), options=IndexOptions(progress=False, workers=1))
    assert again.indexed == 0 and again.unchanged == 7
