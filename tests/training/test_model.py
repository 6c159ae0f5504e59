"""ObjEmbed, the model: preset sizes, the forward contract, denoising isolation, box refinement and
caption decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from objsearch.model.config import preset
from objsearch.model.heads import CaptionHead
from objsearch.model.objembed import ObjEmbed, extra_query_mask
from objsearch.model.transformer import AnchorDecoder, inverse_sigmoid
from tests.training.small_model import (
    CATEGORIES,
    random_boxes,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------- presets


def _meta_parameter_counts(name: str, text_config: dict) -> dict[str, int]:
    """Build a preset on the meta device (no memory, no download) and count its parameters."""
    from objsearch.model.sentence_encoder import packaged_minilm_dir

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

    from objsearch.model.sentence_encoder import packaged_minilm_dir

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


def _caption_log_probability(head, embedding, ids, start, end, max_length) -> float:
    """Length-normalised log-probability of the caption ``ids`` (ended by ``end`` when shorter than
    ``max_length``), by teacher forcing: the score beam search ranks by."""
    sequence = [start, *ids] + ([end] if len(ids) < max_length else [])
    with torch.no_grad():
        log_probs = head(embedding[None], torch.tensor([sequence[:-1]])).log_softmax(-1)[0]
    total = sum(float(log_probs[i, token]) for i, token in enumerate(sequence[1:]))
    return total / (len(sequence) - 1) ** 0.5


def test_greedy_captions_take_the_likeliest_token_and_beam_captions_are_at_least_as_likely(model):
    """Three objects decoded together: each greedy caption is the one decoded alone from the full
    causal logits, token by token the likeliest, ending at the end token or at max_length; beam search
    (3 beams) finds captions no less likely than greedy's under the score it ranks by."""
    head, tokenizer = model.caption_head, model.text.tokenizer
    start, end, max_length = tokenizer.cls_token_id, tokenizer.sep_token_id, 5
    embeddings = F.normalize(torch.randn(3, model.config.embed_dim, generator=torch.Generator().manual_seed(7)), dim=-1)
    greedy = head.generate(embeddings, start, end, beam_size=1, max_length=max_length)
    for embedding, ids in zip(embeddings, greedy):
        expected = [start]
        with torch.no_grad():
            while len(expected) <= max_length:
                expected.append(int(head(embedding[None], torch.tensor([expected]))[0, -1].argmax()))
                if expected[-1] == end:
                    break
        assert ids == [t for t in expected[1:] if t != end]
    beams = head.generate(embeddings, start, end, beam_size=3, max_length=max_length)
    assert len(beams) == 3
    for embedding, beam_ids, greedy_ids in zip(embeddings, beams, greedy):
        assert len(beam_ids) <= max_length and end not in beam_ids
        beam_score = _caption_log_probability(head, embedding, beam_ids, start, end, max_length)
        assert beam_score >= _caption_log_probability(head, embedding, greedy_ids, start, end, max_length) - 1e-5


def test_greedy_decoding_recovers_an_overfitted_phrase(overfit_caption):
    head, embedding, tokenizer = overfit_caption
    ids = head.generate(embedding, tokenizer.cls_token_id, tokenizer.sep_token_id, beam_size=1)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == PHRASE


def test_beam_search_recovers_an_overfitted_phrase(overfit_caption):
    head, embedding, tokenizer = overfit_caption
    ids = head.generate(embedding, tokenizer.cls_token_id, tokenizer.sep_token_id, beam_size=3)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == PHRASE
