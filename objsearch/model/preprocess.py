"""Images into the model's square input: letterbox (keep aspect ratio, pad right/bottom)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PAD_VALUE = 114  # grey padding, as most detectors use


def letterbox(image: np.ndarray, size: int) -> tuple[torch.Tensor, float]:
    """(H, W, 3) uint8 RGB -> ((3, size, size) uint8 tensor, scale).

    The image is resized by ``scale = size / max(H, W)`` and padded right/bottom, so a model box in
    input pixels divided by ``scale`` is a box in the original image's pixels.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # owns writable memory
    if (new_h, new_w) != (height, width):
        resized = F.interpolate(tensor[None].float(), size=(new_h, new_w), mode="bilinear", antialias=True,
                                align_corners=False)[0]
        tensor = resized.round().clamp(0, 255).to(torch.uint8)
    out = torch.full((3, size, size), PAD_VALUE, dtype=torch.uint8)
    out[:, :new_h, :new_w] = tensor
    return out, scale


def letterbox_masks(masks: np.ndarray, scale: float, input_size: int, mask_size: int) -> torch.Tensor:
    """(N, H, W) {0, 1} masks -> (N, mask_size, mask_size) float area-averaged masks on the same
    letterboxed canvas as :func:`letterbox` (the mask grid covers the whole square input)."""
    count, height, width = masks.shape
    out = torch.zeros(count, mask_size, mask_size)
    if count == 0:
        return out
    factor = scale * mask_size / input_size
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    resized = F.interpolate(torch.from_numpy(masks).float()[:, None], size=(new_h, new_w), mode="area")[:, 0]
    out[:, : min(new_h, mask_size), : min(new_w, mask_size)] = resized[:, :mask_size, :mask_size]
    return out
