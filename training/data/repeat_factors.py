"""Repeat-factor sampling (Gupta et al., LVIS, 2019): images holding rare categories are drawn more often.

For a category c seen in a fraction f(c) of the images, r(c) = max(1, sqrt(t / f(c))) for a threshold
t; an image's repeat factor is the largest r(c) over the categories it holds (1 for an image with
none). A sampler then draws image i about r(i) times per pass instead of once. Categories in at
least a fraction t of the images are not repeated at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def category_repeat_factors(image_categories: Sequence[np.ndarray], num_categories: int,
                            threshold: float) -> np.ndarray:
    """(C,) r(c) from each image's category indices (0 .. C-1; repeats within an image count once)."""
    if threshold <= 0:
        raise ValueError(f"the repeat-factor threshold must be > 0, got {threshold}")
    images_with = np.zeros(num_categories, np.int64)
    for categories in image_categories:
        images_with[np.unique(np.asarray(categories, np.int64))] += 1
    fraction = images_with / max(1, len(image_categories))
    with np.errstate(divide="ignore"):
        return np.maximum(1.0, np.sqrt(threshold / fraction))  # an unseen category: inf, never used


def image_repeat_factors(image_categories: Sequence[np.ndarray], num_categories: int,
                         threshold: float) -> np.ndarray:
    """(N,) r(i) = max over image i's categories of r(c); 1 for an image without objects."""
    per_category = category_repeat_factors(image_categories, num_categories, threshold)
    return np.array([per_category[np.asarray(c, np.int64)].max() if len(c) else 1.0 for c in image_categories])
