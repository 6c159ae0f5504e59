"""Part files: what one unit of indexing work produced, staged until the driver commits it.

A worker (a Ray actor, a batch-scheduler task, a plain loop) embeds a list of files and writes
one part: a Parquet file with one row per image file (its record, and its objects as lists), in
``<index>/staging/``. The part is written durably under a fresh name (temp file, fsync, rename),
so a part that exists is whole. The index's one writer reads parts, stages their rows through the
store's normal commit and deletes them once that commit is durable. Ids are not in a part: the
writer numbers objects as it commits them.

Row columns: the ``ImageRecord`` fields (no ``image_id``), then per object ``boxes`` (float32 x4,
absolute pixels of the original image, xyxy), ``scores``, ``labels``, ``captions``, ``masks`` (COCO
RLE as JSON) and ``embeddings`` (float32 x D, L2-normalised).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from objsearch.embedders.base import Detections
from objsearch.store.commit import ImageRecord, mask_json
from objsearch.store.layout import STAGING_DIR
from objsearch.store.manifest import EmbedderInfo
from objsearch.store.parquet import write_shard

PART_FORMAT = "1"
_META_KEY = b"objsearch.part"
RECORD_FIELDS = ("path", "file_size", "mtime_ns", "content_hash", "width", "height", "status", "error")  # ImageRecord's, less the id


def staging_dir(index_root: Path) -> Path:
    return Path(index_root) / STAGING_DIR


def part_schema(embed_dim: int) -> pa.Schema:
    return pa.schema([
        ("path", pa.string()), ("file_size", pa.int64()), ("mtime_ns", pa.int64()), ("content_hash", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()), ("status", pa.string()), ("error", pa.string()),
        ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
        ("scores", pa.list_(pa.float32())),
        ("labels", pa.list_(pa.string())),
        ("captions", pa.list_(pa.string())),
        ("masks", pa.list_(pa.string())),
        ("embeddings", pa.list_(pa.list_(pa.float32(), embed_dim))),
    ])


def write_part(folder: Path, embedder: EmbedderInfo, rows: Sequence[tuple[ImageRecord, Detections | None]]) -> Path:
    """Write ``rows`` (an image record and its detections, None for a file that did not decode) as
    one new part in ``folder``; returns its path. The part names the embedder that made it."""
    columns: dict[str, list] = {name: [] for name in part_schema(1).names}
    for record, detections in rows:
        for name in RECORD_FIELDS:
            columns[name].append(getattr(record, name))
        found = detections if detections is not None else Detections.empty(embedder.embed_dim)
        columns["boxes"].append(found.boxes_xyxy.tolist())
        columns["scores"].append(found.scores.tolist())
        columns["labels"].append(list(found.labels))
        columns["captions"].append(list(found.captions))
        columns["masks"].append([None if m is None else mask_json(m) for m in found.masks])
        columns["embeddings"].append(found.embeddings.tolist())
    identity = {"format": PART_FORMAT, "embedder": embedder.__dict__}
    table = pa.table(columns, schema=part_schema(embedder.embed_dim)).replace_schema_metadata({_META_KEY: json.dumps(identity)})
    path = Path(folder) / f"part-{uuid.uuid4().hex}.parquet"
    write_shard(table, path)
    return path


def part_embedder(path: Path) -> EmbedderInfo | None:
    """The embedder a part was made by (None when the file is no readable part)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        identity = json.loads(metadata[_META_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    if identity.get("format") != PART_FORMAT:
        return None
    return EmbedderInfo(**identity["embedder"])


def read_part(path: Path) -> Iterator[tuple[ImageRecord, Detections | None]]:
    """The rows of a part, as ``write_part`` was given them (None for files that did not decode)."""
    table = pq.read_table(path)
    dim = table.schema.field("embeddings").type.value_type.list_size
    for row in table.to_pylist():
        record = ImageRecord(**{name: row[name] for name in RECORD_FIELDS})
        if record.error:
            yield record, None
            continue
        detections = Detections(
            np.array(row["boxes"], np.float32).reshape(-1, 4),
            np.array(row["scores"], np.float32),
            row["labels"],
            np.array(row["embeddings"], np.float32).reshape(-1, dim),
            row["captions"],
            [None if m is None else json.loads(m) for m in row["masks"]],
        )
        yield record, detections


def list_parts(folder: Path) -> list[Path]:
    """Parts in ``folder``, oldest first (temp files of unfinished writes are not parts)."""
    if not Path(folder).is_dir():
        return []
    parts = [p for p in Path(folder).glob("part-*.parquet") if p.is_file()]
    return sorted(parts, key=lambda p: (p.stat().st_mtime_ns, p.name))

