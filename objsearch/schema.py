"""THE Parquet schemas of an index. Every reader and writer goes through this module.

Box convention: absolute pixel coordinates ``x1 y1 x2 y2`` of the original image after EXIF
orientation, ``x1 <= x2``, ``y1 <= y2``; (0, 0) is the top-left corner.
Embeddings are L2-normalised and stored as fixed-size float16 lists of the embedder's dimension.
"""

from __future__ import annotations

import pyarrow as pa

# Bump when a column is added, removed or changes meaning, or the index layout changes; the store
# refuses other versions. 2: vector segments (one FAISS file per objects shard) and tombstones.
# 3: each segment also has a full-text (SQLite FTS5) index of its labels and captions; an index of
# format 2 is read as it is (no keyword search) and upgraded by its next writer.
SCHEMA_VERSION = 3

STATUS_OK = "ok"
STATUS_ERROR = "error"

# images table: one row per image file the indexer has seen.
IMAGE_ID = "image_id"
PATH = "path"
FILE_SIZE = "file_size"  # bytes
MTIME_NS = "mtime_ns"  # st_mtime_ns of the file when indexed
CONTENT_HASH = "content_hash"  # blake2b-128 hex of the file's bytes
WIDTH = "width"  # pixels, after EXIF orientation; null for unreadable files
HEIGHT = "height"
STATUS = "status"  # STATUS_OK | STATUS_ERROR
ERROR = "error"  # why the file could not be indexed; null when status is ok

# objects table: one row per detected object.
OBJECT_ID = "object_id"  # == the FAISS id
X1, Y1, X2, Y2 = "x1", "y1", "x2", "y2"
SCORE = "score"  # detector confidence in [0, 1]
LABEL = "label"
CAPTION = "caption"
MASK = "mask"  # COCO RLE as JSON text ({"size": [h, w], "counts": "..."}), optional
EMBEDDING = "embedding"

BOX_COLUMNS = (X1, Y1, X2, Y2)

IMAGES_SCHEMA = pa.schema(
    [
        pa.field(IMAGE_ID, pa.int64(), nullable=False),
        pa.field(PATH, pa.string(), nullable=False),
        pa.field(FILE_SIZE, pa.int64(), nullable=False),
        pa.field(MTIME_NS, pa.int64(), nullable=False),
        pa.field(CONTENT_HASH, pa.string(), nullable=False),
        pa.field(WIDTH, pa.int32()),
        pa.field(HEIGHT, pa.int32()),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
    ]
)


def objects_schema(embed_dim: int) -> pa.Schema:
    """Schema of the objects table for embeddings of ``embed_dim`` dimensions."""
    return pa.schema(
        [
            pa.field(OBJECT_ID, pa.int64(), nullable=False),
            pa.field(IMAGE_ID, pa.int64(), nullable=False),
            pa.field(X1, pa.float32(), nullable=False),
            pa.field(Y1, pa.float32(), nullable=False),
            pa.field(X2, pa.float32(), nullable=False),
            pa.field(Y2, pa.float32(), nullable=False),
            pa.field(SCORE, pa.float32(), nullable=False),
            pa.field(LABEL, pa.string(), nullable=False),
            pa.field(CAPTION, pa.string()),
            pa.field(MASK, pa.string()),
            pa.field(EMBEDDING, pa.list_(pa.float16(), embed_dim), nullable=False),
        ]
    )


# tombstones: the ids of deleted objects whose rows a segment still holds (until compaction).
TOMBSTONES_SCHEMA = pa.schema([pa.field(OBJECT_ID, pa.int64(), nullable=False)])


# Columns a --where predicate may use: everything but the embedding, objects joined to images.
FILTERABLE_COLUMNS = tuple(
    [f.name for f in objects_schema(1) if f.name != EMBEDDING]
    + [f.name for f in IMAGES_SCHEMA if f.name != IMAGE_ID]
)
