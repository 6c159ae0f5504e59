"""DuckDB over the committed Parquet shards: filters, SQL, and id -> row look-ups.

Views: ``images``, ``objects`` (as in ``objsearch.schema``) and ``objects_images`` (objects joined to
their image, no embedding), which is what ``--where`` predicates see. The connection can read the
index's own shard files and nothing else: external access is disabled and the setting locked, so a
predicate or a SQL statement cannot read, write, attach or install anything.

A ``--where`` predicate is parsed as one SQL expression (``duckdb.SQLExpression``) and applied as a
filter through the relational API, so it can never change the statement around it (no closing
parenthesis, UNION, ORDER BY or second statement gets through), and it may not hold a subquery.
Every statement runs under a time limit (``time_limit_s``, or a caller's deadline shared by several
statements): past it DuckDB is interrupted and the caller gets ``QueryTimeout``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from objsearch import schema
from objsearch.errors import BadQuery, IndexCorrupt, QueryTimeout, first_line
from objsearch.store.manifest import Manifest
from objsearch.store.rows import RowFinder

logger = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT_S = 30.0  # a filter or SQL statement that runs longer is interrupted
MAX_PREDICATE_CHARS = 10_000  # a longer --where is refused before it is parsed
T = TypeVar("T")

HIT_COLUMNS = (schema.OBJECT_ID, schema.IMAGE_ID, schema.PATH, *schema.BOX_COLUMNS, schema.SCORE, schema.LABEL, schema.CAPTION)
IMAGE_HIT_COLUMNS = (schema.PATH, schema.WIDTH, schema.HEIGHT)  # what a hit takes from its image's row


def _parquet_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class Catalog:
    """The DuckDB views of one manifest. ``time_limit_s``: the longest any one statement may run (None = no limit)."""

    def __init__(self, root: Path, manifest: Manifest, time_limit_s: float | None = DEFAULT_TIME_LIMIT_S,
                 previous: "Catalog | None" = None) -> None:
        """``previous``: the catalog of an older generation of the same index, whose opened shards
        this one takes over where it still names them."""
        if time_limit_s is not None and not time_limit_s > 0:
            raise BadQuery(f"the time limit must be a positive number of seconds, got {time_limit_s}")
        self.time_limit_s = time_limit_s if time_limit_s is not None and math.isfinite(time_limit_s) else None
        self.con = duckdb.connect(":memory:")
        self.root, self.manifest = root, manifest
        self._objects_schema = schema.objects_schema(manifest.embedder.embed_dim)
        image_files = [root / e.path for e in manifest.image_shards]
        object_files = [root / e.path for e in manifest.object_shards]
        if previous is not None and previous.root == root:
            self._object_rows, self._image_rows = previous._object_rows.kept_for(object_files), previous._image_rows.kept_for(image_files)
        else:
            self._object_rows, self._image_rows = RowFinder(schema.OBJECT_ID), RowFinder(schema.IMAGE_ID)
        tombstone_files = [root / manifest.tombstones.path] if manifest.tombstones else []
        self._create_view("images", image_files, _empty_select(schema.IMAGES_SCHEMA))
        live = f" WHERE object_id NOT IN (SELECT object_id FROM read_parquet({_parquet_list(tombstone_files)}))" if tombstone_files else ""
        self._create_view("objects", object_files, _empty_select(schema.objects_schema(manifest.embedder.embed_dim)), live)
        object_columns = ", ".join(f"o.{c}" for c in schema.objects_schema(1).names if c != schema.EMBEDDING)
        self.con.execute(f"CREATE VIEW objects_meta AS SELECT {object_columns} FROM objects o")
        image_columns = ", ".join(f"i.{c}" for c in schema.IMAGES_SCHEMA.names if c != schema.IMAGE_ID)
        self.con.execute(f"CREATE VIEW objects_images AS SELECT {object_columns}, {image_columns} FROM objects o JOIN images i USING (image_id)")
        allowed = [str(p) for p in image_files + object_files + tombstone_files]
        if allowed:
            self.con.execute("SET allowed_paths = $paths", {"paths": allowed})
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _create_view(self, name: str, files: list[Path], empty_select: str, where: str = "") -> None:
        if files:
            self.con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_parquet_list(files)}){where}")
        else:
            self.con.execute(f"CREATE VIEW {name} AS {empty_select}")

    def filter_object_ids(self, where: str, deadline: float | None = None) -> np.ndarray:
        """Object ids (int64) whose row in ``objects_images`` satisfies the SQL predicate ``where``.

        A predicate on object columns alone runs without the join to images (every object has
        its image, so the result is the same), which is several times faster on large indexes.
        ``deadline``: see ``deadline()``; by default this call gets the whole time limit.
        """
        predicate = self.parse_predicate(where)
        deadline = self.deadline() if deadline is None else deadline
        try:
            return self._object_ids(predicate, "objects_meta", deadline)
        except duckdb.BinderException:
            pass  # names an image column: use the join
        except duckdb.Error:
            pass  # any other error is reported from the full query below
        try:
            return self._object_ids(predicate, "objects_images", deadline)
        except (duckdb.IOException, duckdb.PermissionException) as exc:  # a predicate names no file: a shard is gone
            raise _shards_gone(exc) from None
        except duckdb.Error as exc:
            raise BadQuery(f"bad --where predicate {where!r}: {first_line(exc)}. Columns: {', '.join(schema.FILTERABLE_COLUMNS)}") from None

    def _object_ids(self, predicate: duckdb.Expression, view: str, deadline: float | None) -> np.ndarray:
        columns = self._timed(lambda: self.con.view(view).filter(predicate).project("object_id").fetchnumpy(), deadline)
        return columns["object_id"].astype(np.int64)

    def parse_predicate(self, where: str) -> duckdb.Expression:
        """``where`` as one boolean SQL expression over the columns, or BadQuery saying why not."""
        if len(where) > MAX_PREDICATE_CHARS:
            raise BadQuery(f"the --where predicate is {len(where)} characters long; the limit is {MAX_PREDICATE_CHARS}")
        try:
            predicate = duckdb.SQLExpression(where)
        except duckdb.Error as exc:
            raise BadQuery(f"bad --where predicate {where!r}: it must be one SQL expression over the columns ({first_line(exc)})") from None
        serialized = self.con.execute("SELECT json_serialize_sql($sql)", {"sql": f"SELECT 1 WHERE ({predicate})"}).fetchall()[0][0]
        try:
            tree = json.loads(serialized)
        except RecursionError:
            raise BadQuery(f"bad --where predicate {where[:80]!r}...: it is nested too deeply") from None
        if tree.get("error"):
            raise BadQuery(f"bad --where predicate {where!r}: {tree.get('error_message', 'it cannot be parsed')}")
        if _holds_subquery(tree):
            raise BadQuery(f"bad --where predicate {where!r}: a subquery is not allowed in a predicate; use `objsearch sql` for that")
        return predicate

    def deadline(self) -> float | None:
        """The ``time.monotonic()`` by which work started now must end; None without a time limit."""
        return None if self.time_limit_s is None else time.monotonic() + self.time_limit_s

    def check_deadline(self, deadline: float | None) -> None:
        """QueryTimeout when ``deadline`` (``time.monotonic()``) has passed."""
        if deadline is not None and time.monotonic() >= deadline:
            raise self._timeout_error()

    def _timeout_error(self) -> QueryTimeout:
        return QueryTimeout(f"the query ran longer than the {self.time_limit_s:g} s limit and was stopped")

    def _timed(self, run: Callable[[], T], deadline: float | None = None) -> T:
        """``run()`` (DuckDB work on ``self.con``), interrupted at ``deadline`` (default: the whole time
        limit from now) -> QueryTimeout. The interrupt is disarmed before this returns, so it can
        never reach a later statement."""
        deadline = self.deadline() if deadline is None else deadline
        if deadline is None:
            return run()
        self.check_deadline(deadline)
        interrupter = _Interrupter(self.con)
        timer = threading.Timer(deadline - time.monotonic(), interrupter.fire)
        timer.start()
        try:
            return run()
        except duckdb.InterruptException:
            raise self._timeout_error() from None
        finally:
            interrupter.disarm()
            timer.cancel()
            timer.join()

    def rows_for_objects(self, object_ids: np.ndarray, deadline: float | None = None) -> dict[int, dict]:
        """object_id -> the HIT_COLUMNS of that object and the IMAGE_HIT_COLUMNS of its image (ids not
        in the index are left out). Only the row groups that hold the ids are read (``rows``), of
        the segments whose id range holds them.
        ``deadline``: see ``deadline()``; by default this call gets the whole time limit."""
        if len(object_ids) == 0:
            return {}
        deadline = self.deadline() if deadline is None else deadline
        self.check_deadline(deadline)
        wanted = np.unique(np.asarray(object_ids, dtype=np.int64))
        files = [self.root / s.objects.path for s in self.manifest.segments
                 if np.any((wanted >= s.min_object_id) & (wanted <= s.max_object_id))]
        object_columns = [c for c in HIT_COLUMNS if c != schema.PATH]
        try:
            objects = self._object_rows.rows(files, wanted, object_columns, self._objects_schema).to_pydict()
            image_files = [self.root / e.path for e in self.manifest.image_shards]
            images = self._image_rows.rows(image_files, np.array(objects[schema.IMAGE_ID], np.int64), IMAGE_HIT_COLUMNS, schema.IMAGES_SCHEMA)
        except (OSError, pa.ArrowException) as exc:  # a shard removed under a reader that holds no lease
            raise _shards_gone(exc) from None
        self.check_deadline(deadline)
        image_rows = images.to_pydict()
        of_image = {image_id: dict(zip(IMAGE_HIT_COLUMNS, values)) for image_id, *values
                    in zip(image_rows[schema.IMAGE_ID], *(image_rows[c] for c in IMAGE_HIT_COLUMNS))}
        rows = {}
        for values in zip(*(objects[c] for c in object_columns)):
            row = dict(zip(object_columns, values))
            if row[schema.IMAGE_ID] in of_image:
                rows[row[schema.OBJECT_ID]] = {**row, **of_image[row[schema.IMAGE_ID]]}
        return rows

    def image_row(self, image_id: int) -> dict | None:
        """The images row of ``image_id`` (every column), or None."""
        names, rows = self._query("SELECT * FROM images WHERE image_id = $id", {"id": int(image_id)})
        return dict(zip(names, rows[0])) if rows else None

    def objects_of_image(self, image_id: int) -> list[dict]:
        """The live objects of one image (every column but the embedding), by object id."""
        names, rows = self._query("SELECT * FROM objects_meta WHERE image_id = $id ORDER BY object_id", {"id": int(image_id)})
        return [dict(zip(names, row)) for row in rows]

    def masks_of(self, object_ids) -> dict[int, dict]:
        """object_id -> its mask (COCO RLE, ``size`` [H, W] of the image the model saw) for those of
        ``object_ids`` that have one."""
        ids = [int(i) for i in object_ids]
        if not ids:
            return {}
        rows = self._query("SELECT object_id, mask FROM objects_meta WHERE object_id IN (SELECT unnest($ids)) AND mask IS NOT NULL",
                           {"ids": ids})[1]
        return {object_id: json.loads(mask) for object_id, mask in rows}

    def label_counts(self) -> list[tuple[str, int]]:
        """(label, live objects) for every label, most frequent first."""
        return self._query("SELECT label, count(*) AS n FROM objects_meta GROUP BY label ORDER BY n DESC, label")[1]

    def _query(self, statement: str, parameters: dict | None = None) -> tuple[list[str], list[tuple]]:
        """One of the catalog's own statements (with ``parameters``), within the time limit."""
        try:
            return self._timed(lambda: _fetch(self.con.execute(statement, parameters or {})))
        except (duckdb.IOException, duckdb.PermissionException) as exc:  # a shard is gone
            raise _shards_gone(exc) from None

    def sql(self, statement: str) -> tuple[list[str], list[tuple]]:
        """Run one read-only SELECT-like statement -> (column names, rows)."""
        statements = self._parse(statement)
        if len(statements) != 1:
            raise BadQuery("give exactly one SQL statement")
        if statements[0].type not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise BadQuery(f"only SELECT statements are allowed (got {statements[0].type.name})")
        try:
            return self._timed(lambda: _fetch(self.con.execute(statement)))
        except duckdb.Error as exc:
            raise BadQuery(f"SQL error: {first_line(exc)}") from None

    def _parse(self, sql: str, context: str = "SQL syntax error"):
        try:
            return self.con.extract_statements(sql)
        except duckdb.Error as exc:
            raise BadQuery(f"{context}: {first_line(exc)}") from None

    def close(self) -> None:
        self.con.close()


def _shards_gone(exc: Exception) -> IndexCorrupt:
    """The error for a shard removed under a reader that holds no lease."""
    return IndexCorrupt(f"cannot read the index's shards ({first_line(exc)}); reopen the index")


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


class _Interrupter:
    """Interrupts a connection's running statement when fired, unless disarmed first."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con, self.lock, self.armed = con, threading.Lock(), True

    def fire(self) -> None:
        with self.lock:
            if self.armed:
                self.con.interrupt()

    def disarm(self) -> None:
        with self.lock:
            self.armed = False


def _holds_subquery(tree: Any) -> bool:
    """Whether a ``json_serialize_sql`` tree holds a subquery expression anywhere (walked without recursion)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class") == "SUBQUERY":
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False

