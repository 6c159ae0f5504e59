"""Inputs for SetCriterion tests without running the model: targets, leaf tensors shaped like
ObjEmbed's outputs, and a criterion over chosen tasks (shared by test_training and test_alignment)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tests.training.small_model import CATEGORIES, random_boxes
from training.config import TASK_TERMS
from training.criterion import SetCriterion
from training.data.collate import Target
from training.matcher import HungarianMatcher


def target_boxes(count: int, seed: int) -> torch.Tensor:
    """(count, 4) valid cxcywh boxes in [0, 1]: one image's targets."""
    return random_boxes(1, count, seed)[0]


def make_target(boxes: torch.Tensor, phrases: list[str], tasks, labels=None, with_masks=False, mask_size=16) -> Target:
    n = len(boxes)
    masks = None
    if with_masks:
        masks = torch.zeros(n, mask_size, mask_size)
        for i, (cx, cy, w, h) in enumerate(boxes.tolist()):
            x1, x2 = int((cx - w / 2) * mask_size), math.ceil((cx + w / 2) * mask_size)
            y1, y2 = int((cy - h / 2) * mask_size), math.ceil((cy + h / 2) * mask_size)
            masks[i, y1:y2, x1:x2] = 1.0
    return Target(
        boxes=boxes, labels=torch.as_tensor(labels if labels is not None else [i % len(CATEGORIES) for i in range(n)]),
        masks=masks, phrases=phrases, category_names=list(CATEGORIES), tasks=frozenset(tasks), source="synthetic",
        image_id=0, scale=1.0)


def fake_outputs(model, targets: list[Target], layers: int = 2, queries: int = 6, offset: float = 0.0,
                 embeddings: torch.Tensor | None = None) -> dict:
    """Leaf tensors shaped like ObjEmbed's outputs. Query i of image b predicts target i's box
    (cx moved by ``offset``); the remaining queries sit in a far corner, so the matching is query i <-> target i."""
    gen = torch.Generator().manual_seed(5)
    batch, E, M = len(targets), model.config.embed_dim, model.config.mask_size
    boxes = torch.tensor([0.9, 0.9, 0.05, 0.05]).repeat(batch, queries, 1)
    for b, target in enumerate(targets):
        boxes[b, : len(target.boxes)] = target.boxes + torch.tensor([offset, 0, 0, 0])
    if embeddings is None:
        embeddings = F.normalize(torch.randn(batch, queries, E, generator=gen), dim=-1)
    return {
        "boxes": boxes[None].repeat(layers, 1, 1, 1).requires_grad_(),
        "objectness": torch.randn(layers, batch, queries, generator=gen).requires_grad_(),
        "quality": torch.randn(batch, queries, generator=gen).requires_grad_(),
        "embeddings": embeddings.clone().requires_grad_(),
        "mask_logits": torch.randn(batch, queries, M, M, generator=gen).requires_grad_(),
        "class_logits": torch.randn(batch, queries, len(CATEGORIES), generator=gen).requires_grad_(),
    }


def no_denoising(targets):
    empty = torch.zeros(0, dtype=torch.long)
    return [(empty, empty) for _ in targets]


def criterion_for(model, tasks=tuple(TASK_TERMS), phrase_bank=None) -> SetCriterion:
    return SetCriterion(model, HungarianMatcher(), list(tasks), category_weights=None, phrase_bank=phrase_bank)
