"""The query surface cannot read or write other files, and any query string gets results or a
clear error."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions, index_folders
from objsearch.cli import app
from tests.blob_embedder import build as build_blobs
from tests.conftest import BLOBS
from tests.scenes import make_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("surface")
    make_dataset(root / "imgs", 4)
    index_folders([root / "imgs"], root / "idx", embedder=build_blobs(), model=BLOBS, options=IndexOptions(progress=False, workers=1))
    return root / "idx"


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
        assert isinstance(json.loads(result.output), list)
    else:
        assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output
