"""Overlapping phrases ("a red star" / "a small red star") in the alignment loss: the lexical rule, and
the loss ignoring such pairs in both directions, in the batch and from the phrase bank."""

from __future__ import annotations

import random

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
from training.phrase_bank import PhraseBank
from training.phrase_relations import content_words, overlapping

pytestmark = pytest.mark.usefixtures("one_thread")


def test_content_words_ignore_case_articles_and_punctuation():
    assert content_words("A small Red star.") == {"small", "red", "star"}
    assert content_words("the red star, left of the blue ring") == {"red", "star", "left", "of", "blue", "ring"}


def test_a_phrase_overlaps_the_phrases_whose_words_contain_its_own():
    rows = ["a red star", "a small red star"]
    columns = ["a red star", "a small red star", "the red star", "a small blue star", "star", "a red cross"]
    assert overlapping(rows, columns).tolist() == [
        [False, True, True, False, True, False],  # itself is not "overlapping": it is the positive
        [True, False, True, False, True, False],
    ]
    assert overlapping([], columns).shape == (0, len(columns))


def test_overlapping_matches_a_naive_pairwise_check():
    rng = random.Random(0)
    words = ["a", "the", "small", "red", "blue", "star", "ring", "left", "of"]
    phrases = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(60)]
    rows, columns = phrases[:25], phrases[15:]  # shared strings, repeats and article-only phrases included
    expected = [[r != c and (content_words(r) <= content_words(c) or content_words(c) <= content_words(r))
                 for c in columns] for r in rows]
    assert overlapping(rows, columns).tolist() == expected
    assert 0 < sum(map(sum, expected)) < len(rows) * len(columns)  # the case has both answers


def _masked_infonce(model, objects: torch.Tensor, texts: torch.Tensor, ignored: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE by hand, object i's phrase being column i of the first len(objects) columns;
    ``ignored`` (objects, columns) bool pairs are left out of both softmaxes."""
    logits = (model.logit_scale.exp().clamp(max=100) * objects @ texts.T).masked_fill(ignored, float("-inf"))
    diagonal = torch.arange(len(objects))
    object_to_text = F.cross_entropy(logits, diagonal)
    text_to_object = -logits[:, : len(objects)].T.log_softmax(dim=1)[diagonal, diagonal].mean()
    return (object_to_text + text_to_object) / 2


def test_overlapping_phrases_are_neither_positives_nor_negatives(model):
    phrases = ["a red star", "a small red star", "a large blue ring"]
    targets = [make_target(target_boxes(1, 80), phrases[:1], ("grounding",)),
               make_target(target_boxes(2, 81), phrases[1:], ("grounding",))]
    with torch.no_grad():
        texts = model.encode_text(phrases)
    embeddings = torch.zeros(2, 6, texts.shape[1])
    # The two red stars look alike, as they should: neither may be pushed from the other's phrase.
    embeddings[0, 0] = embeddings[1, 0] = F.normalize(texts[0] + texts[1], dim=-1)
    embeddings[1, 1] = texts[2]
    align = criterion_for(model)(fake_outputs(model, targets, embeddings=embeddings), targets,
                                 no_denoising(targets))["align"]
    objects = torch.stack([embeddings[0, 0], embeddings[1, 0], embeddings[1, 1]])
    ignored = torch.zeros(3, 3, dtype=torch.bool)
    ignored[0, 1] = ignored[1, 0] = True
    with torch.no_grad():
        expected = _masked_infonce(model, objects, texts, ignored)
        as_negatives = _masked_infonce(model, objects, texts, torch.zeros_like(ignored))
    torch.testing.assert_close(align.detach(), expected)
    assert as_negatives.item() > align.item() + 0.2, "the test would not tell the two rules apart"


def test_the_phrase_bank_skips_phrases_that_overlap_an_objects_own(model):
    phrases = ["a red star", "a large blue ring"]
    targets = [make_target(target_boxes(1, 82), phrases[:1], ("grounding",)),
               make_target(target_boxes(1, 83), phrases[1:], ("grounding",))]
    banked = ["a small red star", "a small orange star"]
    with torch.no_grad():
        texts = model.encode_text(phrases + banked)
    embeddings = torch.zeros(2, 6, texts.shape[1])
    embeddings[0, 0] = F.normalize(texts[0] + texts[2], dim=-1)
    embeddings[1, 0] = texts[1]
    bank = PhraseBank(8)
    bank.add("synthetic", banked)
    align = criterion_for(model, phrase_bank=bank)(fake_outputs(model, targets, embeddings=embeddings), targets,
                                                   no_denoising(targets))["align"]
    objects = embeddings[:, 0]
    ignored = torch.zeros(2, 4, dtype=torch.bool)
    ignored[0, 2] = True  # "a small red star" may describe the object labelled "a red star"
    with torch.no_grad():
        logits = model.logit_scale.exp().clamp(max=100) * objects @ texts.T
        object_to_text = F.cross_entropy(logits.masked_fill(ignored, float("-inf")), torch.tensor([0, 1]))
        text_to_object = -logits[:, :2].T.log_softmax(dim=1).diagonal().mean()  # the bank is object-to-text only
        expected = (object_to_text + text_to_object) / 2
        unmasked = (F.cross_entropy(logits, torch.tensor([0, 1])) + text_to_object) / 2
    torch.testing.assert_close(align.detach(), expected)
    assert unmasked.item() > align.item() + 0.1

