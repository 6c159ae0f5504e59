"""The single writer of an index: stage image rows, objects and removals, then commit atomically.

A commit writes only what changed: a new images shard, one new segment (the staged objects' shard
and the FAISS index of exactly those rows), and, when images were removed, their objects' ids as
tombstones (a small file, rewritten whole) plus new copies of the images shards that held the
removed rows (image rows are small). Then the manifest is swapped in with a rename: nothing staged
is visible before, and a crash at any point leaves the last commit whole. After the swap, files no
live reader uses are deleted (``gc``) and neighbouring small segments are merged (``compact``).

Opening a writer checks every committed file's size, and its checksum only when the file changed
since a writer last verified it (``verified``): the cost of an open follows what changed on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from objsearch import schema
from objsearch.embedders.base import Detections
from objsearch.errors import IndexCorrupt, ObjsearchError, first_line
from objsearch.store import compact, parquet, vectors
from objsearch.store.gc import collect_garbage
from objsearch.store.layout import IMAGES_DIR, LOCK, MANIFEST, STAGING_DIR, TOMBSTONES_DIR, FileEntry, WriterLock, file_entry
from objsearch.store.manifest import (NO_KEYWORDS_FORMAT, EmbedderInfo, Manifest, check_embedder, missing_or_resized, read_manifest,
                                      write_manifest)
from objsearch.store.segments import read_tombstones
from objsearch.store.upgrade import add_keyword_index
from objsearch.store.verified import VerifiedFiles

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """What the index knows of one image file (a row of the images table)."""

    path: str
    file_size: int
    mtime_ns: int
    content_hash: str
    width: int | None = None
    height: int | None = None
    status: str = schema.STATUS_OK
    error: str | None = None
    image_id: int = -1


class IndexWriter:
    """Holds the writer lock from ``open`` until ``close``. Use as a context manager.

    ``auto_compact``: merge neighbouring small segments after each commit (``compact``'s rule).
    """

    def __init__(self, root: Path, embedder: EmbedderInfo, *, index_type: str | None = None,
                 max_index_memory: int | None = None, auto_compact: bool = True) -> None:
        """``index_type`` (a FAISS factory string, "" = automatic) and ``max_index_memory`` (bytes,
        0 = none) change the index's vector settings: every segment is rebuilt at the next commit.
        None keeps them."""
        self.root = Path(root)
        self.auto_compact = auto_compact
        self._vector_settings = (index_type, max_index_memory)
        self.root.mkdir(parents=True, exist_ok=True)
        had_lock_file = (self.root / LOCK).exists()
        self._lock = WriterLock(self.root)
        self._lock.acquire()  # before looking inside: another writer may be creating the index
        try:
            if not (self.root / MANIFEST).exists() and any(p.name not in (LOCK, STAGING_DIR) for p in self.root.iterdir()):
                if not had_lock_file:
                    (self.root / LOCK).unlink(missing_ok=True)
                raise ObjsearchError(f"{self.root} is not empty and holds no index; choose an empty or new --index directory")
            self._load(embedder)
        except BaseException:
            self._lock.release()
            raise

    def _load(self, embedder: EmbedderInfo) -> None:
        self.verified = VerifiedFiles(self.root)
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            if self.manifest.generation == 0 and not self.manifest.files():
                self.manifest.embedder = embedder  # nothing was ever committed: any model may start it
                write_manifest(self.root, self.manifest)
            check_embedder(self.manifest, embedder)
            # A writer must not build on bad data: sizes of every file, and the checksum of every
            # file that changed since a writer last verified it (``verified``; doctor hashes all).
            damaged = missing_or_resized(self.root, self.manifest) or self.verified.damaged(self.manifest.files())
            if damaged:
                raise IndexCorrupt(f"index files are missing or damaged: {', '.join(damaged[:5])}; run `objsearch doctor --repair`")
            if self.manifest.format_version == NO_KEYWORDS_FORMAT:
                self.manifest = add_keyword_index(self.root, self.manifest)
                for segment in self.manifest.segments:
                    self.verified.record(segment.keywords)
        else:
            self.manifest = Manifest(embedder=embedder)
            write_manifest(self.root, self.manifest)  # an empty index is still an index
        self.embed_dim = self.manifest.embedder.embed_dim
        try:
            self._load_committed_state()
        except (pa.ArrowException, OSError) as exc:
            raise IndexCorrupt(f"cannot read the index's files ({first_line(exc)}); run `objsearch doctor --repair`") from None
        self._reset_staged()
        index_type, max_memory = self._vector_settings
        if index_type is not None and index_type != self.manifest.index_type_override:
            try:  # a bad string fails here, before any work
                vectors.new_index(self.embed_dim, index_type or vectors.DEFAULT_INDEX_TYPE)
            except RuntimeError as exc:
                raise ObjsearchError(f"bad --index-type {index_type!r}: {str(exc).strip().splitlines()[-1]}") from None
            self.manifest.index_type_override = index_type
            self._rebuild_requested = True
        if max_memory is not None and max_memory != self.manifest.max_index_memory:
            self.manifest.max_index_memory = max_memory
            self._rebuild_requested = True
        self._collect_garbage()

    def _load_committed_state(self) -> None:
        """The images table (and which images each shard holds) and the tombstones. Which objects
        each image has is read only when a removal needs it (``_objects_of``)."""
        tables = [parquet.read_shards([self.root / e.path], schema.IMAGES_SCHEMA) for e in self.manifest.image_shards]
        self._image_ids_by_shard = {e.path: set(t.column(schema.IMAGE_ID).to_pylist()) for e, t in zip(self.manifest.image_shards, tables)}
        self._images = pa.concat_tables(tables) if tables else schema.IMAGES_SCHEMA.empty_table()
        self._tombstones = read_tombstones(self.root, self.manifest)
        self._object_image_columns: tuple[np.ndarray, np.ndarray] | None = None  # (object ids, their image ids)

    def _reset_staged(self) -> None:
        self._staged_images: list[dict] = []
        self._staged_objects: dict[str, list] = {name: [] for name in schema.objects_schema(1).names if name != schema.EMBEDDING}
        self._staged_embeddings: list[np.ndarray] = []
        self._staged_removals: set[int] = set()
        self._staged_row_removals: set[int] = set()
        self._rebuild_requested = False
        self._next_image_id = self.manifest.next_image_id
        self._next_object_id = self.manifest.next_object_id

    # -- reading what is committed ---------------------------------------------------------------
    def known_images(self) -> dict[str, ImageRecord]:
        """Committed images by path."""
        return {row["path"]: ImageRecord(**row) for row in self._images.to_pylist()}

    @property
    def staged_count(self) -> int:
        return len(self._staged_images) + len(self._staged_removals) + len(self._staged_row_removals) + self._rebuild_requested

    def rebuild_vectors(self) -> None:
        """Stage a rebuild of every segment's FAISS index from Parquet (re-choosing its type) at the next commit."""
        self._rebuild_requested = True

    # -- staging -----------------------------------------------------------------------------------
    def add_image(self, record: ImageRecord, detections: Detections | None = None) -> int:
        """Stage an image row (and its objects); returns its image_id.

        ``record.image_id >= 0`` re-uses that id (a file touched but unchanged keeps its objects).
        """
        image_id = record.image_id if record.image_id >= 0 else self._allocate_image_id()
        row = {**record.__dict__, schema.IMAGE_ID: image_id}
        self._staged_images.append(row)
        if detections is not None and len(detections):
            n = len(detections)
            ids = np.arange(self._next_object_id, self._next_object_id + n, dtype=np.int64)
            self._next_object_id += n
            columns = self._staged_objects
            columns[schema.OBJECT_ID].extend(ids.tolist())
            columns[schema.IMAGE_ID].extend([image_id] * n)
            for i, name in enumerate(schema.BOX_COLUMNS):
                columns[name].extend(detections.boxes_xyxy[:, i].tolist())
            columns[schema.SCORE].extend(detections.scores.tolist())
            columns[schema.LABEL].extend(detections.labels)
            columns[schema.CAPTION].extend(detections.captions)
            columns[schema.MASK].extend([None if m is None else mask_json(m) for m in detections.masks])
            if detections.embeddings.shape[1] != self.embed_dim:
                raise ValueError(f"embeddings are {detections.embeddings.shape[1]}-d, index is {self.embed_dim}-d")
            self._staged_embeddings.append(detections.embeddings)
        return image_id

    def remove_images(self, image_ids, *, keep_objects: bool = False) -> None:
        """Stage removal of image rows, and of their objects unless ``keep_objects``."""
        ids = set(int(i) for i in image_ids)
        self._staged_row_removals |= ids
        if not keep_objects:
            self._staged_removals |= ids

    def _allocate_image_id(self) -> int:
        self._next_image_id += 1
        return self._next_image_id - 1

    # -- committing --------------------------------------------------------------------------------
    def commit(self) -> None:
        """Make everything staged visible at once, durably, then merge segments if the rule says so.
        A no-op when nothing is staged.

        If it raises (disk full, I/O error), the committed state on disk is the last one and the
        staged work is dropped; the writer holds that state again and stays usable. A merge that
        fails after the commit only logs a warning: the commit stands, the merge is retried later.
        """
        if not self.staged_count:
            return
        rebuild = self._rebuild_requested
        try:
            self._commit_staged()
        except BaseException:
            self._restore()
            raise
        if rebuild:
            self.compact(full=True, rebuild=True)
        elif self.auto_compact:
            try:
                self.compact(full=False)
            except Exception as exc:
                logger.warning("merging segments failed (%s); the commit stands and the merge is retried at the next commit", first_line(exc))

    def _restore(self) -> None:
        """Back to what ``self.manifest`` (the last committed generation) holds, nothing staged."""
        self._load_committed_state()
        self._reset_staged()

    def _commit_staged(self) -> None:
        manifest, tag = self._next_manifest()
        removed_object_ids = self._objects_of(self._staged_removals)
        self._rewrite_image_shards(manifest, tag)
        self._write_new_images(manifest, tag)
        self._write_new_segment(manifest, tag)
        if len(removed_object_ids):
            self._write_tombstones(manifest, np.union1d(self._tombstones, removed_object_ids), tag)
        manifest.next_image_id = self._next_image_id
        manifest.next_object_id = self._next_object_id
        if self._images.column(schema.STATUS).num_chunks > 256:  # one chunk per commit otherwise
            self._images = self._images.combine_chunks()
        manifest.counts = {
            "images": self._images.num_rows,
            "images_error": pc.sum(pc.equal(self._images.column(schema.STATUS), schema.STATUS_ERROR)).as_py() or 0,
            "objects": sum(s.rows for s in manifest.segments) - manifest.tombstone_count,
        }
        self._swap(manifest)
        self._reset_staged()
        logger.info("committed generation %d: %s", manifest.generation, manifest.counts)

    def compact(self, *, full: bool = False, rebuild: bool = False) -> int:
        """Merge segments and image shards: by the tiered rule (``compact``), or with ``full`` all of
        them into one each, dropping every tombstoned row. ``rebuild``: rebuild the vectors even of
        a single segment (a new index type). Each merge is its own commit. Returns merges made."""
        if self.staged_count:
            raise ObjsearchError("commit or drop the staged changes before compacting")
        merges = 0
        while True:
            segments, shards = self.manifest.segments, self.manifest.image_shards
            if full:
                whole = segments and (len(segments) > 1 or len(self._tombstones) or rebuild)
                segment_run = (0, len(segments)) if whole else None
                shard_run = (0, len(shards)) if len(shards) > 1 else None
            else:
                rows = compact.live_rows(segments, self._tombstones)
                segment_run = compact.run_to_merge(rows, compact.SEGMENT_TIER_BASE_ROWS)
                if segment_run is None and (outgrown := compact.outgrown_exact_segment(self.manifest, rows)) is not None:
                    segment_run = (outgrown, outgrown + 1)
                # One merge a round, each its own commit, so the disk holds one merge's new files at a time.
                shard_run = None if segment_run is not None else compact.run_to_merge(
                    [e.size for e in shards], compact.IMAGE_SHARD_TIER_BASE_BYTES, total=sum(e.size for e in self.manifest.files()))
            if segment_run is None and shard_run is None:
                return merges
            manifest, tag = self._next_manifest()
            try:
                if segment_run is not None:
                    self._merge_segments(manifest, *segment_run, tag)
                if shard_run is not None:
                    self._merge_image_shards(manifest, *shard_run, tag)
                self._swap(manifest)
            except BaseException:
                self._restore()  # the merge's in-memory changes go with it
                raise
            self._reset_staged()
            merges += 1
            if full:
                return merges

    def _next_manifest(self) -> tuple[Manifest, str]:
        generation = self.manifest.generation + 1
        return dataclasses.replace(self.manifest, generation=generation), f"g{generation:08d}-{uuid.uuid4().hex[:8]}"

    def _swap(self, manifest: Manifest) -> None:
        """The commit point: ``manifest`` replaces the committed one; then unused files go."""
        write_manifest(self.root, manifest)
        self.manifest = manifest
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        collect_garbage(self.root, self.manifest)
        self.verified.save(self.manifest.files())

    def _entry(self, relative: str) -> FileEntry:
        entry = file_entry(self.root, relative)
        self.verified.record(entry)
        return entry

    def _verify(self, entries: list[FileEntry]) -> None:
        """IndexCorrupt unless ``entries`` hold what the manifest says, every byte hashed: they are
        about to be rewritten into new files with new checksums, which must not inherit damage."""
        damaged = self.verified.damaged(entries, trust_cache=False)
        if damaged:
            raise IndexCorrupt(f"index files are missing or damaged: {', '.join(damaged[:5])}; run `objsearch doctor --repair`")

    def _objects_of(self, image_ids: set[int]) -> np.ndarray:
        """Sorted ids of the committed, not yet tombstoned objects of ``image_ids``."""
        if not image_ids:
            return np.zeros(0, np.int64)
        if self._object_image_columns is None:
            table = parquet.read_shards([self.root / s.objects.path for s in self.manifest.segments],
                                        schema.objects_schema(self.embed_dim), [schema.OBJECT_ID, schema.IMAGE_ID])
            self._object_image_columns = (table.column(0).to_numpy().astype(np.int64), table.column(1).to_numpy().astype(np.int64))
        object_ids, owners = self._object_image_columns
        chosen = object_ids[np.isin(owners, np.fromiter(image_ids, np.int64, len(image_ids)))]
        return np.setdiff1d(chosen, self._tombstones)

    def _write_tombstones(self, manifest: Manifest, tombstones: np.ndarray, tag: str) -> None:
        """Record ``tombstones`` (sorted object ids) in a new file, or none when empty."""
        if len(tombstones):
            relative = f"{TOMBSTONES_DIR}/tombstones-{tag}.parquet"
            parquet.write_shard(pa.table({schema.OBJECT_ID: pa.array(tombstones, pa.int64())}, schema=schema.TOMBSTONES_SCHEMA), self.root / relative)
            manifest.tombstones = self._entry(relative)
        else:
            manifest.tombstones = None
        manifest.tombstone_count = len(tombstones)
        self._tombstones = tombstones

    def _drop_rows(self, entries: list[FileEntry], drop_ids: set[int], tag: str) -> list[FileEntry]:
        """Rewrite, under new names, the image shards that hold rows of ``drop_ids``, without those
        rows. Returns the new shard list; shards that hold none of them are kept and not read."""
        kept: list[FileEntry] = []
        drop_set = pa.array(sorted(drop_ids), pa.int64())
        for number, entry in enumerate(entries):
            if not self._image_ids_by_shard[entry.path] & drop_ids:
                kept.append(entry)
                continue
            self._verify([entry])
            table = parquet.read_shards([self.root / entry.path], schema.IMAGES_SCHEMA)
            remaining = table.filter(pc.invert(pc.is_in(table.column(schema.IMAGE_ID), value_set=drop_set)))
            del self._image_ids_by_shard[entry.path]
            if remaining.num_rows:
                relative = f"{IMAGES_DIR}/images-{tag}-r{number:05d}.parquet"
                parquet.write_shard(remaining, self.root / relative)
                kept.append(self._entry(relative))
                self._image_ids_by_shard[relative] = set(remaining.column(schema.IMAGE_ID).to_pylist())
        return kept

    def _rewrite_image_shards(self, manifest: Manifest, tag: str) -> None:
        """Drop removed image rows from the shards (and the in-memory table) that hold them."""
        if not self._staged_row_removals:
            return
        manifest.image_shards = self._drop_rows(manifest.image_shards, self._staged_row_removals, tag)
        drop_set = pa.array(sorted(self._staged_row_removals), pa.int64())
        self._images = self._images.filter(pc.invert(pc.is_in(self._images.column(schema.IMAGE_ID), value_set=drop_set)))

    def _write_new_images(self, manifest: Manifest, tag: str) -> None:
        if not self._staged_images:
            return
        table = parquet.images_table(self._staged_images).sort_by(schema.IMAGE_ID)  # rows are looked up by id
        relative = f"{IMAGES_DIR}/images-{tag}.parquet"
        parquet.write_shard(table, self.root / relative)
        manifest.image_shards = manifest.image_shards + [self._entry(relative)]
        self._image_ids_by_shard[relative] = set(table.column(schema.IMAGE_ID).to_pylist())
        self._images = pa.concat_tables([self._images, table])

    def _write_new_segment(self, manifest: Manifest, tag: str) -> None:
        """The staged objects as one new segment (none when there are none)."""
        if not self._staged_embeddings:
            return
        embeddings = np.concatenate(self._staged_embeddings)
        table = parquet.objects_table(self._staged_objects, embeddings, self.embed_dim)
        total = sum(s.rows for s in manifest.segments) - manifest.tombstone_count + table.num_rows
        segment = compact.write_segment(self.root, table, tag, compact.segment_index_type(manifest, table.num_rows, total))
        for entry in segment.files():
            self.verified.record(entry)
        manifest.segments = manifest.segments + [segment]
        if self._object_image_columns is not None:
            object_ids, owners = self._object_image_columns
            self._object_image_columns = (np.concatenate([object_ids, table.column(schema.OBJECT_ID).to_numpy()]),
                                          np.concatenate([owners, table.column(schema.IMAGE_ID).to_numpy()]))

    def _merge_segments(self, manifest: Manifest, start: int, end: int, tag: str) -> None:
        self._verify([s.objects for s in manifest.segments[start:end]])
        merged, purged = compact.merge_segments(self.root, manifest, start, end, self._tombstones, tag)
        for segment in merged:
            for entry in segment.files():
                self.verified.record(entry)
        manifest.segments = manifest.segments[:start] + merged + manifest.segments[end:]
        if len(purged):
            self._write_tombstones(manifest, np.setdiff1d(self._tombstones, purged), tag)
            self._object_image_columns = None  # purged rows are gone: read again when next needed

    def _merge_image_shards(self, manifest: Manifest, start: int, end: int, tag: str) -> None:
        entries = manifest.image_shards[start:end]
        self._verify(entries)
        entry, table = compact.merge_image_shards(self.root, entries, tag)
        self.verified.record(entry)
        for old in entries:
            del self._image_ids_by_shard[old.path]
        self._image_ids_by_shard[entry.path] = set(table.column(schema.IMAGE_ID).to_pylist())
        manifest.image_shards = manifest.image_shards[:start] + [entry] + manifest.image_shards[end:]

    # -- closing -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the lock; anything staged and not committed is dropped."""
        self._lock.release()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compact_index(root: Path) -> tuple[Manifest, Manifest]:
    """Merge every segment and every images shard of the index at ``root`` into one each, dropping
    the rows of deleted objects for good; unused files are deleted. An index of format 1 is first
    upgraded to segments (``upgrade``). Returns (before, after)."""
    from objsearch.store.upgrade import OLD_FORMAT, manifest_format, upgrade_format_1

    if manifest_format(root) == OLD_FORMAT:
        upgrade_format_1(root)
    before = read_manifest(root)
    with IndexWriter(root, before.embedder, auto_compact=False) as writer:
        writer.compact(full=True)
        return before, writer.manifest


def mask_json(mask: dict) -> str:
    """A COCO RLE mask as the JSON text the objects table stores (``counts`` as ASCII)."""
    counts = mask.get("counts")
    if isinstance(counts, bytes):
        mask = {**mask, "counts": counts.decode("ascii")}
    return json.dumps(mask)
