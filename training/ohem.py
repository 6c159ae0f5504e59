"""Online hard-example mining that protects rare (tail) categories.

Per matched object the criterion has a loss value and a category id; OHEM keeps the hardest objects
and drops the easy ones, but an easy object of a rare category is still kept, and up-weighted, because
dropping it would starve the categories that have the least data::

    cat_w = tail_category_weights(train_instance_counts)            # once, from the training set
    w = ohem_weights(per_object_loss, category_ids, cat_w)           # each step, no gradient
    loss = (w * per_object_loss).sum() / w.sum().clamp_min(1)        # mean over the kept objects
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def tail_category_weights(category_counts: np.ndarray | Tensor, power: float = 0.5, max_weight: float = 5.0) -> Tensor:
    """A weight per category that is > 1 exactly for the tail (rarer than the median category).

    category_counts: (C,) training-set instance count per category (>= 0).
    power:           how fast the weight grows with rarity; 0.5 (square root, as in LVIS repeat-factor
                     sampling) is milder than inverse frequency (1.0); 0 disables up-weighting.
    max_weight:      cap (>= 1), so one category with a handful of instances cannot dominate.
    Returns (C,) float32: ``clip((median / count) ** power, 1, max_weight)``.

    The median is taken over categories with a positive count, so categories absent from the
    training set (count 0) do not drag it down; those get ``max_weight``. Categories at or above the
    median get exactly 1 ("frequent"); half of the seen categories below it count as tail.
    """
    counts = torch.as_tensor(np.asarray(category_counts), dtype=torch.float64).reshape(-1)
    if power < 0 or not math.isfinite(power):
        raise ValueError(f"power must be a finite number >= 0, got {power}")
    if max_weight < 1 or not math.isfinite(max_weight):
        raise ValueError(f"max_weight must be a finite number >= 1, got {max_weight}")
    if bool((counts < 0).any()) or not bool(torch.isfinite(counts).all()):
        raise ValueError("category_counts must be finite and >= 0")
    weights = torch.full_like(counts, float(max_weight))
    seen = counts > 0
    if bool(seen.any()):
        median = counts[seen].quantile(0.5)  # a true median (the average of the middle two if even)
        weights[seen] = (median / counts[seen]).pow(power).clamp(1.0, max_weight)
    else:
        log.warning("tail_category_weights: every category has count 0; all get max_weight=%s", max_weight)
    return weights.to(torch.float32)


def ohem_weights(
    per_example_loss: Tensor,
    category_ids: Tensor,
    category_weights: Tensor,
    keep_fraction: float = 0.7,
    min_keep: int = 1,
) -> Tensor:
    """Per-example loss weights: keep the hardest examples and every tail example.

    per_example_loss: (N,) loss per matched object (any float dtype; only its order is used).
    category_ids:     (N,) int, index into ``category_weights``.
    category_weights: (C,) > 0, e.g. from :func:`tail_category_weights`; a weight > 1 marks a tail
                      category.
    keep_fraction:    in (0, 1]; the ``max(min_keep, ceil(keep_fraction * N))`` largest losses are kept
                      (capped at N; the ceil forgives float error: 0.28 * 25 = 7.000000000000001
                      keeps 7). Ties are broken by position: the earlier example wins.
    min_keep:         >= 0, a floor on the number of hard examples kept.
    Returns (N,) weights in the loss's dtype and device, detached: 0 for dropped examples and
    ``category_weight * n_kept / sum(kept category weights)`` for kept ones, so the weights sum to the
    number of examples kept (tail extras included) and the loss scale does not jump.
    """
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if min_keep < 0:
        raise ValueError(f"min_keep must be >= 0, got {min_keep}")
    if per_example_loss.ndim != 1 or category_ids.shape != per_example_loss.shape:
        raise ValueError(
            f"need (N,) losses and (N,) category ids, got {tuple(per_example_loss.shape)} and {tuple(category_ids.shape)}"
        )
    with torch.no_grad():
        loss = per_example_loss.detach()
        n = loss.numel()
        if n == 0:
            return torch.zeros_like(loss)
        cat_w = category_weights.detach().to(device=loss.device)
        ids = category_ids.to(device=loss.device, dtype=torch.long)
        # A sync point: host-side checks so a bad id fails with a message, not a device assert.
        if bool((ids < 0).any() or (ids >= len(cat_w)).any()):
            raise ValueError(f"category_ids must be in [0, {len(cat_w)}), got {ids.min().item()}..{ids.max().item()}")
        if not bool((cat_w > 0).all()):
            raise ValueError("category_weights must be > 0")
        example_w = cat_w[ids].to(loss.dtype)

        n_hard = min(n, max(min_keep, math.ceil(keep_fraction * n - 1e-9)))
        order = torch.sort(loss, descending=True, stable=True).indices
        keep = torch.zeros(n, dtype=torch.bool, device=loss.device)
        keep[order[:n_hard]] = True
        keep |= example_w > 1  # tail categories are always kept

        weights = torch.where(keep, example_w, torch.zeros_like(example_w))
        n_kept = keep.sum()
        return weights * (n_kept / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny))
