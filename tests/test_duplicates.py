"""Near-identical objects: `objsearch duplicates` groups the objects of a copied photo with their
originals, and `query --dedup` shows one of each group."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.cli import app
from objsearch.datasets.blob_embedder import build as build_blobs
from objsearch.datasets.scenes import make_dataset
from objsearch.duplicates import duplicate_groups
from tests.conftest import BLOBS

runner = CliRunner()
EXACT = 0.999  # copies: identical vectors up to float16 rounding (the blob embedder also gives boxes of one colour and shape equal vectors)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    make_dataset(root / "imgs", 30)
    shutil.copyfile(root / "imgs" / "scene_0007.png", root / "imgs" / "copy-of-7.png")
    index_folders([root / "imgs"], root / "idx", embedder=build_blobs(), model=BLOBS, options=IndexOptions(progress=False, workers=1))
    return root / "idx"


def test_the_objects_of_a_copied_photo_are_grouped_with_their_originals(index):
    with open_index(index, model=build_blobs()) as idx:
        groups = duplicate_groups(idx, EXACT)
        group_of = {object_id: number for number, group in enumerate(groups) for object_id in group}
        rows = idx.sql("SELECT object_id, path, x1, y1, x2, y2, label FROM objects_images "
                       "WHERE path LIKE '%copy-of-7.png' OR path LIKE '%scene_0007.png'")[1]
        copies = [r for r in rows if r[1].endswith("copy-of-7.png")]
        assert len(copies) == len(rows) - len(copies) > 0
        for copy in copies:
            original = next(r for r in rows if r[1].endswith("scene_0007.png") and r[2:] == copy[2:])
            assert copy[0] in group_of and group_of[copy[0]] == group_of.get(original[0])
        for group in groups:  # a group never mixes colours
            assert len({idx.object(object_id)["label"] for object_id in group}) == 1
        loose = duplicate_groups(idx, 0.5)  # at 0.5 every box of one colour looks alike to this embedder
        assert len(loose) <= 5 and sum(map(len, loose)) > sum(map(len, groups))


def test_the_duplicates_command_and_query_dedup(index):
    result = runner.invoke(app, ["duplicates", "--index", str(index), "--threshold", str(EXACT), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["groups"] >= 1 and all(len(group) >= 2 for group in report["shown"])
    table = runner.invoke(app, ["duplicates", "--index", str(index), "--threshold", str(EXACT)])
    assert table.exit_code == 0 and "groups of near-identical objects" in table.output and "copy-of-7.png" in table.output

    plain = json.loads(runner.invoke(app, ["query", "red", "--index", str(index), "--format", "json", "-k", "10"]).output)
    deduped = json.loads(runner.invoke(app, ["query", "red", "--index", str(index), "--format", "json", "-k", "10", "--dedup"]).output)
    assert 1 <= len(deduped) < 10 and [h["rank"] for h in deduped] == list(range(1, len(deduped) + 1))
    assert deduped[0]["object_id"] == plain[0]["object_id"]
    with open_index(index, model=build_blobs()) as idx:
        vector = lambda hit: idx.vectors.reconstruct(hit["object_id"])  # noqa: E731
        kept = [vector(h) for h in deduped]
        for i in range(len(kept)):  # what is shown is pairwise distinct
            assert all(float(kept[i] @ kept[j]) < 0.95 for j in range(i))
        shown = {h["object_id"] for h in deduped}
        for hit in plain:  # and what is hidden is a near-copy of something shown
            if hit["object_id"] not in shown:
                assert max(float(vector(hit) @ v) for v in kept) >= 0.95
