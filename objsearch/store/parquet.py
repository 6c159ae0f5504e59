"""Write and read Parquet shards, always through the schemas of ``objsearch.schema``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from objsearch import schema
from objsearch.store.layout import durable_write


# Rows per row group. Small groups let a look-up by id read only the groups that hold the ids
# (``objsearch.store.rows``): fetching 10 hits' rows then decodes about 10 x 1024 rows.
ROW_GROUP_ROWS = 1024


# Compression by column. A search reads a few row groups of the small columns (ids, box, label,
# caption, path) for every hit, where zstd's per-chunk cost dominated: decoding 10 row groups of
# the hit columns took 2.8 ms with zstd and 0.9 ms with LZ4 (200k objects; the files grew 3%).
# The columns that are large and read in bulk (embeddings, masks) keep zstd.
BULK_COLUMNS = (schema.EMBEDDING, schema.MASK)
BULK_COMPRESSION, HIT_COMPRESSION = "zstd", "lz4"


def compression_of(table_schema: pa.Schema) -> dict[str, str]:
    """Parquet column path -> codec for a shard of ``table_schema`` (a list column's values are the
    leaf ``name.list.element``, which is what the writer's per-column options name)."""
    def leaf(field: pa.Field) -> str:
        return f"{field.name}.list.element" if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type) else field.name
    return {leaf(f): BULK_COMPRESSION if f.name in BULK_COLUMNS else HIT_COMPRESSION for f in table_schema}


def write_shard(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` durably (see ``layout.durable_write``), in row groups of
    ROW_GROUP_ROWS, each column compressed as ``compression_of`` says."""
    codecs = compression_of(table.schema)
    durable_write(path, lambda tmp: pq.write_table(table, tmp, compression=codecs, row_group_size=ROW_GROUP_ROWS))


def read_shards(paths: Sequence[Path], table_schema: pa.Schema, columns: Sequence[str] | None = None) -> pa.Table:
    """Concatenate shards (all of them, or an empty table of the schema when there are none)."""
    if not paths:
        empty = table_schema.empty_table()
        return empty.select(list(columns)) if columns else empty
    return pa.concat_tables([pq.read_table(p, columns=list(columns) if columns else None, schema=table_schema) for p in paths])


def images_table(rows: Sequence[dict]) -> pa.Table:
    """Rows with the IMAGES_SCHEMA column names -> table."""
    return pa.Table.from_pylist(list(rows), schema=schema.IMAGES_SCHEMA)


def objects_table(columns: dict[str, list | np.ndarray], embeddings: np.ndarray, embed_dim: int) -> pa.Table:
    """Object columns (all but the embedding) plus (N, embed_dim) embeddings -> table.

    Embeddings are stored as float16; callers that also index them should index the float16
    values (see ``as_stored_embeddings``) so Parquet and FAISS hold the same numbers.
    """
    table_schema = schema.objects_schema(embed_dim)
    stored = as_stored_embeddings(embeddings).reshape(-1)
    embedding_array = pa.FixedSizeListArray.from_arrays(pa.array(stored, type=pa.float16()), embed_dim)
    arrays = [pa.array(columns[f.name], type=f.type) if f.name != schema.EMBEDDING else embedding_array for f in table_schema]
    return pa.Table.from_arrays(arrays, schema=table_schema)


def as_stored_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) float -> (N, D) float16, the precision embeddings are stored at."""
    return np.ascontiguousarray(embeddings, dtype=np.float16)


def embeddings_of(table: pa.Table) -> np.ndarray:
    """The embedding column of an objects table -> (N, D) float32."""
    column = table.column(schema.EMBEDDING).combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
