"""ObjEmbed checkpoints: the round trip, damaged or foreign directories, and a checkpoint behind the
engine's CLI (index, query, calibrated threshold, batch size)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from objsearch.errors import UnknownModel
from objsearch.model.checkpoint import load_checkpoint, save_checkpoint
from tests.training.small_model import (
    CATEGORIES,
    random_boxes,
    tiny_run_arguments,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save_checkpoint(model, tmp_path_factory.mktemp("objembed") / "ckpt")


def test_checkpoint_round_trip_gives_identical_outputs(model, checkpoint, images):
    payload = json.loads((checkpoint / "config.json").read_text())
    assert payload["model_type"] == "objembed"
    assert payload["categories"] == CATEGORIES and payload["text_config"]["model_type"] == "bert"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "tokenizer_config.json").is_file()
    loaded = load_checkpoint(checkpoint)
    def as_json(config) -> dict:  # through JSON, as config.json holds it (int dict keys become str)
        return json.loads(json.dumps(config.to_dict()))

    assert as_json(loaded.config) == as_json(model.config)
    extra = random_boxes(2, 2, seed=8)
    with torch.no_grad():
        before, after = model(images, extra, 1), loaded(images, extra, 1)
        phrases = ["a small red star", "the blue ring left of the green square"]
        assert torch.equal(model.encode_text(phrases), loaded.encode_text(phrases))
    for key in before:
        if isinstance(before[key], dict):  # "extra" and "proposals"
            for sub in before[key]:
                assert torch.equal(before[key][sub], after[key][sub]), f"extra {sub} differs after reload"
        else:
            assert torch.equal(before[key], after[key]), f"{key} differs after reload"
    tokenizer = loaded.text.tokenizer
    assert tokenizer("a small red star")["input_ids"] == model.text.tokenizer("a small red star")["input_ids"]


def _copy_checkpoint(source, destination):
    import shutil

    shutil.copytree(source, destination)
    return destination


def test_checkpoint_without_weights_is_an_unknown_model(checkpoint, tmp_path):
    broken = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    (broken / "model.safetensors").unlink()
    with pytest.raises(UnknownModel, match="model.safetensors"):
        load_checkpoint(broken)


def test_checkpoint_of_another_model_type_is_an_unknown_model(checkpoint, tmp_path):
    other = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    payload = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**payload, "model_type": "bert"}))
    with pytest.raises(UnknownModel, match="objembed"):
        load_checkpoint(other)
    (other / "config.json").write_text("{not json")
    with pytest.raises(UnknownModel):
        load_checkpoint(other)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_checkpoint_with_corrupt_weights_is_an_unknown_model(checkpoint, tmp_path, damage):
    broken = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    weights = broken / "model.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"this is not a safetensors file" * 10)
    else:
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UnknownModel):
        load_checkpoint(broken)



# ---------------------------------------------------------------------------------------- the engine


def _save_confident(model, directory, nudge: float = 0.0):
    """A copy of ``model`` whose every query scores ~1 (so the index stores objects), saved."""
    confident = copy.deepcopy(model)
    with torch.no_grad():
        confident.objectness.bias.fill_(8.0)
        confident.quality.bias.fill_(8.0)
        confident.logit_scale.add_(nudge)  # different weights, same architecture
    return save_checkpoint(confident, directory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The seconds-long run the training tests use (3 steps of the small model on 12 synthetic images):
    its root, holding ``synthetic/`` (the generated set) and ``run/final`` (the checkpoint)."""
    from training.train import main

    root = tmp_path_factory.mktemp("trained")
    assert main(tiny_run_arguments(root, steps=3)) == 0
    return root


def _index(folder, index, model, *extra):
    from typer.testing import CliRunner

    from objsearch.cli import app

    return CliRunner().invoke(app, ["index", str(folder), "--index", str(index), "--model", str(model),
                                    "--no-progress", "--workers", "1", *extra])


def test_an_index_built_with_a_trained_checkpoint_holds_its_detections_ranked_by_cosine(model, trained, tmp_path):
    """Three steps teach the model no colours or shapes, so which object "red star" finds is not yet
    meaningful; what a user sees does not depend on that: the index holds the objects the model finds,
    boxed in each image's own pixels, and a query returns them all, best cosine first, with the cosine of
    the query's and the stored object's embeddings as its similarity."""
    from PIL import Image
    from typer.testing import CliRunner

    from objsearch.cli import app
    from objsearch.embedders.objembed import build
    from objsearch.search import open_index

    ckpt = _copy_checkpoint(trained / "run" / "final", tmp_path / "ckpt")
    # Three steps score every query ~0.01, under any calibrated threshold: store from 0.005 up.
    payload = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**payload, "training": {**payload["training"], "score_threshold": 0.005}}))
    folder = trained / "synthetic" / "images" / "test"  # 4 images of 128 x 128 pixels, 64 x 64 for the model
    index = tmp_path / "index"
    built = _index(folder, index, ckpt)
    assert built.exit_code == 0, built.output
    assert "indexed 4 images" in built.output

    embedder = build(ckpt, device="cpu")
    with open_index(index) as opened:
        columns, rows = opened.sql("SELECT o.object_id, i.path, o.x1, o.y1, o.x2, o.y2, o.score, o.label, o.embedding "
                                   "FROM objects o JOIN images i USING (image_id) ORDER BY o.object_id")
    stored = {row[0]: row[1:] for row in rows}
    assert 4 <= len(stored) <= 4 * 6, "each image keeps some of its 6 queries' objects"
    for path in sorted(folder.iterdir()):
        found = embedder.detect([np.asarray(Image.open(path).convert("RGB"))])[0]
        boxes = sorted(tuple(row[1:5]) for row in stored.values() if row[0] == str(path))
        assert len(boxes) == len(found), f"{path.name}: the index holds other objects than the model finds"
        np.testing.assert_allclose(boxes, sorted(map(tuple, found.boxes_xyxy)), atol=0.01)
        assert all(0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128 for x1, y1, x2, y2 in boxes)

    found = CliRunner().invoke(app, ["query", "red star", "--index", str(index), "--json", "-k", str(len(stored))])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    def unit(vector) -> np.ndarray:
        vector = np.asarray(vector, np.float32)
        return vector / np.linalg.norm(vector)

    query = unit(embedder.embed_texts(["red star"])[0])
    cosines = {i: float(unit(row[7]) @ query) for i, row in stored.items()}
    assert sorted(h["object_id"] for h in hits) == sorted(stored), "a query with k = all returns every object once"
    for hit in hits:
        assert hit["similarity"] == pytest.approx(cosines[hit["object_id"]], abs=2e-3)
        assert hit["label"] == stored[hit["object_id"]][6] and hit["label"] in payload["categories"]
        assert hit["det_score"] >= 0.005
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
    assert hits[0]["similarity"] == pytest.approx(max(cosines.values()), abs=2e-3)

    other = _save_confident(model, tmp_path / "other", nudge=0.5)
    refused = _index(folder, index, other)
    assert refused.exit_code == 1
    assert "cannot be used with" in refused.output and "Traceback" not in refused.output
    again = CliRunner().invoke(app, ["query", "red star", "--index", str(index), "--json", "-k", str(len(stored))])
    assert again.exit_code == 0 and json.loads(again.stdout) == hits, "the refused run changed the index"


SYNTHETIC_ONLY = "was trained on synthetic shapes only"


def test_a_checkpoint_records_its_training_data_and_indexing_with_a_synthetic_only_one_warns_once(trained, tmp_path):
    """The default checkpoint knows only coloured shapes: ``objsearch index`` says so in one line, once
    per run however many batches it takes; a checkpoint trained on real data, or one written before
    checkpoints recorded their data, indexes silently."""
    from objsearch.model.checkpoint import read_training_info

    record = {"sources": {"synthetic": {"format": "synthetic", "share": 0.8},
                          "synthetic_refs": {"format": "synthetic", "share": 0.2}}, "synthetic_only": True}
    assert read_training_info(trained / "run" / "final")["data"] == record
    assert read_training_info(trained / "run" / "last")["data"] == record, "the resumable state is a checkpoint too"

    folder = trained / "synthetic" / "images" / "test"  # 4 images: 4 batches of 1
    warned = _index(folder, tmp_path / "index", trained / "run" / "final", "--batch-size", "1")
    assert warned.exit_code == 0, warned.output
    lines = [line for line in warned.output.splitlines() if SYNTHETIC_ONLY in line]
    assert len(lines) == 1, warned.output
    assert lines[0].startswith("WARNING") and str(trained / "run" / "final") in lines[0]
    assert "real photos" in lines[0]
    assert "indexed 4 images" in warned.output

    for name, data in (("real", {"sources": {"coco": {"format": "coco", "share": 1.0}}, "synthetic_only": False}),
                       ("older", None)):
        ckpt = _copy_checkpoint(trained / "run" / "final", tmp_path / name)
        payload = json.loads((ckpt / "config.json").read_text())
        training = {k: v for k, v in payload["training"].items() if k != "data"}
        (ckpt / "config.json").write_text(json.dumps({**payload, "training": {**training, **({"data": data} if data else {})}}))
        silent = _index(folder, tmp_path / f"index-{name}", ckpt, "--batch-size", "1")
        assert silent.exit_code == 0 and "indexed 4 images" in silent.output, silent.output
        assert SYNTHETIC_ONLY not in silent.output and "WARNING" not in silent.output, silent.output


def test_the_data_record_says_synthetic_only_when_every_source_with_a_share_is():
    from training.config import DataConfig
    from training.data.sources import data_record

    coco = {"format": "coco", "image_dir": "coco/images", "instances_json": "coco/instances.json"}
    assert data_record(DataConfig())["synthetic_only"] is True
    mixed = data_record(DataConfig(mix={"synthetic": 0.5, "coco": 0.5}, sources={"coco": coco}))
    assert mixed == {"sources": {"synthetic": {"format": "synthetic", "share": 0.5},
                                 "coco": {"format": "coco", "share": 0.5}}, "synthetic_only": False}
    unused = data_record(DataConfig(mix={"synthetic": 1.0, "coco": 0.0}, sources={"coco": coco}))
    assert unused["synthetic_only"] is True and list(unused["sources"]) == ["synthetic"]


def test_a_checkpoint_carries_its_calibrated_store_threshold(model, tmp_path):
    from objsearch.embedders.objembed import DEFAULT_SCORE_THRESHOLD, build

    plain = save_checkpoint(model, tmp_path / "plain", extra={"steps": 5})
    assert build(plain, device="cpu").score_threshold == DEFAULT_SCORE_THRESHOLD
    calibrated = save_checkpoint(model, tmp_path / "calibrated", extra={"steps": 5, "score_threshold": 0.17})
    assert build(calibrated, device="cpu").score_threshold == 0.17
    assert build(calibrated, device="cpu", score_threshold=0.5).score_threshold == 0.5, "the caller's choice wins"
    with pytest.raises(ValueError, match="nms_iou"):
        build(calibrated, device="cpu", nms_iou=1.5)


def test_objembed_on_cpu_takes_the_default_batch_size(model):
    from objsearch.embedders.batch_size import DEFAULT_BATCH_SIZE
    from objsearch.embedders.objembed import ObjEmbedEmbedder

    assert ObjEmbedEmbedder(model, version="test").preferred_batch_size() == DEFAULT_BATCH_SIZE



def test_objembed_halves_its_batch_when_cuda_runs_out_of_memory(model, monkeypatch):
    """Simulated on CPU: a forward pass of more than two images raises CUDA's out-of-memory error."""
    from objsearch.embedders.base import Detections
    from objsearch.embedders.objembed import ObjEmbedEmbedder

    embedder = ObjEmbedEmbedder(model, version="test")
    passes = []

    def fake_batch(chunk):
        passes.append(len(chunk))
        if len(chunk) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return [Detections.empty(embedder.embed_dim) for _ in chunk]

    monkeypatch.setattr(embedder, "_detect_batch", fake_batch)
    images = [np.zeros((8, 8, 3), np.uint8)] * 5
    assert len(embedder.detect(images)) == 5  # every image answered, in order
    assert passes == [5, 2, 2, 1] and embedder.max_batch == 2

    def always_out_of_memory(chunk):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(embedder, "_detect_batch", always_out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # one image that does not fit is a real error
        embedder.detect(images[:1])
