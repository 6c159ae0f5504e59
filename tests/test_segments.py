"""Segments, tombstones and compaction: many small commits and deletions search exactly like one
index over the live objects; compaction keeps the segment count bounded and changes no result;
a writer opens without re-reading unchanged files and still refuses altered ones."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from objsearch import open_index
from objsearch.cli import app
from objsearch.embedders.base import Detections
from objsearch.errors import BadQuery, IndexCorrupt
from objsearch.schema import SCHEMA_VERSION
from objsearch.store import compact, gc, layout, verified
from objsearch.store.doctor import check_index
from objsearch.store.commit import ImageRecord, IndexWriter, compact_index
from objsearch.store.manifest import EmbedderInfo, read_manifest
from objsearch.store.segments import read_tombstones
from tests.reliability.helpers import snapshot

DIM = 13  # the blob embedder's, so the shared snapshot() can open these indexes
INFO = EmbedderInfo("test-blobs", "1", DIM, source="objsearch.datasets.blob_embedder:build")


def unit_vectors(rng, n):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def add_images(writer, rng, first, count, per_image=3):
    """Stage ``count`` images of ``per_image`` objects; returns {image_id: (object vectors)}."""
    added = {}
    for number in range(first, first + count):
        vectors = unit_vectors(rng, per_image)
        labels = ["even" if number % 2 == 0 else "odd"] * per_image
        dets = Detections(np.tile([0, 0, 10, 10], (per_image, 1)), np.full(per_image, 0.9), labels, vectors)
        image_id = writer.add_image(ImageRecord(f"/photos/{number:05d}.jpg", 1, number, f"{number:032x}", 100, 100), dets)
        added[image_id] = vectors
    return added


def build(root, rng, *, commits=12, per_commit=5, auto_compact=True):
    """An index made of many small commits, with deletions between them. Returns {image_id: vectors} of the live images."""
    live = {}
    with IndexWriter(root, INFO, auto_compact=auto_compact) as writer:
        for number in range(commits):
            live.update(add_images(writer, rng, number * per_commit, per_commit))
            writer.commit()
            if number % 3 == 2:  # delete two images of earlier commits: their objects become tombstones
                gone = sorted(live)[number::5][:2]
                writer.remove_images(gone)
                for image_id in gone:
                    live.pop(image_id)
                writer.commit()
    return live


def live_vectors(root):
    """(object ids, vectors, labels) the index serves, read back through SQL."""
    with open_index(root) as idx:
        rows = idx.sql("SELECT object_id, embedding, label FROM objects ORDER BY object_id")[1]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows], np.float32), np.array([r[2] for r in rows])


def same_content(root, expected) -> bool:
    """Whether the index holds ``expected`` (a snapshot); objects of one image share a box here, so
    their order is not part of it."""
    objects, images = snapshot(root)
    return sorted(objects) == sorted(expected[0]) and images == expected[1]


def exact_top(ids, vectors, query, k, mask=None):
    mask = np.ones(len(ids), bool) if mask is None else mask
    scores = vectors[mask] @ query
    return ids[mask][np.argsort(-scores, kind="stable")[:k]].tolist()


def test_many_segments_with_tombstones_search_exactly_like_one_index(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "idx"
    live = build(root, rng, auto_compact=False)
    manifest = read_manifest(root)
    assert len(manifest.segments) == 12 and manifest.tombstone_count == 4 * 2 * 3
    ids, vectors, labels = live_vectors(root)
    assert len(ids) == 3 * len(live) == manifest.counts["objects"]
    queries = unit_vectors(rng, 20)
    with open_index(root) as idx:
        assert sorted(idx.vectors.all_ids().tolist()) == ids.tolist()  # tombstoned ids are never served
        for query in queries:
            assert [h.object_id for h in idx.search_embedding(query, k=7)] == exact_top(ids, vectors, query, 7)
            filtered = [h.object_id for h in idx.search_embedding(query, k=7, where="label = 'odd'")]
            assert filtered == exact_top(ids, vectors, query, 7, labels == "odd")
        removed = sorted(set(range(manifest.next_object_id)) - set(ids.tolist()))
        with pytest.raises(BadQuery, match="no object with id"):
            idx.search_object(removed[0])
        before = [[h.object_id for h in idx.search_embedding(q, k=7)] for q in queries]

    compact_index(root)
    manifest = read_manifest(root)
    assert len(manifest.segments) == 1 and manifest.tombstone_count == 0 and manifest.tombstones is None
    assert len(manifest.image_shards) == 1
    with open_index(root) as idx:
        assert [[h.object_id for h in idx.search_embedding(q, k=7)] for q in queries] == before
    assert live_vectors(root)[0].tolist() == ids.tolist()


def test_automatic_compaction_bounds_the_segments_and_changes_no_result(tmp_path, monkeypatch):
    monkeypatch.setattr(compact, "SEGMENT_TIER_BASE_ROWS", 4)  # tiers at 16, 64, 256 rows: several levels of merges
    rng = np.random.default_rng(1)
    root = tmp_path / "idx"
    build(root, np.random.default_rng(1), commits=60, per_commit=2, auto_compact=True)
    manifest = read_manifest(root)
    rows = compact.live_rows(manifest.segments, read_tombstones(root, manifest))
    assert compact.run_to_merge(rows, 4) is None, rows  # the rule holds at rest ...
    assert len(manifest.segments) <= 12, rows  # ... after 60 commits and more than 20 merges
    assert max(rows) >= 64 and manifest.tombstone_count < 20 * 2 * 3  # merges of merges happened, dropping deleted rows
    objects, images = snapshot(root)  # checksums, FAISS == Parquet per segment, counts
    reference = tmp_path / "reference"
    build(reference, np.random.default_rng(1), commits=60, per_commit=2, auto_compact=False)
    reference_objects, reference_images = snapshot(reference)
    assert sorted(reference_objects) == sorted(objects) and reference_images == images
    queries = unit_vectors(rng, 10)
    with open_index(root) as merged, open_index(reference) as unmerged:
        for query in queries:
            assert [h.object_id for h in merged.search_embedding(query, k=5)] == [h.object_id for h in unmerged.search_embedding(query, k=5)]


def test_run_to_merge_takes_the_newest_run_of_a_tier():
    assert compact.run_to_merge([100, 5, 5, 5], base=4) is None
    assert compact.run_to_merge([100, 5, 5, 5, 5], base=4) == (1, 5)
    assert compact.run_to_merge([5, 5, 5, 5, 100, 5], base=4) == (0, 4)
    assert compact.run_to_merge([20, 20, 20, 20, 20, 20, 20, 20, 5], base=4) == (4, 8)


def test_small_segments_left_behind_a_larger_one_are_merged():
    # tiers with base 4: 5 -> 0, 20 -> 1, 200 -> 2; no tier holds 4 neighbours, but 5, 5, 20 sit
    # before a larger segment, where nothing new will ever join them
    assert compact.run_to_merge([5, 5, 20, 200, 20], base=4) == (0, 3)
    assert compact.run_to_merge([200, 5, 5, 20, 200, 20, 5], base=4) == (1, 4)
    assert compact.run_to_merge([5, 200, 20, 5], base=4) is None  # one segment alone: nothing to merge
    assert compact.run_to_merge([200, 20, 20, 5, 5], base=4) is None  # the newest end: it still grows


def test_no_automatic_merge_takes_more_than_half_the_index():
    assert compact.run_to_merge([20, 20, 20, 20, 5, 5, 5], base=4) is None  # 80 of 95: the disk would double
    assert compact.run_to_merge([20, 20, 20, 20, 20, 20, 20, 20, 20, 5], base=4) == (5, 9)  # 80 of 185
    # image shards: the limit is half of the whole index, of which they are a sliver
    images = [344, 262, 263, 265, 262, 263, 53, 3]
    assert compact.run_to_merge(images, base=64) is None
    assert compact.run_to_merge(images, base=64, total=2_000_000) == (2, 6)


def test_the_compact_command_reports_what_it_did(tmp_path):
    root = tmp_path / "idx"
    build(root, np.random.default_rng(2), auto_compact=False)
    expected = snapshot(root)
    result = CliRunner().invoke(app, ["compact", "--index", str(root)])
    assert result.exit_code == 0, result.output
    assert "12 segments -> 1" in result.output and "24 deleted objects' rows dropped" in result.output
    assert same_content(root, expected)
    files = {p.relative_to(root).as_posix() for suffix in ("parquet", "faiss", "sqlite") for p in root.rglob(f"*.{suffix}")}
    assert files == {e.path for e in read_manifest(root).files()}


def test_a_writer_reads_no_unchanged_file_and_refuses_an_altered_one(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    build(root, np.random.default_rng(3), auto_compact=False)
    hashed = []
    real = layout.sha256_file
    monkeypatch.setattr(verified, "sha256_file", lambda path: hashed.append(path) or real(path))
    IndexWriter(root, INFO).close()
    assert hashed == []  # every file was verified when written, and none changed since

    victim = root / read_manifest(root).segments[4].objects.path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))  # same size, new content (and a new mtime and ctime)
    with pytest.raises(IndexCorrupt, match=victim.name):
        IndexWriter(root, INFO)
    assert hashed == [victim]  # only the file that changed was read

    (root / layout.VERIFIED).unlink()  # without the cache every file is hashed: still refused
    hashed.clear()
    with pytest.raises(IndexCorrupt, match=victim.name):
        IndexWriter(root, INFO)
    assert len(hashed) == len(read_manifest(root).files())


def test_a_damaged_tombstones_file_is_rebuilt_without_loss(tmp_path):
    root = tmp_path / "idx"
    build(root, np.random.default_rng(4), auto_compact=False)
    expected = snapshot(root)
    path = root / read_manifest(root).tombstones.path
    path.write_bytes(path.read_bytes()[:-20])
    check = CliRunner().invoke(app, ["doctor", "--index", str(root)])
    assert check.exit_code == 1 and "tombstones-" in check.output and "size" in check.output
    repair = CliRunner().invoke(app, ["doctor", "--repair", "--index", str(root)])
    assert repair.exit_code == 0, repair.output
    assert "recomputed the tombstones: 24 objects of removed images" in repair.output
    assert same_content(root, expected)


def test_an_index_of_format_1_is_upgraded_in_place_by_compact(tmp_path):
    """Format 1 kept one FAISS file beside the manifest and no segments: queries say what to do,
    and `objsearch compact` rewrites it as segments without re-embedding anything."""
    import json

    from objsearch.store import vectors
    from objsearch.store.layout import file_entry

    root = tmp_path / "idx"
    build(root, np.random.default_rng(5), commits=2, auto_compact=False)
    expected = snapshot(root)
    manifest = json.loads((root / "manifest.json").read_text())
    ids, embeddings, _ = live_vectors(root)
    vectors.write(vectors.build(ids, embeddings, "IDMap2,Flat"), root / "vectors-g00000002-old.faiss")
    old = {**{k: manifest[k] for k in ("embedder", "generation", "image_shards", "index_type_override", "max_index_memory",
                                       "next_image_id", "next_object_id", "counts", "updated_at")},
           "format_version": 1, "index_type": "IDMap2,Flat", "object_shards": [s["objects"] for s in manifest["segments"]],
           "vectors": file_entry(root, "vectors-g00000002-old.faiss").__dict__}
    for segment in manifest["segments"]:
        (root / segment["vectors"]["path"]).unlink()
    (root / "manifest.json").write_text(json.dumps(old))

    query = CliRunner().invoke(app, ["query", "red", "--index", str(root)])
    assert query.exit_code == 1 and "run `objsearch compact` once to upgrade it" in query.output
    result = CliRunner().invoke(app, ["compact", "--index", str(root)])
    assert result.exit_code == 0, result.output
    assert read_manifest(root).format_version == SCHEMA_VERSION and not list(root.glob("vectors-*.faiss"))
    assert same_content(root, expected)


def test_a_merge_that_fails_leaves_the_writer_on_the_last_commit(tmp_path, monkeypatch):
    """A disk that fills during a merge: the commit before it stands, the writer stays usable, and
    its next commits neither resurrect deleted objects nor miscount anything."""
    root = tmp_path / "idx"
    rng = np.random.default_rng(6)
    with IndexWriter(root, INFO, auto_compact=False) as writer:
        added = {}
        for number in range(3):
            added.update(add_images(writer, rng, number * 4, 4))
            writer.commit()
        ids = sorted(added)
        writer.remove_images(ids[:2])
        writer.commit()

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(compact, "merge_image_shards", disk_full)
            with pytest.raises(OSError, match="No space"):
                writer.compact(full=True)  # the segments were merged in memory, then the image shards failed
        writer.remove_images(ids[5:6])
        writer.commit()
        with monkeypatch.context() as patch:  # a commit that fails at its last step is dropped whole
            patch.setattr("objsearch.store.commit.write_manifest", disk_full)
            add_images(writer, rng, 100, 2)
            with pytest.raises(OSError, match="No space"):
                writer.commit()
        writer.commit()  # nothing staged any more: a no-op
    assert check_index(root) == []  # counts, tombstones, orphans: all as the rows say
    manifest = read_manifest(root)
    assert manifest.counts == {"images": 9, "images_error": 0, "objects": 27} and manifest.tombstone_count == 9


def test_a_lease_swept_while_it_is_being_made_is_made_again(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    build(root, np.random.default_rng(8), commits=2, auto_compact=False)
    real_mkstemp = gc.tempfile.mkstemp
    sweeps = []

    def mkstemp_then_sweep(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        if not sweeps:  # a writer's sweep lands between the file's creation and its lock, once
            sweeps.append(gc.collect_garbage(root, read_manifest(root)))
        return made

    monkeypatch.setattr(gc.tempfile, "mkstemp", mkstemp_then_sweep)
    with open_index(root) as idx:
        assert sweeps and idx._lease is not None and idx._lease.path.exists()


def test_a_reader_whose_files_were_deleted_says_to_reopen(tmp_path):
    """A reader without a lease (a read-only index folder) while a writer compacts: a clear error."""
    root = tmp_path / "idx"
    build(root, np.random.default_rng(9), commits=3, auto_compact=False)
    with open_index(root) as idx:
        idx._lease.release()  # as if the folder had been read-only
        compact_index(root)
        query = unit_vectors(np.random.default_rng(0), 1)[0]
        for where in (None, "label = 'odd'"):
            with pytest.raises(IndexCorrupt, match="reopen the index"):
                idx.search_embedding(query, k=3, where=where)
    with open_index(root) as idx:
        assert len(idx.search_embedding(query, k=3)) == 3


def test_rows_of_absent_ids_are_left_out(tmp_path):
    root = tmp_path / "idx"
    build(root, np.random.default_rng(10), commits=3, auto_compact=False)
    with open_index(root) as idx:
        assert idx.catalog.rows_for_objects(np.array([10**9])) == {}
        ids = idx.vectors.all_ids()
        rows = idx.catalog.rows_for_objects(np.array([ids[0], 10**9, ids[-1]]))
        assert sorted(rows) == [ids[0], ids[-1]] and rows[ids[0]]["path"].startswith("/photos/")


def test_exact_segments_are_rebuilt_when_the_index_outgrows_exact_search(tmp_path, monkeypatch):
    from objsearch.store import vectors

    monkeypatch.setattr(vectors, "EXACT_MAX_OBJECTS", 60)
    monkeypatch.setattr(compact, "SEGMENT_EXACT_MAX_ROWS", 20)
    root = tmp_path / "idx"
    with IndexWriter(root, INFO, auto_compact=False) as writer:
        add_images(writer, np.random.default_rng(11), 0, 15)  # 45 objects: the index is exact ...
        writer.commit()
    assert read_manifest(root).segments[0].index_type == "IDMap2,Flat"
    with IndexWriter(root, INFO) as writer:
        add_images(writer, np.random.default_rng(12), 15, 10)  # ... 75 objects: no longer
        writer.commit()
    segments = read_manifest(root).segments
    assert segments[0].index_type.startswith("IVF") and segments[0].rows == 45


def test_ivf_segments_scan_the_share_one_index_over_all_would(tmp_path, monkeypatch):
    from objsearch.store import vectors

    # One index over 1M vectors scans 128 of 16384 lists: 1/128 of it. A segment of that index
    # scans 1/128 of its own lists (64 of 8192), not its own default (128): the same vectors in
    # all, instead of several times as many over many segments; few-list segments scan 8 at least.
    assert vectors.scan_share(1_000_000) == 1 / 128
    assert vectors.share_nprobe(8192, 1 / 128) == 64 and vectors.default_nprobe(8192) == 128
    assert vectors.share_nprobe(512, 1 / 128) == 8 and vectors.share_nprobe(4, 1 / 128) == 4

    monkeypatch.setattr(vectors, "EXACT_MAX_OBJECTS", 30)
    monkeypatch.setattr(compact, "SEGMENT_EXACT_MAX_ROWS", 10)
    monkeypatch.setattr(vectors, "SEGMENT_MIN_NPROBE", 2)
    monkeypatch.setattr(vectors, "scan_share", lambda n: 0.25)
    root = tmp_path / "idx"
    with IndexWriter(root, INFO, auto_compact=False, index_type="IVF16,Flat") as writer:
        for number in range(3):
            add_images(writer, np.random.default_rng(number), number * 40, 40)
            writer.commit()
    with open_index(root) as idx:
        idx.search_embedding(unit_vectors(np.random.default_rng(9), 1)[0], 5)
        assert [vectors.ivf_of(idx.vectors.searcher(n).index).nprobe for n in range(3)] == [4, 4, 4]
        idx.vectors.tune(7)  # --nprobe: every segment scans that many lists
        assert [vectors.ivf_of(idx.vectors.searcher(n).index).nprobe for n in range(3)] == [7, 7, 7]


def test_a_newer_generation_takes_over_what_the_older_one_loaded(tmp_path):
    """A server following commits reopens the index each commit: the segments and shards both
    generations hold are not loaded again, and results are those of a fresh open."""
    root = tmp_path / "idx"
    rng = np.random.default_rng(21)
    with IndexWriter(root, INFO, auto_compact=False) as writer:
        first = add_images(writer, rng, 0, 6)
        writer.commit()
        add_images(writer, rng, 6, 6)
        writer.commit()
    query = unit_vectors(rng, 1)[0]
    old = open_index(root)
    old.search_embedding(query, 5)  # loads both segments and opens their shards
    with IndexWriter(root, INFO, auto_compact=False) as writer:
        add_images(writer, rng, 12, 6)
        writer.remove_images([sorted(first)[0]])  # a tombstone in the first segment
        writer.commit()
    new = open_index(root, previous=old)
    fresh = open_index(root)
    try:
        got = [(h.object_id, round(h.similarity, 5)) for h in new.search_embedding(query, 12)]
        assert got == [(h.object_id, round(h.similarity, 5)) for h in fresh.search_embedding(query, 12)]
        assert len(new.manifest.segments) == 3
        # the second segment's searcher as it was; the first's index, with its new tombstone
        assert new.vectors.searcher(1) is old.vectors.searcher(1)
        assert new.vectors.searcher(0) is not old.vectors.searcher(0)
        assert new.vectors.searcher(0).index is old.vectors.searcher(0).index
        assert len(new.vectors.searcher(0).excluded) == 3 and len(old.vectors.searcher(0).excluded) == 0
        assert new.vectors.searcher(2) is not fresh.vectors.searcher(2)
        compact_index(root)
        merged = open_index(root, previous=new)
        assert set(merged.vectors._loaded) <= {s.vectors.path for s in merged.manifest.segments}  # merged-away ones let go
        merged.close()
        kept = set(new.catalog._object_rows._shards)
        assert kept <= {root / s.objects.path for s in new.manifest.segments} and len(kept) >= 2
    finally:
        for index in (old, new, fresh):
            index.close()
