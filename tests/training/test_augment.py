"""Horizontal-flip augmentation: geometry, phrases, and the deterministic flip stream."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.config import load_config
from training.data.augment import (
    FlipBatchSampler,
    FlippingDataset,
    horizontal_flip,
    swap_left_right,
)
from training.data.mixing import MixedBatchSampler
from training.data.sample import Sample


@pytest.mark.parametrize("text, expected", [
    ("the red star left of the blue ring", "the red star right of the blue ring"),
    ("from left to right: a red star and a blue ring", "from right to left: a red star and a blue ring"),
    ("Leftmost cat, RIGHT dog", "Rightmost cat, LEFT dog"),
    ("the rightmost of the leftover boxes, copyright", "the leftmost of the leftover boxes, copyright"),
    ("a small red star", "a small red star"),
])
def test_swap_left_right(text, expected):
    assert swap_left_right(text) == expected


def _sample() -> Sample:
    """A 10 x 6 (W x H) image: a red block at x 1..3 (left) and a blue one at x 7..8 (right)."""
    pixels = np.zeros((6, 10, 3), np.uint8)
    masks = np.zeros((2, 6, 10), np.uint8)
    pixels[1:4, 1:4] = (255, 0, 0)
    masks[0, 1:4, 1:4] = 1
    pixels[2:6, 7:9] = (0, 0, 255)
    masks[1, 2:6, 7:9] = 1
    return Sample(image=Image.fromarray(pixels), image_id=1, source="synthetic", tasks=("detection", "mask", "grounding"),
                  boxes_xyxy=np.array([[1, 1, 4, 4], [7, 2, 9, 6]], np.float32), category_ids=np.array([0, 1]),
                  masks=masks, phrases=["the red square left of the blue bar", "the blue bar"],
                  object_captions=["a red square on the left", "a blue bar"], caption="from left to right: a red square and a blue bar")


def _mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_horizontal_flip_mirrors_pixels_boxes_masks_and_words():
    sample = _sample()
    flipped = horizontal_flip(sample)
    pixels = np.asarray(flipped.image)
    # The red block now sits on the right (x 6..8), the blue one on the left (x 1..2).
    assert (pixels[1:4, 6:9] == (255, 0, 0)).all() and (pixels[2:6, 1:3] == (0, 0, 255)).all()
    np.testing.assert_array_equal(flipped.boxes_xyxy, [[6, 1, 9, 4], [1, 2, 3, 6]])
    for box, mask in zip(flipped.boxes_xyxy, flipped.masks):
        assert _mask_box(mask) == box.tolist()
    assert flipped.masks[0][pixels[..., 0] == 255].all()  # each mask still covers its own pixels
    assert flipped.phrases == ["the red square right of the blue bar", "the blue bar"]
    assert flipped.object_captions == ["a red square on the right", "a blue bar"]
    assert flipped.caption == "from right to left: a red square and a blue bar"
    # The input is untouched, and a second flip restores it exactly.
    np.testing.assert_array_equal(sample.boxes_xyxy, [[1, 1, 4, 4], [7, 2, 9, 6]])
    back = horizontal_flip(flipped)
    assert np.array_equal(np.asarray(back.image), np.asarray(sample.image))
    np.testing.assert_array_equal(back.boxes_xyxy, sample.boxes_xyxy)
    np.testing.assert_array_equal(back.masks, sample.masks)
    assert back.phrases == sample.phrases and back.caption == sample.caption
    assert back.object_captions == sample.object_captions


def test_horizontal_flip_of_a_sample_without_objects_or_masks():
    empty = Sample(image=Image.new("RGB", (5, 4)), image_id="x", source="imagenet", tasks=("classification",),
                   class_id=3)
    flipped = horizontal_flip(empty)
    assert flipped.boxes_xyxy.shape == (0, 4) and flipped.masks is None and flipped.class_id == 3


def _flip_sampler(probability: float, seed: int = 0, rank: int = 0) -> FlipBatchSampler:
    inner = MixedBatchSampler({"a": 50, "b": 30}, {"a": 1, "b": 1}, batch_size=8, num_batches=200, seed=seed,
                              rank=rank, world_size=2)
    return FlipBatchSampler(inner, probability, seed=seed, rank=rank)


def test_flip_sampler_adds_flags_to_the_wrapped_stream_at_the_set_rate():
    sampler = _flip_sampler(0.5)
    sampler.set_epoch(3)
    batches = list(sampler)
    inner = sampler.batches
    inner.set_epoch(3)
    assert len(sampler) == 200
    assert [[key[:-1] for key in b] for b in batches] == list(inner)  # same keys, same order
    flags = np.array([key[-1] for b in batches for key in b])
    assert abs(flags.mean() - 0.5) < 0.04  # 1600 draws: 4 standard deviations is 0.05
    assert not any(key[-1] for b in list(_flip_sampler(0.0)) for key in b)
    assert all(key[-1] for b in list(_flip_sampler(1.0)) for key in b)


def test_flip_stream_is_a_function_of_seed_rank_and_epoch():
    def flags(sampler, epoch):
        sampler.set_epoch(epoch)
        return [key[-1] for b in sampler for key in b]

    assert flags(_flip_sampler(0.5), 2) == flags(_flip_sampler(0.5), 2)
    assert flags(_flip_sampler(0.5), 2) != flags(_flip_sampler(0.5), 3)
    assert flags(_flip_sampler(0.5), 2) != flags(_flip_sampler(0.5, rank=1), 2)
    assert flags(_flip_sampler(0.5), 2) != flags(_flip_sampler(0.5, seed=1), 2)


def test_flipping_dataset_flips_only_flagged_keys():
    dataset = FlippingDataset({("synthetic", 0): _sample()})
    plain, flipped = dataset[("synthetic", 0, False)], dataset[("synthetic", 0, True)]
    assert plain.phrases[0].endswith("left of the blue bar")
    assert flipped.phrases[0].endswith("right of the blue bar")
    np.testing.assert_array_equal(flipped.boxes_xyxy[0], [6, 1, 9, 4])


def test_flip_probability_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="flip_probability"):
        load_config(None, ["--data.flip_probability", "1.5"])
    with pytest.raises(ValueError, match="flip probability"):
        _flip_sampler(-0.1)
