"""Check an index against its manifest, and rebuild what can be rebuilt from the data that is left.

Checks: every committed file exists with the size and sha256 the manifest records; every Parquet
shard opens; the FAISS file loads; FAISS ids and Parquet object ids are the same set.

Repair (under the writer lock):
- a damaged FAISS file is rebuilt from the embeddings stored in Parquet (nothing is lost);
- a damaged objects shard is dropped, and the images that have no objects left are dropped with
  it, so the next `objsearch index` run embeds those files again;
- a damaged images shard is dropped with the objects of its images; the next run re-adds them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from objsearch import schema
from objsearch.store import parquet, vectors
from objsearch.store.writer import build_vectors_from_shards
from objsearch.store.layout import FileEntry, Manifest, WriterLock, file_entry, read_manifest, sha256_file, write_manifest

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
    """Every problem found; an empty list means the index is sound."""
    manifest = read_manifest(root)
    problems = [Problem(e.path, what) for e in manifest.files() if (what := _file_problem(root, e))]
    if problems:
        return problems
    try:
        index = vectors.load(root / manifest.vectors.path) if manifest.vectors else None
    except RuntimeError as exc:
        return [Problem(manifest.vectors.path, f"FAISS cannot load it: {exc}")]
    faiss_ids = set(vectors.all_ids(index).tolist()) if index is not None else set()
    parquet_ids = set(_object_ids(root, manifest.object_shards, manifest.embedder.embed_dim))
    if faiss_ids != parquet_ids:
        problems.append(Problem(manifest.vectors.path if manifest.vectors else "vectors",
                                f"{len(faiss_ids - parquet_ids)} FAISS ids without a Parquet row, {len(parquet_ids - faiss_ids)} rows without a vector"))
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
        bad = {p.path for p in report.problems}
        _drop_damaged_shards(root, manifest, bad, report)
        _rebuild_vectors(root, manifest, report)
        manifest.generation += 1
        write_manifest(root, manifest)
    finally:
        lock.release()
    report.remaining = check_index(root)
    return report


def _drop_damaged_shards(root: Path, manifest: Manifest, bad: set[str], report: DoctorReport) -> None:
    dim = manifest.embedder.embed_dim
    lost_objects = [e for e in manifest.object_shards if e.path in bad]
    lost_images = [e for e in manifest.image_shards if e.path in bad]
    manifest.object_shards = [e for e in manifest.object_shards if e.path not in bad]
    manifest.image_shards = [e for e in manifest.image_shards if e.path not in bad]
    report.repairs += [f"dropped damaged shard {e.path}" for e in lost_objects + lost_images]
    if lost_images:
        # Objects whose image row is gone: drop them; the next index run re-adds their files.
        known = _column(root, manifest.image_shards, schema.IMAGES_SCHEMA, schema.IMAGE_ID)
        _filter_shards(root, manifest, "object_shards", schema.objects_schema(dim), keep_ids=set(known), report=report)
    if lost_objects:
        # Images that have no object left lost them with the shard: drop their rows so the next
        # index run embeds those files again (an image that truly had none is merely re-embedded).
        with_objects = set(_column(root, manifest.object_shards, schema.objects_schema(dim), schema.IMAGE_ID))
        images = parquet.read_shards([root / e.path for e in manifest.image_shards], schema.IMAGES_SCHEMA, [schema.IMAGE_ID, schema.STATUS])
        keep = {i for i, status in zip(images.column(0).to_pylist(), images.column(1).to_pylist()) if status != schema.STATUS_OK or i in with_objects}
        _filter_shards(root, manifest, "image_shards", schema.IMAGES_SCHEMA, keep_ids=keep, report=report)


def _filter_shards(root: Path, manifest: Manifest, attribute: str, table_schema, *, keep_ids: set[int], report: DoctorReport) -> None:
    """Rewrite the shards of one table keeping only rows whose image_id is in ``keep_ids``."""
    entries = []
    for number, entry in enumerate(getattr(manifest, attribute)):
        table = parquet.read_shards([root / entry.path], table_schema)
        mask = np.isin(table.column(schema.IMAGE_ID).to_numpy(), np.fromiter(keep_ids, np.int64, len(keep_ids)))
        if mask.all():
            entries.append(entry)
            continue
        report.repairs.append(f"dropped {int((~mask).sum())} rows of {entry.path} to re-index")
        if mask.any():
            relative = f"{Path(entry.path).parent}/repaired-g{manifest.generation + 1:08d}-{number:05d}.parquet"
            parquet.write_shard(table.filter(mask), root / relative)
            entries.append(file_entry(root, relative))
    setattr(manifest, attribute, entries)


def _rebuild_vectors(root: Path, manifest: Manifest, report: DoctorReport) -> None:
    """FAISS rebuilt from the (float16) embeddings in Parquet, which FAISS always mirrors."""
    index = build_vectors_from_shards(root, manifest, manifest.index_type)
    name = f"vectors-repaired-g{manifest.generation + 1:08d}.faiss"
    vectors.write(index, root / name)
    manifest.vectors = file_entry(root, name)
    statuses = _column(root, manifest.image_shards, schema.IMAGES_SCHEMA, schema.STATUS)
    manifest.counts = {"images": len(statuses), "images_error": statuses.count(schema.STATUS_ERROR), "objects": int(index.ntotal)}
    report.repairs.append(f"rebuilt {name} from Parquet ({index.ntotal} vectors)")


def _column(root: Path, entries: list[FileEntry], table_schema, column: str) -> list:
    return parquet.read_shards([root / e.path for e in entries], table_schema, [column]).column(0).to_pylist()


def _object_ids(root: Path, entries: list[FileEntry], dim: int) -> list[int]:
    return _column(root, entries, schema.objects_schema(dim), schema.OBJECT_ID)
