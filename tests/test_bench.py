"""`objsearch bench coco-search`: reports, determinism, bad data, and that the numbers discriminate.

The data are generated scenes of coloured rectangles on white (tests/scenes.py) whose categories are
colour names, which the fast blob embedder recognises exactly.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from benchmarks import coco_search
from benchmarks.coco_search import run_coco_search
from objsearch.cli import app
from tests.blob_embedder import EMBED_DIM, BlobEmbedder
from tests.conftest import BLOBS
from tests.scenes import make_dataset

OTHER_BLOBS = "tests.blob_embedder:build_other"
RANDOM = "tests.test_bench:build_random"
runner = CliRunner()


class RandomEmbedder(BlobEmbedder):
    """The blob detector's boxes with meaningless (but deterministic) embeddings."""

    name = "test-random"

    @staticmethod
    def _embed_crop(crop: np.ndarray) -> np.ndarray:
        return _unit_vector(zlib.crc32(crop.tobytes()))

    def embed_texts(self, texts):
        return np.array([_unit_vector(zlib.crc32(t.encode())) for t in texts], np.float32).reshape(-1, EMBED_DIM)


def _unit_vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(EMBED_DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def build_random(*, device: str | None = None) -> RandomEmbedder:
    return RandomEmbedder()


def make_coco_dir(root: Path, images: int) -> Path:
    """A COCO-format directory: images/val/*.png + annotations/instances_val.json."""
    make_dataset(root / "images" / "val", images)
    (root / "annotations").mkdir()
    (root / "images" / "val_instances.json").rename(root / "annotations" / "instances_val.json")
    return root


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> Path:
    return make_coco_dir(tmp_path_factory.mktemp("coco"), 6)


def _metric_values(tree, path=()):
    """(key path, value) of every number in a metrics dict, except counts and query counts."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key not in ("counts", "queries", "curve"):
                yield from _metric_values(value, path + (key,))
    elif isinstance(tree, (int, float)):
        yield path, tree


def _without_speed(results: dict) -> dict:
    return {"dataset": results["dataset"], "models": [{k: v for k, v in row.items() if k != "speed"} for row in results["models"]]}


def test_cli_compares_two_models_in_one_report(coco_dir, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["bench", "coco-search", "--data", str(coco_dir), "--model", BLOBS, "--model", OTHER_BLOBS,
                                 "--max-images", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output

    results = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in results["models"]] == [BLOBS, OTHER_BLOBS]
    assert results["dataset"]["split"] == "val" and results["dataset"]["images_measured"] == 5
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["torch"]
    for row in results["models"]:
        values = dict(_metric_values(row["metrics"]))
        assert values[("text_to_object", "category", "R@5")] == 1.0  # blobs are found by their colour name
        for path, value in values.items():
            sentinel = path[0] == "detection" and value == -1.0  # COCOeval: nothing to average
            assert sentinel or 0.0 <= value <= 1.0, (path, value)
        assert row["speed"]["indexed_images"] == 5 and row["speed"]["index_images_per_second"] > 0
        assert 0 < row["speed"]["query_p50_ms"] <= row["speed"]["query_p95_ms"]

    table = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, separator, one row per model
    assert "text R@5" in table[0] and "box AP" in table[0] and "query p95 ms" in table[0]
    assert table[2].startswith(f"| {BLOBS} |") and table[3].startswith(f"| {OTHER_BLOBS} |")
    assert table[0] in result.output and table[3] in result.output  # the table is printed
    with Image.open(out / "pr_curve.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 100


def test_same_inputs_give_the_same_numbers(coco_dir, tmp_path):
    first = run_coco_search(coco_dir, [BLOBS], tmp_path / "a", None)
    second = run_coco_search(coco_dir, [BLOBS], tmp_path / "b", None)
    assert _without_speed(first) == _without_speed(second)
    on_disk = [json.loads((tmp_path / name / "results.json").read_text()) for name in "ab"]
    assert _without_speed(on_disk[0]) == _without_speed(on_disk[1])


def test_meaningless_embeddings_score_lower(coco_dir, tmp_path):
    results = run_coco_search(coco_dir, [BLOBS, RANDOM], tmp_path, None)
    blob, random = (row["metrics"]["text_to_object"]["category"] for row in results["models"])
    assert blob["R@5"] == 1.0 and random["R@5"] < blob["R@5"]
    assert random["mAP@100"] < 0.5 * blob["mAP@100"]
    blob_acc, random_acc = (row["metrics"]["zero_shot_accuracy"] for row in results["models"])
    assert random_acc < blob_acc


@pytest.mark.parametrize("layout", ["no annotations", "not json", "no images folder", "unknown split", "unknown model"])
def test_bad_data_or_model_is_a_one_line_error(tmp_path, layout):
    data = tmp_path / "data"
    args = ["--model", BLOBS]
    if layout == "no annotations":
        data.mkdir()
        Image.new("RGB", (8, 8)).save(data / "photo.png")
    elif layout == "not json":
        (data / "annotations").mkdir(parents=True)
        (data / "annotations" / "instances_val.json").write_text("<html>")
    else:
        make_coco_dir(data, 1)
        if layout == "no images folder":
            (data / "images" / "val").rename(data / "pictures")
        elif layout == "unknown split":
            args += ["--split", "train"]
        else:
            args += ["--model", "no-such-model"]
    result = runner.invoke(app, ["bench", "coco-search", "--data", str(data), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # handled, not a crash
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_without_data_the_synthetic_set_is_generated_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(coco_search, "SYNTHETIC_SIZES", {"num_train": 4, "num_val": 0, "num_test": 3})
    results = run_coco_search(None, [BLOBS], tmp_path / "out", None)
    assert results["dataset"]["source"] == "synthetic" and results["dataset"]["split"] == "test"
    assert results["dataset"]["images_measured"] == 3 and results["dataset"]["synthetic_config"]["num_test"] == 3
    [cached] = (tmp_path / "cache" / "objsearch").iterdir()  # nothing else left behind
    stamp = (cached / "dataset.json").stat().st_mtime_ns
    run_coco_search(None, [BLOBS], tmp_path / "out2", 2)
    assert (cached / "dataset.json").stat().st_mtime_ns == stamp  # reused, not regenerated
