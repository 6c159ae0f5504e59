"""Check an index against its manifest, and rebuild what can be rebuilt from the data that is left.

Checks: every committed file exists with the size and sha256 the manifest records (every byte is
hashed: this is the full check that writers leave to the doctor); every Parquet file opens; each
segment's FAISS file and keywords file load and hold exactly its objects shard's ids; every
tombstone names an object of a segment.

Repair (under the writer lock):
- a damaged FAISS file is rebuilt from the embeddings its segment's shard holds (nothing is lost);
- a damaged keywords file is rebuilt from its shard's labels and captions (nothing is lost);
- a damaged objects shard is dropped with its segment, and the images that have no objects left
  are dropped with it, so the next `objsearch index` run embeds those files again;
- a damaged images shard is dropped and the objects of its images are tombstoned; the next run
  re-adds those files;
- the tombstones are recomputed from what is left: an object is live exactly when its image's
  row is (a removed image's row and objects go in the same commit), so a damaged tombstones file
  is rebuilt without loss.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from objsearch import schema
from objsearch.errors import IndexCorrupt
from objsearch.store import keywords, parquet, vectors
from objsearch.store.compact import rebuild_segment_keywords
from objsearch.store.layout import MANIFEST, TOMBSTONES_DIR, VECTORS_DIR, FileEntry, WriterLock, file_entry, sha256_file
from objsearch.store.manifest import Manifest, read_manifest, write_manifest
from objsearch.store.gc import leased_manifest
from objsearch.store.segments import read_tombstones

logger = logging.getLogger(__name__)


@dataclass
class Problem:
    path: str  # relative to the index root
    what: str


@dataclass
class DoctorReport:
    problems: list[Problem] = field(default_factory=list)  # found first
    repairs: list[str] = field(default_factory=list)  # what a repair did
    remaining: list[Problem] = field(default_factory=list)  # still there at the end


def run_doctor(root: Path, *, repair: bool) -> DoctorReport:
    """Check the index; with ``repair``, also repair it and check again."""
    if repair:
        return repair_index(root)
    problems = check_index(root)
    return DoctorReport(problems=problems, remaining=problems)


def _file_problem(root: Path, entry: FileEntry) -> str | None:
    path = root / entry.path
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry.size:
        return f"size {path.stat().st_size} bytes, manifest says {entry.size}"
    if sha256_file(path) != entry.sha256:
        return "checksum mismatch (altered or corrupted)"
    try:
        if path.suffix == ".parquet":
            pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        return f"unreadable Parquet: {exc}"
    return None


def check_index(root: Path) -> list[Problem]:
    """Every problem found; an empty list means the index is sound. A writer may run meanwhile:
    the generation checked is leased, so its files stay until the check ends."""
    manifest, lease = leased_manifest(root)
    try:
        return _problems(root, manifest)
    finally:
        if lease is not None:
            lease.release()


def _problems(root: Path, manifest: Manifest) -> list[Problem]:
    problems = [Problem(e.path, what) for e in manifest.files() if (what := _file_problem(root, e))]
    if problems:
        return problems
    dim = manifest.embedder.embed_dim
    segment_ids = []
    for segment in manifest.segments:
        try:
            index = vectors.load(root / segment.vectors.path)
        except RuntimeError as exc:
            problems.append(Problem(segment.vectors.path, f"FAISS cannot load it: {exc}"))
            continue
        faiss_ids = np.sort(vectors.all_ids(index))
        parquet_ids = np.sort(_column(root, [segment.objects], schema.objects_schema(dim), schema.OBJECT_ID))
        segment_ids.append(parquet_ids)
        if not np.array_equal(faiss_ids, parquet_ids):
            problems.append(Problem(segment.vectors.path, f"{len(np.setdiff1d(faiss_ids, parquet_ids))} FAISS ids without a Parquet row, "
                                                          f"{len(np.setdiff1d(parquet_ids, faiss_ids))} rows of {segment.objects.path} without a vector"))
        if segment.keywords is not None:
            try:
                keyword_ids = keywords.stored_ids(root / segment.keywords.path)
            except IndexCorrupt as exc:
                problems.append(Problem(segment.keywords.path, f"SQLite cannot read it: {exc}"))
            else:
                if not np.array_equal(keyword_ids, parquet_ids):
                    problems.append(Problem(segment.keywords.path, f"its rows are not those of {segment.objects.path}"))
        if len(parquet_ids) != segment.rows or (len(parquet_ids) and (parquet_ids[0] < segment.min_object_id or parquet_ids[-1] > segment.max_object_id)):
            problems.append(Problem(MANIFEST, f"the rows or id range it records for {segment.objects.path} are not the shard's"))
    ranges = [(s.min_object_id, s.max_object_id) for s in manifest.segments]
    if any(previous[1] >= current[0] for previous, current in zip(ranges, ranges[1:])):
        problems.append(Problem(MANIFEST, "segments are not in object-id order with disjoint ranges"))
    tombstones = read_tombstones(root, manifest)
    all_ids = np.concatenate(segment_ids) if segment_ids else np.zeros(0, np.int64)
    if len(tombstones) != manifest.tombstone_count or len(np.setdiff1d(tombstones, all_ids)):
        problems.append(Problem(manifest.tombstones.path if manifest.tombstones else "tombstones", "tombstones name objects no segment holds"))
    if not problems:
        problems += _orphans_and_counts(root, manifest, tombstones)
    return problems


def _orphans_and_counts(root: Path, manifest: Manifest, tombstones: np.ndarray) -> list[Problem]:
    """A live object whose image row is gone, or counts that are not the rows'."""
    objects = parquet.read_shards([root / s.objects.path for s in manifest.segments], schema.objects_schema(manifest.embedder.embed_dim),
                                  [schema.OBJECT_ID, schema.IMAGE_ID])
    images = parquet.read_shards([root / e.path for e in manifest.image_shards], schema.IMAGES_SCHEMA, [schema.IMAGE_ID, schema.STATUS])
    live = ~np.isin(objects.column(0).to_numpy(), tombstones)
    orphans = int((~np.isin(objects.column(1).to_numpy()[live], images.column(0).to_numpy())).sum())
    problems = []
    if orphans:
        problems.append(Problem(manifest.tombstones.path if manifest.tombstones else "tombstones", f"{orphans} live objects have no image row"))
    statuses = images.column(1).to_pylist()
    counts = {"images": len(statuses), "images_error": statuses.count(schema.STATUS_ERROR), "objects": int(live.sum())}
    if counts != manifest.counts:
        problems.append(Problem(MANIFEST, f"counts {manifest.counts} are not the rows' {counts}"))
    return problems


def repair_index(root: Path) -> DoctorReport:
    """Check, repair what can be repaired, check again."""
    report = DoctorReport(problems=check_index(root))
    if not report.problems:
        return report
    lock = WriterLock(root)
    lock.acquire()
    try:
        manifest = read_manifest(root)
        bad = {p.path for p in _problems(root, manifest)}  # again, under the lock: a writer may have run meanwhile
        manifest.generation += 1
        _drop_damaged_shards(root, manifest, bad, report)
        _rebuild_vectors(root, manifest, bad, report)
        _rebuild_keywords(root, manifest, bad, report)
        _refresh_segment_ranges(root, manifest, report)
        _recompute_tombstones(root, manifest, bad, report)
        write_manifest(root, manifest)
    finally:
        lock.release()
    report.remaining = check_index(root)
    return report


def _drop_damaged_shards(root: Path, manifest: Manifest, bad: set[str], report: DoctorReport) -> None:
    lost_segments = [s for s in manifest.segments if s.objects.path in bad]
    lost_images = [e for e in manifest.image_shards if e.path in bad]
    manifest.segments = [s for s in manifest.segments if s.objects.path not in bad]
    manifest.image_shards = [e for e in manifest.image_shards if e.path not in bad]
    report.repairs += [f"dropped damaged shard {e.path}" for e in [s.objects for s in lost_segments] + lost_images]
    if lost_segments:
        # Images that have no object left lost them with the shard: drop their rows so the next
        # index run embeds those files again (an image that truly had none is merely re-embedded).
        live = _live_object_image_ids(root, manifest)
        images = parquet.read_shards([root / e.path for e in manifest.image_shards], schema.IMAGES_SCHEMA, [schema.IMAGE_ID, schema.STATUS])
        keep = {i for i, status in zip(images.column(0).to_pylist(), images.column(1).to_pylist()) if status != schema.STATUS_OK or i in live}
        _filter_image_shards(root, manifest, keep_ids=keep, report=report)


def _live_object_image_ids(root: Path, manifest: Manifest) -> set[int]:
    """Image ids that still have an object (tombstoned ones left out, if the tombstones can be read)."""
    table = parquet.read_shards([root / s.objects.path for s in manifest.segments], schema.objects_schema(manifest.embedder.embed_dim),
                                [schema.OBJECT_ID, schema.IMAGE_ID])
    try:
        tombstones = read_tombstones(root, manifest)
    except (OSError, ValueError):
        tombstones = np.zeros(0, np.int64)
    live = ~np.isin(table.column(0).to_numpy(), tombstones)
    return set(table.column(1).to_numpy()[live].tolist())


def _filter_image_shards(root: Path, manifest: Manifest, *, keep_ids: set[int], report: DoctorReport) -> None:
    """Rewrite the images shards keeping only rows whose image_id is in ``keep_ids``."""
    entries = []
    keep = np.fromiter(keep_ids, np.int64, len(keep_ids))
    for number, entry in enumerate(manifest.image_shards):
        table = parquet.read_shards([root / entry.path], schema.IMAGES_SCHEMA)
        mask = np.isin(table.column(schema.IMAGE_ID).to_numpy(), keep)
        if mask.all():
            entries.append(entry)
            continue
        report.repairs.append(f"dropped {int((~mask).sum())} rows of {entry.path} to re-index")
        if mask.any():
            relative = f"{Path(entry.path).parent}/repaired-g{manifest.generation:08d}-{number:05d}.parquet"
            parquet.write_shard(table.filter(mask), root / relative)
            entries.append(file_entry(root, relative))
    manifest.image_shards = entries


def _rebuild_vectors(root: Path, manifest: Manifest, bad: set[str], report: DoctorReport) -> None:
    """Rebuild each damaged FAISS file from the (float16) embeddings of its segment's shard."""
    dim = manifest.embedder.embed_dim
    segments = []
    for number, segment in enumerate(manifest.segments):
        if segment.vectors.path in bad:
            table = parquet.read_shards([root / segment.objects.path], schema.objects_schema(dim), [schema.OBJECT_ID, schema.EMBEDDING])
            index = vectors.build(table.column(schema.OBJECT_ID).to_numpy(), parquet.embeddings_of(table), segment.index_type)
            relative = f"{VECTORS_DIR}/vectors-repaired-g{manifest.generation:08d}-{number:05d}.faiss"
            vectors.write(index, root / relative)
            segment = dataclasses.replace(segment, vectors=file_entry(root, relative))
            report.repairs.append(f"rebuilt {relative} from Parquet ({index.ntotal} vectors)")
        segments.append(segment)
    manifest.segments = segments


def _rebuild_keywords(root: Path, manifest: Manifest, bad: set[str], report: DoctorReport) -> None:
    """Rebuild each damaged keywords file from the labels and captions of its segment's shard."""
    dim = manifest.embedder.embed_dim
    segments = []
    for number, segment in enumerate(manifest.segments):
        if segment.keywords is not None and segment.keywords.path in bad:
            segment, objects = rebuild_segment_keywords(root, segment, dim, f"repaired-g{manifest.generation:08d}-{number:05d}")
            report.repairs.append(f"rebuilt {segment.keywords.path} from Parquet ({objects} objects)")
        segments.append(segment)
    manifest.segments = segments


def _refresh_segment_ranges(root: Path, manifest: Manifest, report: DoctorReport) -> None:
    """Each segment's rows and id range as its shard holds them; segments in id order."""
    dim = manifest.embedder.embed_dim
    segments = []
    for segment in manifest.segments:
        ids = np.sort(_column(root, [segment.objects], schema.objects_schema(dim), schema.OBJECT_ID))
        if len(ids) and (len(ids), int(ids[0]), int(ids[-1])) != (segment.rows, segment.min_object_id, segment.max_object_id):
            report.repairs.append(f"recorded the rows and id range of {segment.objects.path} again")
            segment = dataclasses.replace(segment, rows=len(ids), min_object_id=int(ids[0]), max_object_id=int(ids[-1]))
        segments.append(segment)
    manifest.segments = sorted(segments, key=lambda s: s.min_object_id)


def _recompute_tombstones(root: Path, manifest: Manifest, bad: set[str], report: DoctorReport) -> None:
    """Tombstone exactly the objects whose image row is gone; recount."""
    dim = manifest.embedder.embed_dim
    objects = parquet.read_shards([root / s.objects.path for s in manifest.segments], schema.objects_schema(dim), [schema.OBJECT_ID, schema.IMAGE_ID])
    images = parquet.read_shards([root / e.path for e in manifest.image_shards], schema.IMAGES_SCHEMA, [schema.IMAGE_ID, schema.STATUS])
    orphaned = ~np.isin(objects.column(1).to_numpy(), images.column(0).to_numpy())
    tombstones = np.sort(objects.column(0).to_numpy()[orphaned]).astype(np.int64)
    recorded = None if manifest.tombstones is None or manifest.tombstones.path in bad else _readable_tombstones(root, manifest)
    if recorded is None or not np.array_equal(tombstones, recorded):
        if len(tombstones):
            relative = f"{TOMBSTONES_DIR}/tombstones-repaired-g{manifest.generation:08d}.parquet"
            parquet.write_shard(pa.table({schema.OBJECT_ID: pa.array(tombstones, pa.int64())}, schema=schema.TOMBSTONES_SCHEMA), root / relative)
            manifest.tombstones = file_entry(root, relative)
        else:
            manifest.tombstones = None
        if len(tombstones) or manifest.tombstone_count:
            report.repairs.append(f"recomputed the tombstones: {len(tombstones)} objects of removed images")
    manifest.tombstone_count = len(tombstones)
    statuses = images.column(1).to_pylist()
    manifest.counts = {"images": len(statuses), "images_error": statuses.count(schema.STATUS_ERROR), "objects": objects.num_rows - len(tombstones)}


def _readable_tombstones(root: Path, manifest: Manifest) -> np.ndarray | None:
    try:
        return read_tombstones(root, manifest)
    except (OSError, ValueError):
        return None


def _column(root: Path, entries: list[FileEntry], table_schema, column: str) -> np.ndarray:
    return parquet.read_shards([root / e.path for e in entries], table_schema, [column]).column(0).to_numpy()
