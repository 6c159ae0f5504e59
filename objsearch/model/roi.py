"""RoIAlign as one batched ``grid_sample``: the embedding head's box pooling.

It computes what ``torchvision.ops.roi_align(..., aligned=True, sampling_ratio=s)`` computes for
boxes inside the feature map (a test checks values and gradients against it), but samples every box
of an image in one ``grid_sample`` call. On CPU its backward is about 2x faster than torchvision's
(measured in session 14: 512 boxes on a (16, 192, 16, 16) map, forward + backward 50 ms against
95 ms at s = 2), which is ~6 % of a tiny-preset training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def roi_align_grid(feature_map: torch.Tensor, boxes: torch.Tensor, output_size: int,
                   sampling_ratio: int = 2) -> torch.Tensor:
    """Average of bilinear samples on a regular grid inside each box.

    feature_map:    (B, C, H, W).
    boxes:          (B, N, 4) ``x0, y0, x1, y1`` in feature-map cells (0..W, 0..H), every image the
                    same number N of boxes; coordinates outside the map read its edge values, as
                    torchvision's RoIAlign does within one cell of the border.
    output_size:    side S of the pooled grid.
    sampling_ratio: samples per output cell along each axis.
    Returns (B * N, C, S, S), boxes of image 0 first (torchvision's order for a list of boxes).
    """
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    batch, channels, height, width = feature_map.shape
    count = boxes.shape[1]
    side = output_size * sampling_ratio
    # Sample centres as fractions of the box, then grid_sample's normalised coordinates, where
    # align_corners=False puts pixel centres at (i + 0.5) / W: RoIAlign's aligned=True half-pixel shift.
    fractions = (torch.arange(side, device=boxes.device, dtype=boxes.dtype) + 0.5) / side
    x0, y0, x1, y1 = boxes.unbind(-1)  # (B, N) each
    xs = (x0[..., None] + (x1 - x0)[..., None] * fractions) * (2 / width) - 1  # (B, N, side)
    ys = (y0[..., None] + (y1 - y0)[..., None] * fractions) * (2 / height) - 1
    grid = torch.stack(torch.broadcast_tensors(xs[:, :, None, :], ys[:, :, :, None]), dim=-1)  # (B, N, side, side, 2)
    samples = F.grid_sample(feature_map, grid.reshape(batch, count * side, side, 2).to(feature_map.dtype),
                            mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, N*side, side)
    samples = samples.view(batch, channels, count, side, side).transpose(1, 2).reshape(batch * count, channels, side, side)
    return F.avg_pool2d(samples, sampling_ratio)
