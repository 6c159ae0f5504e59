"""DuckDB over the committed Parquet shards: filters, SQL, and id -> row look-ups.

Views: ``images``, ``objects`` (as in ``objsearch.schema``) and ``objects_images`` (objects joined to
their image, no embedding), which is what ``--where`` predicates see. The connection can read the
index's own shard files and nothing else: external access is disabled and the setting locked, so a
predicate or a SQL statement cannot read, write, attach or install anything.

A ``--where`` predicate is parsed as one SQL expression (``duckdb.SQLExpression``) and applied as a
filter through the relational API, so it can never change the statement around it (no closing
parenthesis, UNION, ORDER BY or second statement gets through), and it may not hold a subquery.
Every statement runs under a time limit (``time_limit_s``): past it DuckDB is interrupted and the
caller gets ``QueryTimeout``.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

import duckdb
import numpy as np

from objsearch import schema
from objsearch.errors import BadQuery, IndexCorrupt, QueryTimeout
from objsearch.store.layout import Manifest

logger = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT_S = 30.0  # a filter or SQL statement that runs longer is interrupted
T = TypeVar("T")

HIT_COLUMNS = (schema.OBJECT_ID, schema.IMAGE_ID, schema.PATH, *schema.BOX_COLUMNS, schema.SCORE, schema.LABEL, schema.CAPTION)


def _parquet_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class Catalog:
    """The DuckDB views of one manifest. ``time_limit_s``: the longest any one statement may run (None = no limit)."""

    def __init__(self, root: Path, manifest: Manifest, time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> None:
        self.time_limit_s = time_limit_s
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
        """Object ids (int64) whose row in ``objects_images`` satisfies the SQL predicate ``where``.

        A predicate on object columns alone runs without the join to images (every object has
        its image, so the result is the same), which is several times faster on large indexes.
        """
        predicate = self.parse_predicate(where)
        try:
            return self._timed(lambda: self.con.view("objects_meta").filter(predicate).project("object_id").fetchnumpy())["object_id"].astype(np.int64)
        except duckdb.BinderException:
            pass  # names an image column: use the join
        except duckdb.InterruptException:
            raise self._timeout() from None
        except duckdb.Error:
            pass  # any other error is reported from the full query below
        try:
            return self._timed(lambda: self.con.view("objects_images").filter(predicate).project("object_id").fetchnumpy())["object_id"].astype(np.int64)
        except duckdb.InterruptException:
            raise self._timeout() from None
        except duckdb.Error as exc:
            raise BadQuery(f"bad --where predicate {where!r}: {_first_line(exc)}. Columns: {', '.join(schema.FILTERABLE_COLUMNS)}") from None

    def parse_predicate(self, where: str) -> duckdb.Expression:
        """``where`` as one boolean SQL expression over the columns, or BadQuery saying why not."""
        try:
            predicate = duckdb.SQLExpression(where)
        except duckdb.Error as exc:
            raise BadQuery(f"bad --where predicate {where!r}: it must be one SQL expression over the columns ({_first_line(exc)})") from None
        tree = json.loads(self.con.execute("SELECT json_serialize_sql($sql)", {"sql": f"SELECT 1 WHERE ({predicate})"}).fetchall()[0][0])
        if tree.get("error") or _holds_subquery(tree):
            raise BadQuery(f"bad --where predicate {where!r}: a subquery is not allowed in a predicate; use `objsearch sql` for that")
        return predicate

    def _timed(self, run: Callable[[], T]) -> T:
        """``run()`` with DuckDB interrupted after ``time_limit_s`` (it then raises InterruptException)."""
        if self.time_limit_s is None:
            return run()
        timer = threading.Timer(self.time_limit_s, self.con.interrupt)
        timer.start()
        try:
            return run()
        finally:
            timer.cancel()

    def _timeout(self) -> QueryTimeout:
        return QueryTimeout(f"the query ran longer than the {self.time_limit_s:g} s limit and was stopped")

    def rows_for_objects(self, object_ids: np.ndarray) -> dict[int, dict]:
        """object_id -> the HIT_COLUMNS of that object (ids not in the catalog are left out)."""
        if len(object_ids) == 0:
            return {}
        columns = ", ".join(HIT_COLUMNS)
        sql = f"SELECT {columns} FROM objects_images WHERE object_id IN (SELECT unnest($ids))"
        try:
            names, rows = self._timed(lambda: _fetch(self.con.execute(sql, {"ids": [int(i) for i in object_ids]})))
        except duckdb.InterruptException:
            raise self._timeout() from None
        except duckdb.Error as exc:  # a shard removed under a long-lived reader
            raise IndexCorrupt(f"cannot read the index's shards ({_first_line(exc)}); reopen the index") from None
        return {row[0]: dict(zip(names, row)) for row in rows}

    def sql(self, statement: str) -> tuple[list[str], list[tuple]]:
        """Run one read-only SELECT-like statement -> (column names, rows)."""
        statements = self._parse(statement)
        if len(statements) != 1:
            raise BadQuery("give exactly one SQL statement")
        if statements[0].type not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise BadQuery(f"only SELECT statements are allowed (got {statements[0].type.name})")
        try:
            return self._timed(lambda: _fetch(self.con.execute(statement)))
        except duckdb.InterruptException:
            raise self._timeout() from None
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


def _fetch(result: duckdb.DuckDBPyConnection) -> tuple[list[str], list[tuple]]:
    """(column names, all rows) of an executed statement."""
    return [d[0] for d in result.description], result.fetchall()


def _holds_subquery(node: Any) -> bool:
    """Whether a ``json_serialize_sql`` tree holds a subquery expression anywhere."""
    if isinstance(node, dict):
        return node.get("class") == "SUBQUERY" or any(_holds_subquery(v) for v in node.values())
    if isinstance(node, list):
        return any(_holds_subquery(v) for v in node)
    return False


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]
