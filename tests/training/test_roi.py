"""The embedding head's RoIAlign (one grid_sample for the whole batch) against torchvision's RoIAlign."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from objsearch.model.roi import roi_align_grid


def random_boxes(generator: torch.Generator, batch: int, count: int, side: int) -> torch.Tensor:
    """(B, N, 4) x0, y0, x1, y1 in cells within a side x side map, a few touching its border."""
    centre = torch.rand(batch, count, 2, generator=generator) * side
    size = torch.rand(batch, count, 2, generator=generator) * side * 0.8 + 0.1
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1).clamp(0, side)
    boxes[0, 0] = torch.tensor([0.0, 0.0, side, side])  # the whole map
    boxes[0, 1] = torch.tensor([3.0, 2.0, 3.0, 2.0])  # zero-sized: every sample at one point
    return boxes


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_values_and_gradients_match_torchvision_roi_align(sampling_ratio):
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(generator, batch=3, count=7, side=10)
    feature_map = torch.randn(3, 5, 10, 12, generator=generator)  # not square: W and H kept apart
    boxes[..., 0::2] *= 12 / 10
    ours_map = feature_map.clone().requires_grad_()
    reference_map = feature_map.clone().requires_grad_()

    ours = roi_align_grid(ours_map, boxes, output_size=4, sampling_ratio=sampling_ratio)
    reference = roi_align(reference_map, list(boxes.unbind(0)), output_size=4, aligned=True,
                          sampling_ratio=sampling_ratio)
    assert ours.shape == reference.shape == (21, 5, 4, 4)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)

    weights = torch.randn(reference.shape, generator=generator)  # a gradient that differs per output
    (ours * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(ours_map.grad, reference_map.grad, atol=1e-5, rtol=1e-5)


def test_a_box_is_pooled_from_its_own_image_only():
    feature_map = torch.zeros(2, 1, 8, 8)
    feature_map[1] = 1.0
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0]], [[2.0, 2.0, 4.0, 4.0]]])
    pooled = roi_align_grid(feature_map, boxes, output_size=2)
    assert pooled[0].eq(0).all() and pooled[1].eq(1).all()


def test_sampling_ratio_below_one_is_refused():
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_grid(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4), output_size=2, sampling_ratio=0)
