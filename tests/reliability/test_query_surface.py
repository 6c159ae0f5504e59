"""The query surface cannot read or write other files, and any query string gets results or a
clear error."""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager

import numpy as np
import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions, index_folders
from objsearch.cli import app
from objsearch.errors import QueryTimeout
from objsearch.search import open_index
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import build as build_blobs
from tests.conftest import BLOBS, run_cli

runner = CliRunner()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("surface")
    make_dataset(root / "imgs", 4)
    index_folders([root / "imgs"], root / "idx", embedder=build_blobs(), model=BLOBS, options=IndexOptions(progress=False, workers=1))
    return root / "idx"


@contextmanager
def time_limit(seconds: int):
    """Fail the test (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


HOSTILE_SQL = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('/etc/*.parquet')",
    "COPY objects TO '/tmp/objsearch-stolen.csv'",
    "COPY (SELECT 1) TO '/tmp/objsearch-stolen.csv'",
    "ATTACH '/tmp/objsearch-evil.duckdb' AS evil",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_external_access",
    "CREATE TABLE x AS SELECT 1",
    "DROP VIEW objects",
    "SELECT 1; SELECT 2",
    "EXPORT DATABASE '/tmp/objsearch-export'",
]


@pytest.mark.parametrize("statement", HOSTILE_SQL)
def test_hostile_sql_fails_cleanly(index_dir, statement, tmp_path):
    result = runner.invoke(app, ["sql", statement, "--index", str(index_dir)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert "root:" not in result.output  # nothing of /etc/passwd


@pytest.mark.parametrize(
    "predicate",
    [
        "path IN (SELECT column0 FROM read_csv('/etc/passwd'))",
        "1=1) UNION SELECT 1 FROM read_text('/etc/passwd') WHERE (1=1",
        "1=1; COPY objects TO '/tmp/objsearch-stolen.csv'",
        "1=1) OR (SELECT count(*) FROM read_text('/etc/passwd')) > 0 OR (1=1",
        "nonsense ===",
    ],
)
def test_hostile_where_predicates_fail_cleanly(index_dir, predicate):
    result = runner.invoke(app, ["query", "red", "--where", predicate, "--index", str(index_dir)])
    assert result.exit_code == 1, result.output
    assert "bad --where predicate" in result.output and "Traceback" not in result.output


# Predicates that try to change the shape of the statement they are put into: each must be refused
# as a predicate (before it can run), and quickly. The first made `query -k 100` loop forever.
STATEMENT_SHAPE_ATTACKS = [
    "1=1) UNION SELECT 999999 WHERE (1=1",
    "1=1) UNION ALL SELECT object_id FROM objects WHERE (1=1",
    "1=1) ORDER BY (1",
    "1=1) LIMIT (1",
    "1=1) GROUP BY object_id HAVING (count(*) > 0",
    "true) OR (true",
    "1=1) AND object_id IN (SELECT object_id FROM objects",
    "label IN (SELECT label FROM objects)",
    "(SELECT count(*) FROM objects a, objects b, objects c, objects d, objects e) > 0",
    "1=1 ORDER BY score",
    "1=1, 2=2",
    "1=1 -- ) UNION SELECT 999999",
]


@pytest.mark.parametrize("predicate", STATEMENT_SHAPE_ATTACKS)
def test_a_predicate_cannot_change_the_statement_shape(index_dir, predicate):
    result = run_cli("query", "red", "-k", "100", "--where", predicate, "--index", str(index_dir), timeout=60)
    if predicate.startswith("1=1 -- "):  # a comment is only a comment: the predicate is 1=1
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error: bad --where predicate") and "Traceback" not in result.stderr


def test_a_filter_naming_ids_that_faiss_lacks_ends_with_every_object(index_dir, monkeypatch):
    """The widening fetch is bounded by the index size, whatever ids the filter lets through."""
    with open_index(index_dir, model=build_blobs()) as idx:
        real_ids = idx.catalog.filter_object_ids("true")
        monkeypatch.setattr(idx.catalog, "filter_object_ids", lambda where, deadline=None: np.concatenate([real_ids, [999_999, 1_000_000]]))
        with time_limit(20):
            hits = idx.search_text("red", k=100, where="true")
            per_image = idx.search_text("red", k=100, where="true", per_image=True)
    assert sorted(h.object_id for h in hits) == sorted(real_ids.tolist())
    assert len(per_image) == 4  # one per image of the index


def test_a_statement_past_its_time_limit_is_stopped(index_dir):
    started = time.perf_counter()
    result = runner.invoke(app, ["sql", "SELECT count(*) FROM range(100000000000)", "--index", str(index_dir), "--time-limit", "0.5"])
    assert result.exit_code == 1 and "ran longer than the 0.5 s limit" in result.output, result.output
    assert time.perf_counter() - started < 10


def test_a_search_past_its_time_limit_is_stopped_and_the_next_one_runs(index_dir):
    with open_index(index_dir, model=build_blobs(), time_limit_s=1e-9) as idx:
        with pytest.raises(QueryTimeout, match="ran longer than"):
            idx.search_text("red", k=5, where="score > 0.5")  # the filter starts past the deadline
        idx.catalog.time_limit_s = 0.5
        with pytest.raises(QueryTimeout):
            idx.sql("SELECT count(*) FROM range(100000000000)")
        idx.catalog.time_limit_s = 30
        assert idx.sql("SELECT count(*) FROM objects")[1][0][0] > 0  # no interrupt is left over
        assert len(idx.search_text("red", k=3, where="score > 0.5")) == 3


@pytest.mark.parametrize("predicate", ["NOT " * 900 + "true", "abs(" * 900 + "1" + ")" * 900 + " > 0", " + ".join(["1"] * 3000) + " > 0"])
def test_a_deeply_nested_predicate_is_a_clear_error(index_dir, predicate):
    result = runner.invoke(app, ["query", "red", "--where", predicate, "--index", str(index_dir)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith("error: ") and "predicate" in result.output


def test_no_file_was_written_by_any_of_it():
    import glob

    assert not glob.glob("/tmp/objsearch-stolen*") and not glob.glob("/tmp/objsearch-evil*") and not glob.glob("/tmp/objsearch-export*")


@pytest.mark.parametrize(
    "text, ok",
    [
        ("red", True),
        ("  red\x00\x07\x1b[31m box\t\n", True),  # control characters become spaces
        ("rouge 赤い 🟥 red", True),
        ("'; DROP TABLE objects; --", True),  # text is never SQL
        ("red " * 2000, True),  # 8 kB
        ("", False),
        ("\x00\x01\n\t ", False),
        ("x" * 100_000, False),  # 100 kB
    ],
)
def test_any_query_string_gets_results_or_a_clear_error(index_dir, text, ok):
    result = runner.invoke(app, ["query", text, "--index", str(index_dir), "--json"])
    if ok:
        assert result.exit_code == 0, result.output
        hits = json.loads(result.output)
        assert len(hits) == 10 and all(h["label"] for h in hits)  # the default k; the index holds more
    else:
        assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output
