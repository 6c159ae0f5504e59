"""`objsearch bench coco-search`: reports, determinism, bad data, and that the numbers discriminate.

The data are generated scenes of coloured rectangles on white (objsearch/datasets/scenes.py) whose categories are
colour names, which the fast blob embedder recognises exactly.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from benchmarks import coco_search
from benchmarks.coco_search import run_coco_search
from objsearch.cli import app
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import EMBED_DIM, BlobEmbedder
from tests.conftest import BLOBS

OTHER_BLOBS = "objsearch.datasets.blob_embedder:build_other"
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
    assert results["machine"]["cpu_count"] == os.cpu_count() and results["machine"]["torch"]
    measured = [a for a in json.loads((coco_dir / "annotations" / "instances_val.json").read_text())["annotations"]
                if a["image_id"] < 5]  # images 0-4
    per_colour = Counter(a["category_id"] for a in measured)
    in_other_images = {c: {a["image_id"] for a in measured if a["category_id"] == c} for c in per_colour}
    for row in results["models"]:
        # Both models box every rectangle exactly and name its colour: every object found, every one named.
        m = row["metrics"]
        assert m["counts"] == {"images": 5, "objects": 15, "crowd_regions": 0, "stored_objects": 15}
        assert [m["detection"][k] for k in ("AP", "AP50", "AP75", "APm", "APl")] == pytest.approx([1.0] * 5)
        assert m["detection"]["APs"] == -1.0  # no rectangle under 32 x 32 px: nothing to average
        assert m["detection"]["per_category"] == pytest.approx(dict.fromkeys(["red", "green", "blue", "yellow", "purple"], 1.0))
        assert m["detection_class_agnostic"] == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
        assert m["best_f1_score_threshold"] == pytest.approx({"threshold": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0})
        text, objects = m["text_to_object"]["category"], m["object_to_object"]
        assert text["queries"] == len(per_colour)
        assert objects["queries"] == sum(len(in_other_images[a["category_id"]] - {a["image_id"]}) > 0 for a in measured)
        for ranking in (text, objects):
            assert [ranking[k] for k in ("R@1", "R@5", "R@10", "mAP@100")] == pytest.approx([1.0] * 4)
        assert m["zero_shot_accuracy"] == 1.0
        # Each box's 10 nearest of the 14 others: first the others of its colour, then other colours.
        assert m["knn_purity"] == pytest.approx(sum(n * min(n - 1, 10) for n in per_colour.values()) / (15 * 10))
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


def _rewrite_instances(data: Path, change) -> Path:
    path = data / "annotations" / "instances_val.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))
    return path


def test_annotations_without_iscrowd_are_single_objects(tmp_path):
    data = make_coco_dir(tmp_path / "data", 2)

    def strip(coco):
        for a in coco["annotations"]:
            del a["iscrowd"], a["area"]

    _rewrite_instances(data, strip)
    result = runner.invoke(app, ["bench", "coco-search", "--data", str(data), "--model", BLOBS, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    [row] = json.loads((tmp_path / "out" / "results.json").read_text())["models"]
    assert row["metrics"]["counts"]["objects"] == 6 and row["metrics"]["counts"]["crowd_regions"] == 0
    assert row["metrics"]["detection"]["AP"] == pytest.approx(1.0)  # and "area" defaulted to the box's


def _drop(key):
    return lambda record: record.pop(key)


def _set(key, value):
    return lambda record: record.__setitem__(key, value)


@pytest.mark.parametrize(("field", "change"), [
    ("categories", lambda coco: coco.pop("categories")),
    ("annotations", lambda coco: coco.__setitem__("annotations", {})),
    ("images[0].file_name", lambda coco: _drop("file_name")(coco["images"][0])),
    ("annotations[1].bbox", lambda coco: _drop("bbox")(coco["annotations"][1])),
    ("annotations[1].image_id", lambda coco: _drop("image_id")(coco["annotations"][1])),
    ("annotations[1].category_id", lambda coco: _drop("category_id")(coco["annotations"][1])),
    ("annotations[1].category_id", lambda coco: _set("category_id", 99)(coco["annotations"][1])),
    ("annotations[1].bbox", lambda coco: _set("bbox", [1, 2, 3])(coco["annotations"][1])),
    ("annotations[1].bbox", lambda coco: _set("bbox", ["1", "2", "3", "4"])(coco["annotations"][1])),
    ("annotations[1].bbox", lambda coco: _set("bbox", [1, 2, -3, 4])(coco["annotations"][1])),
    ("annotations[1].iscrowd", lambda coco: _set("iscrowd", "yes")(coco["annotations"][1])),
    ("annotations[1].id", lambda coco: _set("id", coco["annotations"][0]["id"])(coco["annotations"][1])),
])
def test_a_malformed_instances_file_is_a_one_line_error_naming_file_and_field(tmp_path, field, change):
    data = make_coco_dir(tmp_path / "data", 1)
    path = _rewrite_instances(data, change)
    result = runner.invoke(app, ["bench", "coco-search", "--data", str(data), "--model", BLOBS, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # handled, not a crash
    message = result.stderr.strip()
    assert message.startswith(f"error: {path}: {field}: ") and "\n" not in message, message
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("file", "content", "field"), [
    ("instances_val.json", "<html>", "not valid JSON"),
    ("instances_val.json", "[]", "not COCO instances JSON"),
    ("refs_val.json", '[{"ann_id": 1}]', "[0].sentences: missing"),
    ("refs_val.json", '[{"ann_id": 1, "sentences": [{"raw": "a red box"}]}]', "[0].sentences[0].sent: "),
])
def test_a_file_that_is_not_instances_or_refs_json_is_a_one_line_error_naming_it(tmp_path, file, content, field):
    data = make_coco_dir(tmp_path / "data", 1)
    path = data / "annotations" / file
    path.write_text(content)
    result = runner.invoke(app, ["bench", "coco-search", "--data", str(data), "--model", BLOBS, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    message = result.stderr.strip()
    assert message.startswith(f"error: {path}: {field}") and "\n" not in message, message
    assert not (tmp_path / "out").exists()
