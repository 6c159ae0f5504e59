"""DN-DETR query denoising: noised copies of the ground-truth boxes as extra decoder queries.

Each extra query must reconstruct the box it was noised from, which gives the decoder a dense,
matching-free box-regression signal and speeds up DETR's convergence (Li et al., 2022).
"""

from __future__ import annotations

import torch


def build_denoising_queries(target_boxes: list[torch.Tensor], groups: int, noise: float,
                            generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]]]:
    """target_boxes: per image (n_i, 4) cxcywh in [0, 1].

    Returns (extra_boxes (B, groups * max_n, 4) or None when there are no boxes, pairs): pairs[b] =
    (extra query indices, target indices) of image b. Slot g * max_n + j holds group g's noised copy
    of box j; slots past n_i are padding (a random box, no loss).
    Noise: the centre moves by up to ``noise`` * half the size, width and height scale by up to
    1 +- ``noise`` (uniform).
    """
    max_n = max((len(b) for b in target_boxes), default=0)
    if groups <= 0 or max_n == 0:
        return None, [(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)) for _ in target_boxes]
    batch = len(target_boxes)
    extra = torch.rand(batch, groups * max_n, 4, generator=generator) * 0.5 + 0.25
    pairs = []
    for b, boxes in enumerate(target_boxes):
        n = len(boxes)
        queries, targets = [], []
        for g in range(groups):
            shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * noise * boxes[:, 2:] / 2
            scale = 1 + (torch.rand(n, 2, generator=generator) * 2 - 1) * noise
            noised = torch.cat([boxes[:, :2] + shift, boxes[:, 2:] * scale], dim=-1).clamp(1e-3, 1 - 1e-3)
            extra[b, g * max_n : g * max_n + n] = noised
            queries.append(torch.arange(g * max_n, g * max_n + n))
            targets.append(torch.arange(n))
        pairs.append((torch.cat(queries), torch.cat(targets)))
    return extra, pairs
