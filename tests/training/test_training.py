"""Training losses: the Hungarian matcher, the criterion's terms (the phrase bank's negatives
included) and the loss weights. Config, schedule and real runs: ``test_training_runs.py``."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from tests.training.criterion_inputs import (
    criterion_for,
    fake_outputs,
    make_target,
    no_denoising,
    target_boxes,
)
from training.config import LossWeights
from training.criterion import task_losses
from training.matcher import HungarianMatcher
from training.phrase_bank import PhraseBank

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_TERMS = {"objectness", "box_l1", "giou", "quality", "align", "zeroshot", "mask_bce", "mask_dice", "caption", "classify"}
SYNTHETIC_TASKS = frozenset({"detection", "mask", "grounding", "caption", "classification"})


# ---------------------------------------------------------------------------------------- matcher


def test_matcher_gives_the_same_matches_batched_and_one_image_at_a_time():
    gen = torch.Generator().manual_seed(0)
    batch, queries = 4, 7
    logits = torch.randn(batch, queries, generator=gen)
    boxes = torch.stack([target_boxes(queries, seed=10 + b) for b in range(batch)])
    targets = [target_boxes(3, 20), torch.zeros(0, 4), target_boxes(5, 21), target_boxes(9, 22)]
    matcher = HungarianMatcher()
    batched = matcher(logits, boxes, targets)
    assert len(batched) == batch
    for b in range(batch):
        (single,) = matcher(logits[b : b + 1], boxes[b : b + 1], [targets[b]])
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
        rows, cols = batched[b]
        k = min(queries, len(targets[b]))
        assert len(rows) == len(cols) == k  # 0 for the empty image, all 7 queries for 9 targets
        assert len(set(rows.tolist())) == k and len(set(cols.tolist())) == k
        assert rows.dtype == cols.dtype == torch.long


def test_matcher_handles_an_empty_batch_of_targets():
    matcher = HungarianMatcher()
    matches = matcher(torch.zeros(2, 5), torch.stack([target_boxes(5, 1), target_boxes(5, 2)]), [torch.zeros(0, 4)] * 2)
    assert all(len(rows) == len(cols) == 0 for rows, cols in matches)


def test_matcher_matches_a_perfect_prediction_to_itself():
    targets = target_boxes(4, seed=3)
    boxes = target_boxes(6, seed=4)
    owner = {2: 0, 5: 1, 0: 2, 3: 3}  # query -> the target it predicts exactly
    for query, target in owner.items():
        boxes[query] = targets[target]
    ((rows, cols),) = HungarianMatcher()(torch.zeros(1, 6), boxes[None], [targets])
    assert dict(zip(rows.tolist(), cols.tolist())) == owner


# ---------------------------------------------------------------------------------------- criterion


def test_criterion_returns_every_term_unweighted_and_finite(model):
    targets = [
        make_target(target_boxes(2, 30), ["a small red star", "a large blue ring"], SYNTHETIC_TASKS, with_masks=True),
        make_target(target_boxes(1, 31), ["a medium green square"], SYNTHETIC_TASKS, with_masks=True),
    ]
    offset, layers = 0.01, 2
    outputs = fake_outputs(model, targets, layers=layers, offset=offset)
    terms = criterion_for(model)(outputs, targets, no_denoising(targets))
    assert set(terms) == ALL_TERMS
    for name, value in terms.items():
        assert value.shape == () and torch.isfinite(value), name
    # Unweighted and summed over the decoder layers: L1 = layers * (sum of |offsets|) / number of boxes.
    assert terms["box_l1"].item() == pytest.approx(layers * offset, rel=1e-4)
    # The boxes are nearly exact, so GIoU is nearly 1 in every layer.
    assert 0 < terms["giou"].item() < layers * 0.1


def test_caption_loss_is_the_token_cross_entropy_of_the_full_logits(model):
    # Phrases of different lengths, so the shorter ones are padded (padding is scored nowhere).
    targets = [make_target(target_boxes(2, 32), ["a small red star", "the large light blue ring on the left"],
                           SYNTHETIC_TASKS)]
    outputs = fake_outputs(model, targets)
    criterion = criterion_for(model, tasks=("detection", "caption"))
    objects = criterion.matched_objects(outputs, targets, [(torch.arange(2), torch.arange(2))], no_denoising(targets))
    tokenizer = model.text.tokenizer
    ids = tokenizer(targets[0].phrases, padding=True, return_tensors="pt")["input_ids"]
    gold = ids[:, 1:].masked_fill(ids[:, 1:] == tokenizer.pad_token_id, -100)
    assert (gold == -100).any()
    full = model.caption_head(objects.embeddings, ids[:, :-1])  # (N, T, V)
    expected = F.cross_entropy(full.flatten(0, 1), gold.flatten(), ignore_index=-100)
    assert criterion.caption_term(objects, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_caption_head_learns_the_object_captions_when_a_target_has_them(model):
    phrases, captions = ["a red star", "a blue ring"], ["a small red star", "a large blue ring"]
    drawn = dataclasses.replace(make_target(target_boxes(2, 33), phrases, SYNTHETIC_TASKS), object_captions=captions)
    full = make_target(target_boxes(2, 33), captions, SYNTHETIC_TASKS)
    outputs = fake_outputs(model, [drawn])
    criterion = criterion_for(model, tasks=("detection", "caption"))
    pairs = [(torch.arange(2), torch.arange(2))]
    objects = criterion.matched_objects(outputs, [drawn], pairs, no_denoising([drawn]))
    with_captions = criterion.caption_term(objects, [drawn]).item()
    assert with_captions == pytest.approx(criterion.caption_term(objects, [full]).item(), rel=1e-6)
    assert with_captions != pytest.approx(criterion.caption_term(objects, [dataclasses.replace(drawn, object_captions=[])]).item())


def test_a_grounding_only_sample_contributes_no_objectness(model):
    criterion = criterion_for(model)
    grounding = make_target(target_boxes(1, 40), ["the red star left of the blue ring"], ("grounding",))
    alone = criterion(fake_outputs(model, [grounding]), [grounding], no_denoising([grounding]))
    assert "objectness" not in alone
    assert {"align", "box_l1", "giou"} <= set(alone)

    detection = make_target(target_boxes(2, 41), ["a small red star", "a large blue ring"], SYNTHETIC_TASKS, with_masks=True)
    batch = [detection, grounding]
    outputs = fake_outputs(model, batch)
    terms = criterion(outputs, batch, no_denoising(batch))
    terms["objectness"].backward()
    grad = outputs["objectness"].grad  # (L, B, Q)
    assert grad[:, 0].abs().sum() > 0
    assert not grad[:, 1].any(), "the RefCOCO-style image's unannotated objects were pushed to 'no object'"


def _expected_align(model, object_embeddings: torch.Tensor, columns: list[int], texts: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE by hand: objects -> their phrase column; each phrase -> all its objects."""
    logits = model.logit_scale.exp().clamp(max=100) * object_embeddings @ texts.T
    object_to_text = F.cross_entropy(logits, torch.tensor(columns))
    log_prob = logits.T.log_softmax(dim=1)
    per_phrase = [-torch.logsumexp(log_prob[p, [i for i, c in enumerate(columns) if c == p]], 0) for p in range(len(texts))]
    return (object_to_text + torch.stack(per_phrase).mean()) / 2


def test_identical_phrases_in_two_images_are_not_each_others_negatives(model):
    vocabulary = ["a small red star", "a large blue ring"]
    targets = [
        make_target(target_boxes(2, 50), vocabulary, ("grounding",)),
        make_target(target_boxes(1, 51), ["a small red star"], ("grounding",)),
    ]
    with torch.no_grad():
        texts = model.encode_text(vocabulary)
    embeddings = F.normalize(torch.randn(2, 6, texts.shape[1], generator=torch.Generator().manual_seed(9)), dim=-1)
    embeddings[0, 0], embeddings[0, 1], embeddings[1, 0] = texts[0], texts[1], texts[0]  # each object = its phrase
    outputs = fake_outputs(model, targets, embeddings=embeddings)
    align = criterion_for(model)(outputs, targets, no_denoising(targets))["align"]
    objects = torch.stack([texts[0], texts[1], texts[0]])
    with torch.no_grad():
        expected = _expected_align(model, objects, [0, 1, 0], texts)
        # What it would be if the second "a small red star" were its own column, a negative of the first.
        as_negatives = _expected_align(model, objects, [0, 1, 2], torch.stack([texts[0], texts[1], texts[0]]))
    assert align.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert as_negatives.item() > math.log(2) / 2 > align.item()


def test_phrases_of_other_images_are_negatives(model):
    phrases = ["a small red star", "a large blue ring"]
    targets = [make_target(target_boxes(1, 60), phrases[:1], ("grounding",)),
               make_target(target_boxes(1, 61), phrases[1:], ("grounding",))]
    with torch.no_grad():
        texts = model.encode_text(phrases)
    aligned = torch.zeros(2, 6, texts.shape[1])
    aligned[0, 0], aligned[1, 0] = texts[0], texts[1]
    swapped = aligned.clone()
    swapped[0, 0], swapped[1, 0] = texts[1], texts[0]  # each object looks like the other image's phrase
    criterion = criterion_for(model)
    good = criterion(fake_outputs(model, targets, embeddings=aligned), targets, no_denoising(targets))["align"]
    bad = criterion(fake_outputs(model, targets, embeddings=swapped), targets, no_denoising(targets))["align"]
    assert bad.item() > math.log(2) > good.item()


def test_phrase_bank_remembers_the_latest_distinct_phrases_of_each_source():
    bank = PhraseBank(capacity=3)
    bank.add("captions", ["a red star", "a blue ring", "a red star"])
    bank.add("refs", ["the star left of the ring"])
    assert bank.negatives("captions", exclude=set()) == ["a blue ring", "a red star"], "distinct, oldest first"
    bank.add("captions", ["a green cross", "a blue ring", "a pink heart"])  # "a blue ring" becomes the newest
    assert bank.negatives("captions", exclude=set()) == ["a green cross", "a blue ring", "a pink heart"]
    assert bank.negatives("captions", exclude={"a blue ring"}) == ["a green cross", "a pink heart"]
    assert bank.negatives("refs", exclude=set()) == ["the star left of the ring"], "sources do not mix"
    assert bank.negatives("unseen", exclude=set()) == [] and len(bank) == 4
    restored = PhraseBank(capacity=3)
    restored.load_state_dict(bank.state_dict())
    assert restored.state_dict() == bank.state_dict(), "a resumed run gets the bank back"
    with pytest.raises(ValueError, match="capacity"):
        PhraseBank(capacity=-1)


def test_the_phrase_bank_adds_its_own_sources_phrases_as_negatives(model):
    """With a bank, an object is also contrasted with earlier batches' phrases of its source, and only
    in the object-to-text direction; another source's remembered phrases never reach it."""
    targets = [make_target(target_boxes(1, 70), ["a small red star"], ("grounding",)),
               make_target(target_boxes(1, 71), ["a large blue ring"], ("grounding",))]
    hard_negative = "a small orange star"
    with torch.no_grad():
        texts = model.encode_text(["a small red star", "a large blue ring", hard_negative])
    embeddings = torch.zeros(2, 6, texts.shape[1])
    embeddings[0, 0] = F.normalize(texts[0] + texts[2], dim=-1)  # the object sits between its phrase and the negative
    embeddings[1, 0] = texts[1]
    outputs = fake_outputs(model, targets, embeddings=embeddings)
    objects = embeddings[:, 0]

    def align(bank):
        return criterion_for(model, phrase_bank=bank)(outputs, targets, no_denoising(targets))["align"].item()

    in_batch = align(None)
    same_source = PhraseBank(8)
    same_source.add("synthetic", [hard_negative, "a small red star"])  # its own phrase is never its negative
    other_source = PhraseBank(8)
    other_source.add("refs", [hard_negative])
    with torch.no_grad():
        scale = model.logit_scale.exp().clamp(max=100)
        with_negative = scale * objects @ texts.T  # (2 objects, 3 texts); the bank column is the third
        object_to_text = F.cross_entropy(with_negative, torch.tensor([0, 1]))
        text_to_object = _expected_align(model, objects, [0, 1], texts[:2]) * 2 - F.cross_entropy(
            with_negative[:, :2], torch.tensor([0, 1]))
        expected = (object_to_text + text_to_object) / 2
    assert align(same_source) == pytest.approx(expected.item(), rel=1e-4)
    assert align(same_source) > in_batch + 0.1
    assert align(other_source) == pytest.approx(in_batch, rel=1e-6)
    assert same_source.negatives("synthetic", set()) == [hard_negative, "a small red star", "a large blue ring"], \
        "each step's phrases join the bank after it is read"


def test_an_object_meets_only_its_own_sources_bank(model):
    caption_target = make_target(target_boxes(1, 72), ["a small red star"], ("grounding",))
    refs_target = dataclasses.replace(make_target(target_boxes(1, 73), ["the ring on the left"], ("grounding",)),
                                      source="refs")
    targets = [caption_target, refs_target]
    hard_negative = "a small orange star"
    with torch.no_grad():
        texts = model.encode_text(["a small red star", "the ring on the left", hard_negative])
    embeddings = torch.zeros(2, 6, texts.shape[1])
    embeddings[0, 0] = F.normalize(texts[0] + texts[2], dim=-1)
    embeddings[1, 0] = F.normalize(texts[1] + texts[2], dim=-1)  # close to the negative too, but of another source
    outputs = fake_outputs(model, targets, embeddings=embeddings)
    bank = PhraseBank(8)
    bank.add("synthetic", [hard_negative])
    align = criterion_for(model, phrase_bank=bank)(outputs, targets, no_denoising(targets))["align"]
    objects = embeddings[:, 0]
    with torch.no_grad():
        logits = model.logit_scale.exp().clamp(max=100) * objects @ texts.T  # (2, 3)
        object_to_text = (F.cross_entropy(logits[:1], torch.tensor([0]))  # the caption object sees the bank
                          + F.cross_entropy(logits[1:, :2], torch.tensor([1]))) / 2  # the refs object does not
        text_to_object = _expected_align(model, objects, [0, 1], texts[:2]) * 2 - F.cross_entropy(
            logits[:, :2], torch.tensor([0, 1]))
    assert align.item() == pytest.approx(((object_to_text + text_to_object) / 2).item(), rel=1e-4)


def test_task_losses_apply_the_weights_exactly_once():
    terms = {name: torch.tensor(float(i + 1)) for i, name in enumerate(sorted(ALL_TERMS - {"caption"}))}
    weights = LossWeights(objectness=2.0, box_l1=5.0, giou=3.0, quality=0.5, align=7.0, zeroshot=0.25,
                          mask_bce=11.0, mask_dice=13.0, caption=17.0, classify=19.0)
    tasks = task_losses(terms, weights)
    t = {k: v.item() for k, v in terms.items()}
    assert set(tasks) == {"detection", "grounding", "mask", "classification"}  # no caption term, no caption task
    assert tasks["detection"].item() == pytest.approx(2 * t["objectness"] + 5 * t["box_l1"] + 3 * t["giou"] + 0.5 * t["quality"])
    assert tasks["grounding"].item() == pytest.approx(7 * t["align"] + 0.25 * t["zeroshot"])
    assert tasks["mask"].item() == pytest.approx(11 * t["mask_bce"] + 13 * t["mask_dice"])
    assert tasks["classification"].item() == pytest.approx(19 * t["classify"])
    partial = task_losses({"box_l1": torch.tensor(2.0)}, weights)
    assert {k: v.item() for k, v in partial.items()} == {"detection": 10.0}
