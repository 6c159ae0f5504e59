"""The single writer of an index: stage image rows, objects and removals, then commit atomically.

Shards are immutable. Removing images rewrites only the shards that hold them, under new names;
the manifest then swaps every change in at once. Nothing staged is visible before ``commit`` and a
crash before the manifest rename loses only the staged work, which the next run redoes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from objsearch import schema
from objsearch.embedders.base import Detections
from objsearch.errors import IndexCorrupt, ModelMismatch, ObjsearchError
from objsearch.store import parquet, vectors
from objsearch.store.layout import (
    IMAGES_DIR,
    LOCK,
    MANIFEST,
    OBJECTS_DIR,
    EmbedderInfo,
    FileEntry,
    Manifest,
    WriterLock,
    file_entry,
    missing_or_resized,
    read_manifest,
    sha256_file,
    write_manifest,
)

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


def check_embedder(manifest: Manifest, info: EmbedderInfo) -> None:
    """ModelMismatch unless ``info`` is the embedder that built the index."""
    built = manifest.embedder
    if (built.name, built.version, built.embed_dim) != (info.name, info.version, info.embed_dim):
        raise ModelMismatch(
            f"this index was built with model {built.name!r} (version {built.version}, {built.embed_dim}-d); "
            f"it cannot be used with {info.name!r} (version {info.version}, {info.embed_dim}-d). "
            "Use the same --model, or index into another --index directory."
        )


# Unreferenced files younger than this are left alone: a reader that opened an older manifest
# may still be about to load them (the vectors file is loaded on the first search).
GC_GRACE_SECONDS = 600.0


class IndexWriter:
    """Holds the writer lock from ``open`` until ``close``. Use as a context manager."""

    def __init__(self, root: Path, embedder: EmbedderInfo, *, gc_grace_seconds: float = GC_GRACE_SECONDS,
                 index_type: str | None = None, max_index_memory: int | None = None) -> None:
        """``index_type`` (a FAISS factory string, "" = automatic) and ``max_index_memory`` (bytes,
        0 = none) change the index's vector settings from the next commit on; None keeps them."""
        self.root = Path(root)
        self.gc_grace_seconds = gc_grace_seconds
        self._vector_settings = (index_type, max_index_memory)
        self.root.mkdir(parents=True, exist_ok=True)
        had_lock_file = (self.root / LOCK).exists()
        self._lock = WriterLock(self.root)
        self._lock.acquire()  # before looking inside: another writer may be creating the index
        try:
            if not (self.root / MANIFEST).exists() and any(p.name != LOCK for p in self.root.iterdir()):
                if not had_lock_file:
                    (self.root / LOCK).unlink(missing_ok=True)
                raise ObjsearchError(f"{self.root} is not empty and holds no index; choose an empty or new --index directory")
            self._load(embedder)
        except BaseException:
            self._lock.release()
            raise

    def _load(self, embedder: EmbedderInfo) -> None:
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            if self.manifest.generation == 0 and not self.manifest.files():
                self.manifest.embedder = embedder  # nothing was ever committed: any model may start it
                write_manifest(self.root, self.manifest)
            check_embedder(self.manifest, embedder)
            # Verified in full before anything is written on top: a writer must not build on bad data
            # (about a second per GB; readers check sizes only, `objsearch doctor` checks both).
            damaged = missing_or_resized(self.root, self.manifest) or [
                e.path for e in self.manifest.files() if sha256_file(self.root / e.path) != e.sha256
            ]
            if damaged:
                raise IndexCorrupt(f"index files are missing or damaged: {', '.join(damaged[:5])}; run `objsearch doctor --repair`")
        else:
            self.manifest = Manifest(embedder=embedder)
            write_manifest(self.root, self.manifest)  # an empty index is still an index
        self.embed_dim = self.manifest.embedder.embed_dim
        try:
            self._load_committed_state()
        except (pa.ArrowException, OSError, RuntimeError) as exc:  # RuntimeError: FAISS
            raise IndexCorrupt(f"cannot read the index's files ({str(exc).splitlines()[0]}); run `objsearch doctor --repair`") from None
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
        self._collect_garbage(keep=self._referenced(self.manifest))

    def _load_committed_state(self) -> None:
        self._images = parquet.read_shards([self.root / e.path for e in self.manifest.image_shards], schema.IMAGES_SCHEMA)
        # Which images each shard holds: a removal then rewrites only the shards concerned.
        self._image_ids_by_shard = self._shard_image_ids(self.manifest.image_shards, schema.IMAGES_SCHEMA)
        self._object_image_ids = self._shard_image_ids(self.manifest.object_shards, schema.objects_schema(self.embed_dim))
        if self.manifest.vectors:
            self.index = vectors.load(self.root / self.manifest.vectors.path, mmap=False)
        else:
            self.index = vectors.new_index(self.embed_dim, self.manifest.index_type)

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
        """Stage a rebuild of the FAISS index from Parquet (re-choosing its type) at the next commit."""
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
            columns[schema.MASK].extend([None if m is None else _rle_json(m) for m in detections.masks])
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
        """Make everything staged visible at once, durably. A no-op when nothing is staged.

        If it raises (disk full, I/O error), the committed state on disk is untouched but this
        writer's in-memory state is not: close it (the pipeline does, by letting the error out).
        """
        if not self.staged_count:
            return
        previous = self.manifest
        manifest = dataclasses.replace(previous, generation=previous.generation + 1)
        tag = f"g{manifest.generation:08d}-{uuid.uuid4().hex[:8]}"

        removed_object_ids = self._rewrite_object_shards(manifest, tag)
        self._rewrite_image_shards(manifest, tag)
        new_object_ids, new_embeddings = self._write_new_shards(manifest, tag)

        vectors.remove(self.index, removed_object_ids)
        vectors.add(self.index, new_object_ids, new_embeddings)
        target = self._target_index_type(int(self.index.ntotal))
        if self._rebuild_requested or target != manifest.index_type:
            logger.info("rebuilding the vector index as %s (%d vectors)", target, self.index.ntotal)
            self.index = build_vectors_from_shards(self.root, manifest, target)
            manifest.index_type = target
        vectors_name = f"vectors-{tag}.faiss"
        vectors.write(self.index, self.root / vectors_name)
        manifest.vectors = file_entry(self.root, vectors_name)

        manifest.next_image_id = self._next_image_id
        manifest.next_object_id = self._next_object_id
        statuses = self._images.column(schema.STATUS).to_pylist()
        manifest.counts = {
            "images": len(statuses),
            "images_error": statuses.count(schema.STATUS_ERROR),
            "objects": int(self.index.ntotal),
        }
        write_manifest(self.root, manifest)  # the commit point
        self.manifest = manifest
        self._reset_staged()
        self._collect_garbage(keep=self._referenced(manifest) | self._referenced(previous))
        logger.info("committed generation %d: %s", manifest.generation, manifest.counts)

    def _target_index_type(self, n_objects: int) -> str:
        target = self.manifest.index_type_override or vectors.choose_index_type(n_objects, self.embed_dim, self.manifest.max_index_memory or None)
        # Too few vectors to train it yet: stay exact; a later commit builds it.
        return target if vectors.trainable(target, n_objects) else vectors.DEFAULT_INDEX_TYPE

    def _drop_rows(self, entries: list[FileEntry], image_ids_by_shard: dict[str, set[int]], drop_ids: set[int],
                   table_schema: pa.Schema, folder: str, tag: str) -> tuple[list[FileEntry], list[pa.Table]]:
        """Rewrite, under new names, the shards that hold rows of images in ``drop_ids``, without
        those rows. Returns (the table's new shard list, the dropped rows). Shards that hold none of
        them are kept as they are and not read."""
        kept: list[FileEntry] = []
        dropped: list[pa.Table] = []
        drop_set = pa.array(sorted(drop_ids), pa.int64())
        for number, entry in enumerate(entries):
            if not image_ids_by_shard[entry.path] & drop_ids:
                kept.append(entry)
                continue
            table = parquet.read_shards([self.root / entry.path], table_schema)
            drop = pc.is_in(table.column(schema.IMAGE_ID), value_set=drop_set)
            dropped.append(table.filter(drop))
            remaining = table.filter(pc.invert(drop))
            del image_ids_by_shard[entry.path]
            if remaining.num_rows:
                relative = f"{folder}/{folder}-{tag}-r{number:05d}.parquet"
                parquet.write_shard(remaining, self.root / relative)
                kept.append(file_entry(self.root, relative))
                image_ids_by_shard[relative] = set(remaining.column(schema.IMAGE_ID).to_pylist())
        return kept, dropped

    def _rewrite_object_shards(self, manifest: Manifest, tag: str) -> np.ndarray:
        """Drop objects of removed images from the shards that hold them; returns their object ids."""
        if not self._staged_removals:
            return np.zeros(0, np.int64)
        manifest.object_shards, dropped = self._drop_rows(
            manifest.object_shards, self._object_image_ids, self._staged_removals,
            schema.objects_schema(self.embed_dim), OBJECTS_DIR, tag,
        )
        return np.concatenate([t.column(schema.OBJECT_ID).to_numpy() for t in dropped]) if dropped else np.zeros(0, np.int64)

    def _rewrite_image_shards(self, manifest: Manifest, tag: str) -> None:
        """Drop removed image rows from the shards (and the in-memory table) that hold them."""
        if not self._staged_row_removals:
            return
        manifest.image_shards, _ = self._drop_rows(
            manifest.image_shards, self._image_ids_by_shard, self._staged_row_removals, schema.IMAGES_SCHEMA, IMAGES_DIR, tag
        )
        drop_set = pa.array(sorted(self._staged_row_removals), pa.int64())
        self._images = self._images.filter(pc.invert(pc.is_in(self._images.column(schema.IMAGE_ID), value_set=drop_set)))

    def _write_new_shards(self, manifest: Manifest, tag: str) -> tuple[np.ndarray, np.ndarray]:
        if self._staged_images:
            table = parquet.images_table(self._staged_images)
            relative = f"{IMAGES_DIR}/images-{tag}.parquet"
            parquet.write_shard(table, self.root / relative)
            manifest.image_shards = manifest.image_shards + [file_entry(self.root, relative)]
            self._image_ids_by_shard[relative] = set(table.column(schema.IMAGE_ID).to_pylist())
            self._images = pa.concat_tables([self._images, table])
        if not self._staged_embeddings:
            return np.zeros(0, np.int64), np.zeros((0, self.embed_dim), np.float32)
        embeddings = np.concatenate(self._staged_embeddings)
        table = parquet.objects_table(self._staged_objects, embeddings, self.embed_dim)
        relative = f"{OBJECTS_DIR}/objects-{tag}.parquet"
        parquet.write_shard(table, self.root / relative)
        manifest.object_shards = manifest.object_shards + [file_entry(self.root, relative)]
        self._object_image_ids[relative] = set(self._staged_objects[schema.IMAGE_ID])
        # FAISS gets the float16-rounded values, so it always matches what Parquet holds.
        return table.column(schema.OBJECT_ID).to_numpy(), parquet.as_stored_embeddings(embeddings).astype(np.float32)

    # -- housekeeping --------------------------------------------------------------------------------
    def _shard_image_ids(self, entries: list[FileEntry], table_schema: pa.Schema) -> dict[str, set[int]]:
        return {
            e.path: set(parquet.read_shards([self.root / e.path], table_schema, [schema.IMAGE_ID]).column(0).to_pylist())
            for e in entries
        }

    @staticmethod
    def _referenced(manifest: Manifest) -> set[str]:
        return {entry.path for entry in manifest.files()}

    def _collect_garbage(self, keep: set[str]) -> None:
        """Delete shard/vector files (and temp files of crashed runs) that no kept manifest names
        and that are older than the grace period."""
        cutoff = time.time() - self.gc_grace_seconds
        candidates = list(self.root.glob("vectors-*.faiss")) + list(self.root.glob(".*.tmp"))
        for folder in (IMAGES_DIR, OBJECTS_DIR):
            candidates += list((self.root / folder).glob("*.parquet")) + list((self.root / folder).glob(".*.tmp"))
        for path in candidates:
            if path.relative_to(self.root).as_posix() in keep:
                continue
            try:
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Release the lock; anything staged and not committed is dropped."""
        self._lock.release()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_vectors_from_shards(root: Path, manifest: Manifest, index_type: str):
    """A FAISS index of ``index_type`` over every object in the manifest's shards. Parquet is the
    source of truth; FAISS always holds exactly its (float16-rounded) embeddings."""
    table = parquet.read_shards([root / e.path for e in manifest.object_shards],
                                schema.objects_schema(manifest.embedder.embed_dim), [schema.OBJECT_ID, schema.EMBEDDING])
    return vectors.build(table.column(schema.OBJECT_ID).to_numpy(), parquet.embeddings_of(table), index_type)


def _rle_json(mask: dict) -> str:
    counts = mask.get("counts")
    if isinstance(counts, bytes):
        mask = {**mask, "counts": counts.decode("ascii")}
    return json.dumps(mask)


def index_size_bytes(root: Path) -> int:
    """Bytes on disk of every committed file plus the manifest."""
    manifest = read_manifest(root)
    return sum(entry.size for entry in manifest.files()) + os.path.getsize(root / MANIFEST)
