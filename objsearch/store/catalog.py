"""DuckDB over the committed Parquet shards: filters, SQL, and id -> row look-ups.

Views: ``images``, ``objects`` (as in ``objsearch.schema``) and ``objects_images`` (objects joined to
their image, no embedding), which is what ``--where`` predicates see. The connection can read the
index's own shard files and nothing else: external access is disabled and the setting locked, so a
predicate or a SQL statement cannot read, write, attach or install anything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import numpy as np

from objsearch import schema
from objsearch.errors import BadQuery, IndexCorrupt
from objsearch.store.layout import Manifest

logger = logging.getLogger(__name__)

HIT_COLUMNS = (schema.OBJECT_ID, schema.IMAGE_ID, schema.PATH, *schema.BOX_COLUMNS, schema.SCORE, schema.LABEL, schema.CAPTION)


def _parquet_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class Catalog:
    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.con = duckdb.connect(":memory:")
        image_files = [root / e.path for e in manifest.image_shards]
        object_files = [root / e.path for e in manifest.object_shards]
        self._create_view("images", image_files, _empty_select(schema.IMAGES_SCHEMA))
        self._create_view("objects", object_files, _empty_select(schema.objects_schema(manifest.embedder.embed_dim)))
        object_columns = ", ".join(f"o.{c}" for c in schema.objects_schema(1).names if c != schema.EMBEDDING)
        self.con.execute(f"CREATE VIEW objects_meta AS SELECT {object_columns} FROM objects o")
        image_columns = ", ".join(f"i.{c}" for c in schema.IMAGES_SCHEMA.names if c != schema.IMAGE_ID)
        self.con.execute(f"CREATE VIEW objects_images AS SELECT {object_columns}, {image_columns} FROM objects o JOIN images i USING (image_id)")
        allowed = [str(p) for p in image_files + object_files]
        if allowed:
            self.con.execute("SET allowed_paths = $paths", {"paths": allowed})
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _create_view(self, name: str, files: list[Path], empty_select: str) -> None:
        if files:
            self.con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_parquet_list(files)})")
        else:
            self.con.execute(f"CREATE VIEW {name} AS {empty_select}")

    def filter_object_ids(self, where: str) -> np.ndarray:
        """Object ids whose row in ``objects_images`` satisfies the SQL predicate ``where``.

        A predicate on object columns alone runs without the join to images (every object has
        its image, so the result is the same), which is several times faster on large indexes.
        """
        sql = f"SELECT object_id FROM objects_images WHERE ({where})"
        statements = self._parse(sql, f"bad --where predicate {where!r}")
        if len(statements) != 1:
            raise BadQuery(f"--where must be a single SQL predicate, got {where!r}")
        try:
            return self.con.execute(f"SELECT object_id FROM objects_meta WHERE ({where})").fetchnumpy()["object_id"].astype(np.int64)
        except duckdb.BinderException:
            pass  # names an image column: use the join
        except duckdb.Error:
            pass  # any other error is reported from the full query below
        try:
            return self.con.execute(sql).fetchnumpy()["object_id"].astype(np.int64)
        except duckdb.Error as exc:
            raise BadQuery(f"bad --where predicate {where!r}: {_first_line(exc)}. Columns: {', '.join(schema.FILTERABLE_COLUMNS)}") from None

    def rows_for_objects(self, object_ids: np.ndarray) -> dict[int, dict]:
        """object_id -> the HIT_COLUMNS of that object (ids not in the catalog are left out)."""
        if len(object_ids) == 0:
            return {}
        columns = ", ".join(HIT_COLUMNS)
        try:
            result = self.con.execute(
                f"SELECT {columns} FROM objects_images WHERE object_id IN (SELECT unnest($ids))",
                {"ids": [int(i) for i in object_ids]},
            )
        except duckdb.Error as exc:  # a shard removed under a long-lived reader
            raise IndexCorrupt(f"cannot read the index's shards ({_first_line(exc)}); reopen the index") from None
        names = [d[0] for d in result.description]
        return {row[0]: dict(zip(names, row)) for row in result.fetchall()}

    def sql(self, statement: str) -> tuple[list[str], list[tuple]]:
        """Run one read-only SELECT-like statement -> (column names, rows)."""
        statements = self._parse(statement)
        if len(statements) != 1:
            raise BadQuery("give exactly one SQL statement")
        if statements[0].type not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise BadQuery(f"only SELECT statements are allowed (got {statements[0].type.name})")
        try:
            result = self.con.execute(statement)
            return [d[0] for d in result.description], result.fetchall()
        except duckdb.Error as exc:
            raise BadQuery(f"SQL error: {_first_line(exc)}") from None

    def _parse(self, sql: str, context: str = "SQL syntax error"):
        try:
            return self.con.extract_statements(sql)
        except duckdb.Error as exc:
            raise BadQuery(f"{context}: {_first_line(exc)}") from None

    def close(self) -> None:
        self.con.close()


def _empty_select(table_schema) -> str:
    """SELECT of typed NULL columns with no rows: the view of a table that has no shard yet."""
    type_names = {"int64": "BIGINT", "int32": "INTEGER", "string": "VARCHAR", "float": "FLOAT"}
    parts = []
    for f in table_schema:
        sql_type = type_names.get(str(f.type), "FLOAT[]")
        parts.append(f"CAST(NULL AS {sql_type}) AS {f.name}")
    return f"SELECT {', '.join(parts)} WHERE false"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
