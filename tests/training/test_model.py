"""ObjEmbed, the model: preset sizes, the forward contract, denoising isolation, box refinement,
caption decoding, checkpoints, letterbox geometry, and a checkpoint behind the engine's CLI."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from objsearch.errors import UnknownModel
from objsearch.model.checkpoint import load_checkpoint, save_checkpoint
from objsearch.model.config import preset
from objsearch.model.heads import CaptionHead
from objsearch.model.objembed import ObjEmbed, extra_query_mask
from objsearch.model.transformer import AnchorDecoder, inverse_sigmoid

CATEGORIES = ["star", "ring", "square"]

#: A small ObjEmbed (about 1.5M parameters besides the frozen MiniLM) whose forward takes milliseconds.
SMALL_OVERRIDES: dict[str, Any] = {
    "backbone_kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 2},
    "image_size": 64,
    "hidden_dim": 32,
    "decoder_layers": 2,
    "decoder_heads": 2,
    "decoder_ffn_dim": 64,
    "num_queries": 6,
    "mask_size": 16,
    "embed_dim": 64,
    "caption_layers": 1,
}


def small_config(categories: list[str] | None = None):
    """The ``tiny`` preset shrunk further (shared by the training tests)."""
    return preset("tiny", **SMALL_OVERRIDES, categories=list(CATEGORIES if categories is None else categories))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors on a shared 2-core machine: a second intra-op thread only adds contention
    (measured here: 30x slower with 2 threads while another job runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> ObjEmbed:
    torch.manual_seed(0)
    return ObjEmbed(small_config()).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def random_boxes(batch: int, count: int, seed: int) -> torch.Tensor:
    """(batch, count, 4) valid cxcywh boxes in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, count, 2, generator=gen) * 0.6 + 0.2
    sizes = torch.rand(batch, count, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([centres, sizes], dim=-1)


# ---------------------------------------------------------------------------------------- presets


def _meta_parameter_counts(name: str, text_config: dict) -> dict[str, int]:
    """Build a preset on the meta device (no memory, no download) and count its parameters."""
    from objsearch.embedders.sentence_encoder import packaged_minilm_dir

    config = preset(name, backbone_pretrained=False, text_config=text_config)
    with torch.device("meta"):
        built = ObjEmbed(config, tokenizer_dir=str(packaged_minilm_dir()))  # BERT's uncased vocabulary
    assert all(p.is_meta for p in built.parameters())
    counts = {part: sum(p.numel() for p in getattr(built, part).parameters()) for part in ("backbone", "text")}
    counts["total"] = sum(p.numel() for p in built.parameters())
    counts["embed_dim"] = built.config.embed_dim
    return counts


def _text_config(name: str) -> dict:
    from transformers import AutoConfig, BertConfig

    from objsearch.embedders.sentence_encoder import packaged_minilm_dir

    if name == "large":  # bert-large-uncased
        return BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096).to_dict()
    if name == "base":  # bert-base-uncased
        return BertConfig().to_dict()
    return AutoConfig.from_pretrained(str(packaged_minilm_dir())).to_dict()  # tiny: all-MiniLM-L6-v2


@pytest.mark.parametrize(
    "name, backbone_range, text_range, total_range",
    [
        # ViT-L/16 at 640 px (303M + a bigger position table) + BERT-Large (335M) + heads.
        ("large", (300e6, 310e6), (334e6, 338e6), (650e6, 720e6)),
        # ViT-B/16 at 512 px (86M) + BERT-base (110M) + heads.
        ("base", (85e6, 90e6), (109e6, 111e6), (200e6, 250e6)),
        # A 4-layer ViT-Ti with a conv stem + MiniLM-L6 (22.7M) + heads.
        ("tiny", (1e6, 3e6), (22e6, 24e6), (25e6, 40e6)),
    ],
)
def test_preset_parameter_counts(name, backbone_range, text_range, total_range, record_property):
    counts = _meta_parameter_counts(name, _text_config(name))
    record_property(f"{name}_parameters", counts["total"])
    print(f"{name}: {counts}")
    assert backbone_range[0] <= counts["backbone"] <= backbone_range[1], counts
    assert text_range[0] <= counts["text"] <= text_range[1], counts
    assert total_range[0] <= counts["total"] <= total_range[1], counts
    assert counts["embed_dim"] == 512


# ---------------------------------------------------------------------------------------- forward


def test_forward_outputs_follow_the_documented_contract(model, images):
    config = model.config
    L, B, Q, E, M, C = config.decoder_layers, 2, config.num_queries, config.embed_dim, config.mask_size, len(CATEGORIES)
    with torch.no_grad():
        out = model(images)
    cells = config.feature_size ** 2
    expected = {"boxes": (L, B, Q, 4), "objectness": (L, B, Q), "quality": (B, Q), "embeddings": (B, Q, E),
                "mask_logits": (B, Q, M, M), "class_logits": (B, Q, C)}
    proposals = out.pop("proposals")
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert {k: tuple(v.shape) for k, v in proposals.items()} == {"boxes": (B, cells, 4), "objectness": (B, cells)}
    assert torch.allclose(out["embeddings"].norm(dim=-1), torch.ones(B, Q), atol=1e-5)
    assert out["boxes"].min() >= 0 and out["boxes"].max() <= 1
    assert all(torch.isfinite(v).all() for v in out.values())

    K = 4
    with torch.no_grad():
        with_extra = model(images, extra_boxes=random_boxes(B, K, seed=2), extra_groups=2)
    extra = with_extra.pop("extra")
    assert with_extra.pop("proposals").keys() == proposals.keys()
    assert {k: tuple(v.shape) for k, v in with_extra.items()} == expected
    assert {k: tuple(v.shape) for k, v in extra.items()} == {
        "boxes": (L, B, K, 4), "objectness": (L, B, K), "quality": (B, K), "embeddings": (B, K, E),
        "mask_logits": (B, K, M, M), "class_logits": (B, K, C)}
    assert torch.allclose(extra["embeddings"].norm(dim=-1), torch.ones(B, K), atol=1e-5)
    assert extra["boxes"].min() >= 0 and extra["boxes"].max() <= 1


def test_extra_query_mask_hides_extras_from_matching_queries_and_groups_from_each_other():
    Q, K, groups = 4, 6, 3
    mask = extra_query_mask(Q, K, groups, torch.device("cpu"))
    assert mask.shape == (Q + K, Q + K) and mask.dtype == torch.bool
    assert mask[:Q, Q:].all(), "a matching query may see a denoising query"
    assert not mask[:Q, :Q].any() and not mask[Q:, :Q].any()
    group = torch.arange(K) // (K // groups)
    assert torch.equal(mask[Q:, Q:], group[:, None] != group[None, :])
    assert not extra_query_mask(Q, 0, 1, torch.device("cpu")).any()
    with pytest.raises(ValueError):
        extra_query_mask(Q, 5, 3, torch.device("cpu"))


def test_denoising_boxes_do_not_leak_into_matching_queries_nor_other_groups(model, images):
    B, K = 2, 6
    first = random_boxes(B, K, seed=3)
    second = random_boxes(B, K, seed=4)  # different everywhere
    second_group_changed = first.clone()
    second_group_changed[:, K // 2 :] = second[:, K // 2 :]
    with torch.no_grad():
        plain = model(images)
        a = model(images, extra_boxes=first, extra_groups=2)
        b = model(images, extra_boxes=second, extra_groups=2)
        c = model(images, extra_boxes=second_group_changed, extra_groups=2)
    for key in plain:
        nested = plain[key] if isinstance(plain[key], dict) else {"": plain[key]}
        for sub in nested:
            got = {name: out[key][sub] if sub else out[key] for name, out in (("a", a), ("b", b), ("plain", plain))}
            assert torch.allclose(got["a"], got["b"], atol=1e-5), f"denoising boxes changed the matching queries' {key}"
            assert torch.allclose(got["a"], got["plain"], atol=1e-5), f"adding denoising queries changed {key}"
    # The extra queries themselves do depend on their boxes (so the checks above can fail) ...
    assert not torch.allclose(a["extra"]["embeddings"], b["extra"]["embeddings"], atol=1e-3)
    # ... and group 1 is blind to group 2's boxes.
    half = K // 2
    assert torch.allclose(a["extra"]["embeddings"][:, :half], c["extra"]["embeddings"][:, :half], atol=1e-5)
    assert torch.allclose(a["extra"]["boxes"][:, :, :half], c["extra"]["boxes"][:, :, :half], atol=1e-5)
    assert not torch.allclose(a["extra"]["embeddings"][:, half:], c["extra"]["embeddings"][:, half:], atol=1e-3)


# ---------------------------------------------------------------------------------------- boxes


def test_zero_initialised_box_heads_return_the_anchors_at_every_layer(model, images):
    """At init every layer returns its anchors: the top proposals (cell-centred boxes) for the
    matching queries, the given boxes for the extra queries."""
    extra = random_boxes(2, 3, seed=5)
    with torch.no_grad():
        out = model(images, extra_boxes=extra, extra_groups=1)
    proposals = out["proposals"]
    top = proposals["objectness"].topk(model.config.num_queries, dim=1).indices
    anchors = torch.gather(proposals["boxes"], 1, top[..., None].expand(-1, -1, 4))
    grid = model.config.feature_size
    assert torch.allclose(anchors[..., 2:], torch.full_like(anchors[..., 2:], 2 / grid), atol=1e-5)
    for layer in range(model.config.decoder_layers):
        assert torch.allclose(out["boxes"][layer], anchors, atol=1e-5)
        assert torch.allclose(out["extra"]["boxes"][layer], extra, atol=1e-5)


def test_refinement_compounds_over_layers_and_boxes_are_detached_between_layers():
    torch.manual_seed(0)
    layers, dim = 3, 32
    decoder = AnchorDecoder(dim, heads=2, ffn_dim=64, num_layers=layers, dropout=0.0)
    delta = torch.tensor([0.3, -0.2, 0.1, 0.25])
    with torch.no_grad():
        for head in decoder.box_heads:  # weights stay zero: each layer adds exactly ``delta`` in logit space
            head.layers[-1].bias.copy_(delta)
    anchors = random_boxes(2, 5, seed=6)
    out = decoder(torch.randn(2, 16, dim), torch.randn(16, dim), anchors, torch.randn(2, 5, dim))
    for layer in range(layers):
        expected = (inverse_sigmoid(anchors) + (layer + 1) * delta).sigmoid()
        assert torch.allclose(out["boxes"][layer], expected, atol=1e-5)
    out["boxes"][1].sum().backward()
    first_head = decoder.box_heads[0].layers[-1]
    assert first_head.bias.grad is None or not first_head.bias.grad.any(), "layer 1's boxes backpropagated into layer 0's box head"
    assert decoder.box_heads[1].layers[-1].bias.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- captions

PHRASE = "a small red star"


@pytest.fixture(scope="module")
def overfit_caption(model):
    """A caption head trained on one phrase from one fixed embedding (about a second)."""
    tokenizer = model.text.tokenizer
    torch.manual_seed(0)
    head = CaptionHead(embed_dim=16, dim=32, vocab_size=len(tokenizer), num_layers=1, max_length=8)
    embedding = F.normalize(torch.randn(1, 16), dim=-1)
    ids = tokenizer([PHRASE], return_tensors="pt")["input_ids"]  # [CLS] a small red star [SEP]
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        logits = head(embedding, ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    return head.eval(), embedding, tokenizer


def test_caption_generate_returns_token_lists_greedy_and_beam(model):
    tokenizer = model.text.tokenizer
    start, end = tokenizer.cls_token_id, tokenizer.sep_token_id
    embeddings = F.normalize(torch.randn(3, model.config.embed_dim, generator=torch.Generator().manual_seed(7)), dim=-1)
    for beam_size in (1, 3):
        ids = model.caption_head.generate(embeddings, start, end, beam_size=beam_size, max_length=5)
        assert isinstance(ids, list) and len(ids) == 3
        for row in ids:
            assert isinstance(row, list) and all(isinstance(t, int) for t in row)
            assert len(row) <= 5 and end not in row and start not in row[:1]
            assert all(0 <= t < len(tokenizer) for t in row)


def test_greedy_decoding_recovers_an_overfitted_phrase(overfit_caption):
    head, embedding, tokenizer = overfit_caption
    ids = head.generate(embedding, tokenizer.cls_token_id, tokenizer.sep_token_id, beam_size=1)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == PHRASE


def test_beam_search_recovers_an_overfitted_phrase(overfit_caption):
    head, embedding, tokenizer = overfit_caption
    ids = head.generate(embedding, tokenizer.cls_token_id, tokenizer.sep_token_id, beam_size=3)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == PHRASE


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


# ---------------------------------------------------------------------------------------- geometry


def _cxcywh(xyxy: list[float], side: float) -> list[float]:
    x1, y1, x2, y2 = (v / side for v in xyxy)
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _fake_outputs(boxes_cxcywh: list[list[float]], mask_logits: torch.Tensor | None = None) -> dict:
    q = len(boxes_cxcywh)
    return {
        "boxes": torch.tensor(boxes_cxcywh, dtype=torch.float32)[None, None],  # (L=1, B=1, Q, 4)
        "objectness": torch.full((1, 1, q), 8.0),
        "quality": torch.full((1, q), 8.0),
        "embeddings": F.normalize(torch.ones(1, q, 4), dim=-1),
        "mask_logits": mask_logits if mask_logits is not None else torch.zeros(1, q, 16, 16),
    }


def test_letterbox_then_postprocess_maps_boxes_and_masks_back_to_the_original_image():
    from objsearch.model.postprocess import postprocess
    from objsearch.model.preprocess import PAD_VALUE, letterbox

    height, width, size = 60, 100, 64  # landscape: scale = 0.64, content 38 rows x 64 columns
    image = np.full((height, width, 3), 255, np.uint8)
    original_box = [10, 20, 50, 40]  # x1, y1, x2, y2 pixels of the red rectangle
    image[20:40, 10:50] = (220, 30, 30)
    boxed, scale = letterbox(image, size)
    assert boxed.shape == (3, size, size) and boxed.dtype == torch.uint8 and scale == pytest.approx(0.64)
    assert (boxed[:, 39:, :] == PAD_VALUE).all(), "padding must go below the image"
    red = (boxed[0].int() > 150) & (boxed[1].int() < 100)
    rows, cols = torch.nonzero(red.any(1)).flatten(), torch.nonzero(red.any(0)).flatten()
    input_box = [v * scale for v in original_box]  # [6.4, 12.8, 32, 25.6]
    assert abs(int(cols[0]) - input_box[0]) <= 1 and abs(int(cols[-1]) + 1 - input_box[2]) <= 1
    assert abs(int(rows[0]) - input_box[1]) <= 1 and abs(int(rows[-1]) + 1 - input_box[3]) <= 1

    # The model speaks normalised cxcywh on the square input; postprocess answers in original pixels.
    spill = [40.0, 30.0, 70.0, 50.0]  # crosses the right edge and into the bottom padding
    mask_side = 32
    logits = torch.full((1, 2, mask_side, mask_side), -10.0)
    cell = size / mask_side  # input pixels per mask cell
    logits[0, 0, round(input_box[1] / cell) : round(input_box[3] / cell),
           round(input_box[0] / cell) : round(input_box[2] / cell)] = 10.0
    outputs = _fake_outputs([_cxcywh(input_box, size), _cxcywh(spill, size)], logits)
    (objects,) = postprocess(outputs, [scale], [(height, width)], score_threshold=0.5, with_masks=True, input_size=size)
    order = np.argsort(objects.query_index)
    boxes = objects.boxes_xyxy[order]
    assert np.allclose(boxes[0], original_box, atol=1e-3)
    assert np.allclose(boxes[1], [40 / scale, 30 / scale, width, height], atol=1e-3), "boxes are clamped to the image"
    assert objects.masks.shape == (2, height, width)
    truth = np.zeros((height, width), bool)
    truth[20:40, 10:50] = True
    predicted = objects.masks[order][0]
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou > 0.8, iou


def test_postprocess_drops_the_lower_scored_of_two_overlapping_boxes_only_with_nms():
    from objsearch.model.postprocess import postprocess

    size = 100
    boxes = [[10, 10, 50, 50], [12, 10, 50, 52], [60, 60, 90, 90], [30, 30, 70, 70]]  # pixels on the input
    outputs = _fake_outputs([_cxcywh(b, size) for b in boxes])
    outputs["objectness"] = torch.tensor([[[1.0, 3.0, 2.0, 0.5]]])  # query 1 outscores its duplicate, query 0
    (everything,) = postprocess(outputs, [1.0], [(size, size)], score_threshold=0.0, input_size=size)
    assert sorted(everything.query_index.tolist()) == [0, 1, 2, 3]
    (deduplicated,) = postprocess(outputs, [1.0], [(size, size)], score_threshold=0.0, input_size=size, nms_iou=0.7)
    # IoU(0, 1) = 0.86 > 0.7: query 0 goes. Query 3 overlaps query 1 by IoU 0.2 only: it stays.
    assert deduplicated.query_index.tolist() == [1, 2, 3], "kept best first, the weaker duplicate dropped"
    assert np.all(np.diff(deduplicated.scores) <= 0)
    (capped,) = postprocess(outputs, [1.0], [(size, size)], score_threshold=0.0, input_size=size, nms_iou=0.7,
                            max_objects=2)
    assert capped.query_index.tolist() == [1, 2], "the cap applies after NMS, so duplicates do not use it up"


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
