"""Differentiable box math for the losses (torch); the store's numpy box math is objsearch.box_ops."""

from __future__ import annotations

import torch
from torchvision.ops import generalized_box_iou as _giou_xyxy

from objsearch.model.heads import cxcywh_to_xyxy  # noqa: F401  (the model's one torch conversion)


def generalized_box_iou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) xyxy -> (N, M) GIoU (torchvision's, after making boxes well-formed)."""
    return _giou_xyxy(_well_formed(a_xyxy), _well_formed(b_xyxy))


def paired_iou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (N, 4) xyxy -> (N,) IoU of each pair."""
    a, b = _well_formed(a_xyxy), _well_formed(b_xyxy)
    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


def _well_formed(boxes: torch.Tensor) -> torch.Tensor:
    # Early in training a predicted width can round to ~0; keep x2 >= x1 so GIoU stays defined.
    x1y1 = boxes[..., :2]
    x2y2 = torch.maximum(boxes[..., 2:], x1y1 + 1e-6)
    return torch.cat([x1y1, x2y2], dim=-1)
