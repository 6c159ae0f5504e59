"""GrabCut masks of the bundled embedder and the colours read from them."""

from __future__ import annotations

import numpy as np
import pytest

from objsearch.embedders.colour import dominant_colour
from objsearch.box_ops import box_iou
from objsearch.embedders.masks import grabcut_mask, mask_iou, rle, subject_box


def _scene(centre, radii, size=(300, 400)):
    """A red ellipse (cut by the photo's edge where it crosses it) on a grey, slightly noisy
    background -> (image, its pixels, its box)."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 6, (*size, 3)), 0, 255).astype(np.uint8)
    ys, xs = np.mgrid[: size[0], : size[1]]
    disc = ((xs - centre[0]) / radii[0]) ** 2 + ((ys - centre[1]) / radii[1]) ** 2 <= 1
    image[disc] = (210, 30, 30)
    rows, cols = np.nonzero(disc)
    return image, disc, (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


@pytest.mark.parametrize("centre, radii", [((190, 150), (70, 70)), ((20, 150), (80, 90)), ((380, 290), (90, 80))])
def test_the_mask_is_the_object_not_its_box_even_at_the_image_edge(centre, radii):
    image, disc, box = _scene(centre, radii)
    mask = grabcut_mask(image, box)
    assert mask_iou(mask, disc) >= 0.9
    boxed = np.zeros_like(disc)
    boxed[box[1]:box[3], box[0]:box[2]] = True
    assert mask_iou(mask, disc) > mask_iou(boxed, disc) + 0.05  # a better outline than the box
    assert not mask[~boxed].any()  # nothing outside the box
    for column in (0, -1):  # where the object meets the photo's edge, so does its mask
        if disc[:, column].any():
            assert mask[disc[:, column], column].mean() > 0.9


def test_degenerate_boxes_give_a_mask_without_failing():
    image, _, box = _scene((190, 150), (70, 70))
    assert grabcut_mask(image, (0, 0, 400, 300)).any()  # the whole photo
    assert grabcut_mask(image, (10, 10, 11, 11)).sum() == 1  # one pixel
    flat = np.full((50, 50, 3), 90, np.uint8)
    assert grabcut_mask(flat, (10, 10, 40, 40)).sum() == 900  # nothing to cut: the box
    assert rle(grabcut_mask(image, box))["size"] == [300, 400]


def test_colour_comes_from_the_mask_and_a_too_thin_mask_falls_back_to_the_box():
    crop = np.full((100, 100, 3), 240, np.uint8)
    crop[40:60, 40:60] = (30, 60, 220)
    inside = np.zeros((100, 100), bool)
    inside[40:60, 40:60] = True
    assert dominant_colour(crop, inside) == "blue"
    assert dominant_colour(crop, ~inside) == "white"
    thin = np.zeros((200, 200), bool)
    thin[1::10, :] = True  # no pixel on the subsampling grid (every 4th row from 0)
    assert dominant_colour(np.full((200, 200, 3), 240, np.uint8), thin) == "white"


def _flower_on_leaves(size=(300, 400)):
    """An orange disc on a dark green, noisy background (a flower on leaves): (image, disc)."""
    rng = np.random.default_rng(1)
    image = np.stack([rng.normal(mean, 12, size) for mean in (30, 90, 40)], axis=-1).clip(0, 255).astype(np.uint8)
    ys, xs = np.mgrid[: size[0], : size[1]]
    disc = (xs - 170) ** 2 + (ys - 140) ** 2 <= 75**2
    image[disc] = (245, 150, 70)
    return image, disc


def test_the_subject_box_is_the_thing_that_stands_out_and_nothing_when_nothing_does():
    image, disc = _flower_on_leaves()
    box = subject_box(image)
    rows, cols = np.nonzero(disc)
    truth = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
    assert box is not None and box_iou(box[None], truth)[0, 0] >= 0.85
    rng = np.random.default_rng(2)
    assert subject_box(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) is None  # noise: no subject
    assert subject_box(np.full((300, 400, 3), 90, np.uint8)) is None  # flat: no subject
