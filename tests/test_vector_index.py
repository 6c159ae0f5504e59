"""The vector index grows from exact to IVF by itself, can be forced and rebuilt, and filtered
search returns exactly the top-k among the objects that pass the filter."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.cli import app
from objsearch.errors import IndexCorrupt
from objsearch.store import compact, vectors
from objsearch.store.manifest import read_manifest
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import build as build_blobs
from tests.conftest import BLOBS
from tests.reliability.helpers import snapshot

runner = CliRunner()


def index(folder, root, **options):
    return index_folders([folder], root, embedder=build_blobs(), model=BLOBS,
                         options=IndexOptions(progress=False, workers=1, commit_every=8, **options))


def test_choice_follows_size_and_memory_budget():
    assert vectors.choose_index_type(10_000, 512) == "IDMap2,Flat"
    # about 16 sqrt(n) lists, at least 39 vectors a list, at most IVF_MAX_NLIST; float16 centroids
    assert vectors.choose_index_type(1_000_000, 512) == "IVF16384(SQfp16),SQfp16"
    assert vectors.choose_index_type(1_000_000, 512, max_memory_bytes=700 << 20) == "IVF16384(SQfp16),SQ8"
    assert vectors.choose_index_type(1_000_000, 512, max_memory_bytes=200 << 20) == "IVF16384(SQfp16),PQ64"
    assert vectors.choose_index_type(10_000, 512, max_memory_bytes=10 << 20) == "IVF256(SQfp16),SQ8"
    assert vectors.choose_index_type(100_000_000, 512).startswith("IVF16384(SQfp16),")
    # a segment of a larger collection gets that collection's list density: its share of the lists
    assert vectors.ivf_nlist(320_000) == 8192 and vectors.ivf_nlist(320_000, collection_objects=1_000_000) == 4096
    assert vectors.choose_index_type(320_000, 512, collection_objects=1_000_000) == "IVF4096(SQfp16),SQfp16"
    assert vectors.ivf_nlist(20_000, collection_objects=1_000_000) == 256  # 78 vectors a list


def test_the_index_switches_to_ivf_as_it_grows_and_stays_consistent(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "EXACT_MAX_OBJECTS", 60)  # beyond 60 objects in all, ...
    monkeypatch.setattr(compact, "SEGMENT_EXACT_MAX_ROWS", 60)  # ... merged segments beyond 60 rows get an inverted file
    monkeypatch.setattr(compact, "MAX_MERGE_SHARE", 1.0)  # so small an index merges only if a merge may take most of it
    folder = tmp_path / "imgs"
    make_dataset(folder, 12)  # 36 objects: exact
    index(folder, tmp_path / "idx")
    assert read_manifest(tmp_path / "idx").index_type == "IDMap2,Flat"
    make_dataset(tmp_path / "more", 40, seed=5)
    for path in (tmp_path / "more").glob("*.png"):
        path.rename(folder / f"more-{path.name}")
    index(folder, tmp_path / "idx")  # 156 objects: IVF
    manifest = read_manifest(tmp_path / "idx")
    assert manifest.index_type.startswith("IVF") and manifest.counts["objects"] == 156
    (folder / "scene_0000.png").unlink()  # removal from an IVF index
    index(folder, tmp_path / "idx")
    objects, _ = snapshot(tmp_path / "idx")  # FAISS ids == Parquet ids, checksums, counts
    assert len(objects) == 153
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        assert idx.search_text("red", k=3)[0].label == "red box"


@pytest.mark.parametrize("index_type", ["IDMap2,Flat", "IVF4,SQfp16"])
@pytest.mark.parametrize("scan_max", [0, 10_000])  # 0: always the ID-selector path
def test_filtered_search_is_the_exact_filtered_top_k(tmp_path, monkeypatch, index_type, scan_max):
    monkeypatch.setattr(vectors, "SCAN_MAX_SELECTED", scan_max)
    make_dataset(tmp_path / "imgs", 60)
    index(tmp_path / "imgs", tmp_path / "idx", index_type=index_type)
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        # nprobe = every list: the ANN part is then exhaustive, so any difference is the filter's fault
        idx.vectors.tune(nprobe=4)
        assert read_manifest(tmp_path / "idx").index_type == index_type
        ids, embeddings = [], []
        for object_id, embedding in idx.sql("SELECT object_id, embedding FROM objects")[1]:
            ids.append(object_id)
            embeddings.append(embedding)
        ids, embeddings = np.array(ids), np.array(embeddings, np.float32)
        rng = np.random.default_rng(1)
        for where, selected in [("object_id % 2 = 0", ids % 2 == 0), ("object_id % 50 = 0", ids % 50 == 0), ("object_id = 7", ids == 7)]:
            query = embeddings[rng.integers(len(ids))]
            hits = idx.search_embedding(query, k=10, where=where)
            scores = embeddings[selected] @ query
            expected = set(ids[selected][np.argsort(-scores, kind="stable")[: min(10, selected.sum())]])
            tie = np.sort(scores)[::-1][min(10, selected.sum()) - 1]
            got = {h.object_id for h in hits}
            assert len(got) == len(expected)
            # ties at the k-th score may be broken either way, and IVF-SQfp16 computes scores at
            # float16 precision: compare scores (to 1e-3), not ids
            assert all(h.similarity >= tie - 1e-3 for h in hits) and got <= set(ids[selected])


def test_reindex_forces_a_type_and_auto_returns_to_the_choice(tmp_path):
    make_dataset(tmp_path / "imgs", 10)
    index(tmp_path / "imgs", tmp_path / "idx")
    before = snapshot(tmp_path / "idx")
    result = runner.invoke(app, ["reindex", "--index-type", "IVF2,SQ8", "--index", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "idx").index_type == "IVF2,SQ8"
    assert snapshot(tmp_path / "idx")[1] == before[1]
    assert runner.invoke(app, ["reindex", "--index-type", "auto", "--index", str(tmp_path / "idx")]).exit_code == 0
    assert read_manifest(tmp_path / "idx").index_type == "IDMap2,Flat"
    assert snapshot(tmp_path / "idx") == before
    bad = runner.invoke(app, ["reindex", "--index-type", "NoSuchIndex", "--index", str(tmp_path / "idx")])
    assert bad.exit_code == 1 and "bad --index-type" in bad.output
    bad = runner.invoke(app, ["reindex", "--max-index-memory", "lots", "--index", str(tmp_path / "idx")])
    assert bad.exit_code == 1 and "4GB" in bad.output


def test_large_index_files_are_memory_mapped(tmp_path, monkeypatch):
    make_dataset(tmp_path / "imgs", 30)
    index(tmp_path / "imgs", tmp_path / "idx", index_type="IVF4,SQfp16")
    monkeypatch.setattr(vectors, "MMAP_MIN_BYTES", 0)
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        hits = idx.search_text("blue", k=5)
        mapped = Path("/proc/self/maps").read_text()
        ivf = vectors.ivf_of(idx.vectors.searcher(0).index)
        # mapped in place (MMAP_IFC: array lists over the mapping), not OnDiskInvertedLists (6x slower)
        assert str(tmp_path / "idx") in mapped
        assert type(faiss.downcast_InvertedLists(ivf.invlists)).__name__ == "ArrayInvertedLists"
    assert hits and hits[0].label == "blue box"


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_memory_mapped_segment_is_reported_not_a_crash(tmp_path, monkeypatch, damage):
    make_dataset(tmp_path / "imgs", 30)
    index(tmp_path / "imgs", tmp_path / "idx", index_type="IVF4,SQfp16")
    monkeypatch.setattr(vectors, "MMAP_MIN_BYTES", 0)
    path = tmp_path / "idx" / read_manifest(tmp_path / "idx").segments[0].vectors.path
    data = path.read_bytes()
    # Overwritten: the same size (so only the loader can tell), every byte after the header 0xff.
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:64] + b"\xff" * (len(data) - 64))
    with pytest.raises(IndexCorrupt, match="doctor"):
        with open_index(tmp_path / "idx", model=build_blobs()) as idx:
            idx.search_text("blue", k=5)


class _CountingIndex:
    """Stands in for a GPU copy of an index (this machine has no GPU): the same answers, counted."""

    def __init__(self, index) -> None:
        self.index, self.searches = index, 0

    def search(self, queries, k, **kwargs):
        self.searches += 1
        return self.index.search(queries, k, **kwargs)


def test_with_gpu_search_on_unfiltered_searches_use_the_gpu_copy_and_the_rest_the_cpu_index(monkeypatch):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 16)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = vectors.build(np.arange(500, dtype=np.int64), data, "IDMap2,Flat")
    copies = []
    monkeypatch.setattr(vectors, "gpu_count", lambda: 1)
    monkeypatch.setattr(vectors, "to_gpus", lambda cpu: copies.append(_CountingIndex(cpu)) or copies[-1])
    assert vectors.Searcher(index).gpu_index is None  # opt-in: nothing is copied unless asked

    monkeypatch.setenv("OBJSEARCH_FAISS_GPU", "1")
    searcher = vectors.Searcher(index)
    assert len(copies) == 1 and searcher.gpu_index is copies[0]
    expected = np.argsort(-(data @ data[7]))[:5]
    _, ids = searcher.search(data[7], 5)
    assert copies[0].searches == 1 and ids[0].tolist() == expected.tolist()
    allowed = np.arange(0, 500, 2)
    _, ids = searcher.search(data[7], 5, allowed_ids=allowed)
    assert copies[0].searches == 1  # filtered: the CPU index, which supports ID selectors
    assert set(ids[0].tolist()) <= set(allowed.tolist())
    monkeypatch.setattr(vectors, "GPU_MAX_K", 3)
    _, ids = searcher.search(data[7], 5)
    assert copies[0].searches == 1 and ids[0].tolist() == expected.tolist()  # k beyond the GPU's limit: CPU


def test_gpu_search_needs_gpus_as_well_as_the_switch(monkeypatch):
    index = vectors.build(np.arange(3, dtype=np.int64), np.eye(3, 8, dtype=np.float32), "IDMap2,Flat")
    monkeypatch.setenv("OBJSEARCH_FAISS_GPU", "1")
    monkeypatch.setattr(vectors, "gpu_count", lambda: 0)  # faiss-cpu, or no visible GPU
    assert not vectors.gpu_search_enabled() and vectors.Searcher(index).gpu_index is None
