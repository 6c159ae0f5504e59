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


def test_the_engine_indexes_and_queries_with_an_objembed_checkpoint(model, tmp_path):
    from typer.testing import CliRunner

    from objsearch.cli import app
    from tests.scenes import make_scene

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        make_scene(folder / f"scene_{i}.png", seed=i, size=(160, 120))
    ckpt = _save_confident(model, tmp_path / "ckpt")
    index = tmp_path / "index"
    runner = CliRunner()

    built = runner.invoke(app, ["index", str(folder), "--index", str(index), "--model", str(ckpt), "--no-progress", "--workers", "1"])
    assert built.exit_code == 0, built.output
    assert "indexed 3 images" in built.output

    found = runner.invoke(app, ["query", "red star", "--index", str(index), "--json", "-k", "5"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert isinstance(hits, list) and len(hits) == 5
    for hit in hits:
        x1, y1, x2, y2 = hit["box_xyxy"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120
        assert hit["label"] in CATEGORIES and hit["det_score"] > 0.9
        assert hit["path"].startswith(str(folder))
        assert -1.0001 <= hit["similarity"] <= 1.0001
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)

    other = _save_confident(model, tmp_path / "other", nudge=0.5)
    refused = runner.invoke(app, ["index", str(folder), "--index", str(index), "--model", str(other), "--no-progress", "--workers", "1"])
    assert refused.exit_code == 1
    assert "cannot be used with" in refused.output and "Traceback" not in refused.output
    again = runner.invoke(app, ["query", "red star", "--index", str(index), "--json", "-k", "5"])
    assert again.exit_code == 0 and json.loads(again.stdout) == hits, "the refused run changed the index"


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
