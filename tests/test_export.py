"""`objsearch query --export/--link/--crops/--format csv|coco`: what a user gets out, and what they
are told when it cannot be written. The index never changes."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions, index_folders
from objsearch.cli import app
from objsearch.datasets.blob_embedder import build as build_blobs
from objsearch.datasets.scenes import make_dataset
from objsearch.store.manifest import read_manifest
from tests.conftest import BLOBS

runner = CliRunner()


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    make_dataset(root / "a", 6)
    make_dataset(root / "b", 6, seed=1)  # the same file names in another folder
    index_folders([root / "a", root / "b"], root / "idx", embedder=build_blobs(), model=BLOBS, options=IndexOptions(progress=False, workers=1))
    return root / "idx"


def query(index, *args, k: int = 8) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `objsearch query red -k K ARGS`."""
    result = runner.invoke(app, ["query", "red", "--index", str(index), "-k", str(k), *args])
    return result.exit_code, result.stdout, result.stderr


def hits(index, k: int = 8) -> list[dict]:
    return json.loads(query(index, "--format", "json", k=k)[1])


def test_coco_output_loads_in_pycocotools_with_the_same_boxes(index, tmp_path):
    code, out, _ = query(index, "--format", "coco")
    assert code == 0
    (tmp_path / "hits.json").write_text(out)
    coco = COCO(str(tmp_path / "hits.json"))
    expected = {h["object_id"]: h for h in hits(index)}
    annotations = coco.loadAnns(coco.getAnnIds())
    assert {a["id"] for a in annotations} == set(expected)
    for annotation in annotations:
        hit = expected[annotation["id"]]
        x1, y1, x2, y2 = hit["box_xyxy"]
        assert annotation["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
        assert annotation["score"] == pytest.approx(hit["similarity"])
        assert coco.imgs[annotation["image_id"]]["file_name"] == hit["path"]
        assert coco.cats[annotation["category_id"]]["name"] == hit["label"]


def test_csv_output_has_a_header_and_one_row_per_hit(index):
    code, out, _ = query(index, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = hits(index)
    assert [int(r["object_id"]) for r in rows] == [h["object_id"] for h in expected]
    assert [float(rows[0][c]) for c in ("x1", "y1", "x2", "y2")] == pytest.approx(expected[0]["box_xyxy"])


def test_photos_are_copied_or_linked_and_same_names_kept_apart(index, tmp_path):
    generation = read_manifest(index).generation
    expected = hits(index, k=60)  # every red object of both folders
    code, out, err = query(index, "--export", str(tmp_path / "copies"), "--format", "json", k=60)
    assert code == 0 and json.loads(out) == expected  # stdout stays the hits
    assert "copied" in err
    copies = sorted((tmp_path / "copies").iterdir())
    sources = {h["path"] for h in expected}
    assert len({s.rsplit("/", 1)[1] for s in sources}) < len(sources), "the test needs two photos with one name"
    assert len(copies) == len(sources)  # two folders' scene_0000.png are told apart by image id
    assert sorted(p.read_bytes() for p in copies) == sorted(open(s, "rb").read() for s in sources)
    code, _, _ = query(index, "--export", str(tmp_path / "links"), "--link")
    links = sorted((tmp_path / "links").iterdir())
    assert code == 0 and all(p.is_symlink() and str(p.resolve()) in sources for p in links)
    assert read_manifest(index).generation == generation


def test_an_existing_file_or_a_bad_folder_is_a_clear_error_and_nothing_is_written(index, tmp_path):
    assert query(index, "--export", str(tmp_path / "out"))[0] == 0
    first = sorted(p.name for p in (tmp_path / "out").iterdir())
    (tmp_path / "out" / first[0]).write_bytes(b"mine")
    shutil.rmtree(tmp_path / "out" / first[1]) if (tmp_path / "out" / first[1]).is_dir() else (tmp_path / "out" / first[1]).unlink()
    result = runner.invoke(app, ["query", "red", "--index", str(index), "-k", "8", "--export", str(tmp_path / "out")])
    assert result.exit_code == 1 and "already exist" in result.output and "Traceback" not in result.output
    assert (tmp_path / "out" / first[0]).read_bytes() == b"mine" and not (tmp_path / "out" / first[1]).exists()
    (tmp_path / "a-file").write_text("x")
    result = runner.invoke(app, ["query", "red", "--index", str(index), "--crops", str(tmp_path / "a-file" / "crops")])
    assert result.exit_code == 1 and "cannot create" in result.output
    result = runner.invoke(app, ["query", "red", "--index", str(index), "--link"])
    assert result.exit_code == 1 and "--link needs --export" in result.output
    result = runner.invoke(app, ["query", "red", "--index", str(index), "--format", "xml"])
    assert result.exit_code == 1 and "--format is one of" in result.output


def test_crops_show_each_object_at_full_resolution(index, tmp_path):
    expected = hits(index)
    assert query(index, "--crops", str(tmp_path / "crops"))[0] == 0
    for hit in expected:
        crop = Image.open(tmp_path / "crops" / f"{hit['object_id']}.jpg")
        x1, y1, x2, y2 = hit["box_xyxy"]
        assert abs(crop.width - (x2 - x1)) <= 1 and abs(crop.height - (y2 - y1)) <= 1
        r, g, b = np.asarray(crop.convert("RGB"), np.float32).reshape(-1, 3).mean(axis=0)
        assert r > 150 and g < 110 and b < 110  # red


def test_a_clash_in_the_crops_folder_or_a_vanished_photo_writes_nothing_anywhere(index, tmp_path):
    expected = hits(index)
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / f"{expected[0]['object_id']}.jpg").write_bytes(b"mine")
    result = runner.invoke(app, ["query", "red", "--index", str(index), "-k", "8", "--export", str(tmp_path / "photos"), "--crops", str(tmp_path / "crops")])
    assert result.exit_code == 1 and "already exist" in result.output
    assert list((tmp_path / "photos").iterdir()) == [] and len(list((tmp_path / "crops").iterdir())) == 1
    photo = expected[-1]["path"]
    moved = tmp_path / "moved.png"
    shutil.move(photo, moved)
    try:
        result = runner.invoke(app, ["query", "red", "--index", str(index), "-k", "8", "--export", str(tmp_path / "photos")])
        assert result.exit_code == 1 and "no longer where the index saw them" in result.output
        assert list((tmp_path / "photos").iterdir()) == []
    finally:
        shutil.move(moved, photo)
