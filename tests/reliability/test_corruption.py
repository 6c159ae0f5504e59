"""A truncated or altered FAISS file or Parquet shard is detected (manifest checksums);
`objsearch doctor` reports it and `objsearch doctor --repair` rebuilds what the remaining data allows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions, index_folders
from objsearch.cli import app
from objsearch.store.manifest import read_manifest
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import build as build_blobs
from tests.conftest import BLOBS
from tests.reliability.helpers import snapshot

runner = CliRunner()
OPTIONS = IndexOptions(progress=False, workers=1, commit_every=5, batch_size=5)


@pytest.fixture
def indexed(tmp_path):
    folder = tmp_path / "imgs"
    make_dataset(folder, 15)
    root = tmp_path / "idx"
    index_folders([folder], root, embedder=build_blobs(), model=BLOBS, options=OPTIONS)
    assert len(read_manifest(root).object_shards) == 3
    return folder, root, snapshot(root)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def cli(*args):
    return runner.invoke(app, list(args))


def test_truncated_faiss_file_is_reported_and_rebuilt_without_loss(indexed):
    folder, root, expected = indexed
    truncate(root / read_manifest(root).segments[1].vectors.path)
    query = cli("query", "red", "--index", str(root))
    assert query.exit_code == 1 and "doctor --repair" in query.output and "Traceback" not in query.output
    check = cli("doctor", "--index", str(root))
    assert check.exit_code == 1 and "size" in check.output
    repair = cli("doctor", "--repair", "--index", str(root))
    assert repair.exit_code == 0, repair.output
    assert "rebuilt" in repair.output
    assert snapshot(root) == expected  # nothing lost: the vectors live in Parquet too


def test_altered_faiss_file_of_the_same_size_is_caught_by_its_checksum(indexed):
    folder, root, expected = indexed
    flip_a_byte(root / read_manifest(root).segments[1].vectors.path)
    assert "checksum mismatch" in cli("doctor", "--index", str(root)).output
    assert cli("doctor", "--repair", "--index", str(root)).exit_code == 0
    assert snapshot(root) == expected


@pytest.mark.parametrize("damage", [truncate, flip_a_byte])
@pytest.mark.parametrize("table", ["object_shards", "image_shards"])
def test_a_damaged_parquet_shard_is_dropped_and_the_next_run_restores_it(indexed, damage, table):
    folder, root, expected = indexed
    damaged = getattr(read_manifest(root), table)[1]
    damage(root / damaged.path)
    check = cli("doctor", "--index", str(root))
    assert check.exit_code == 1 and damaged.path in check.output
    index_run = cli("index", str(folder), "--index", str(root), "--no-progress")
    assert index_run.exit_code == 1 and "doctor --repair" in index_run.output  # the writer refuses too
    repair = cli("doctor", "--repair", "--index", str(root))
    assert repair.exit_code == 0, repair.output
    assert f"dropped damaged shard {damaged.path}" in repair.output
    partial = snapshot(root)
    assert len(partial[0]) < len(expected[0])  # the damaged shard's rows are gone ...
    rerun = cli("index", str(folder), "--index", str(root), "--no-progress", "--workers", "1")
    assert rerun.exit_code == 0, rerun.output
    assert snapshot(root) == expected  # ... and the next index run embeds those files again


def test_a_hand_edited_manifest_is_a_clear_error(indexed):
    folder, root, _ = indexed
    (root / "manifest.json").write_text("{ not json")
    result = cli("info", "--index", str(root))
    assert result.exit_code == 1 and "manifest.json is unreadable" in result.output


@pytest.mark.parametrize("version, words", [(99, "newer than this objsearch"), (0, "re-index into a new directory")])
def test_other_format_versions_are_refused_clearly(indexed, version, words):
    folder, root, _ = indexed
    data = json.loads((root / "manifest.json").read_text())
    data["format_version"] = version
    (root / "manifest.json").write_text(json.dumps(data))
    for args in (["query", "red"], ["index", str(folder)], ["doctor"]):
        result = cli(*args, "--index", str(root))
        assert result.exit_code == 1 and words in result.output, (args, result.output)
