"""Colour description of an object crop: a dominant colour name and a hue/saturation/value histogram.

Pixels near the centre of the box count more (Gaussian weight), since the box edges are mostly
background. Inputs are (H, W, 3) uint8 RGB crops.
"""

from __future__ import annotations

import numpy as np

COLOUR_NAMES = (
    "black", "white", "gray", "red", "orange", "brown", "yellow", "green", "blue", "purple", "pink",
)  # fmt: skip

# Hue ranges in degrees for the chromatic names (brown and pink are decided by value/saturation).
_HUE_BINS = ((15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (255, "blue"), (290, "purple"), (335, "pink"), (361, "red"))  # fmt: skip

HIST_HUE_BINS, HIST_SAT_BINS, HIST_VAL_BINS = 8, 2, 2
HIST_DIM = HIST_HUE_BINS * HIST_SAT_BINS * HIST_VAL_BINS
_MAX_SIDE = 64  # crops are subsampled to at most this many pixels a side: colour needs no detail


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) float HSV: hue in degrees [0, 360), saturation and value in [0, 1]."""
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(axis=-1)
    c = v - x.min(axis=-1)
    s = np.divide(c, v, out=np.zeros_like(v), where=v > 0)
    safe_c = np.where(c > 0, c, 1.0)
    h = np.where(
        v == r, ((g - b) / safe_c) % 6, np.where(v == g, (b - r) / safe_c + 2, (r - g) / safe_c + 4)
    )
    h = np.where(c > 0, h * 60.0, 0.0)
    return np.stack([h, s, v], axis=-1)


def _subsample(crop: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(max(crop.shape[:2]) / _MAX_SIDE)))
    return crop[::step, ::step]


def _centre_weights(h: int, w: int) -> np.ndarray:
    ys = (np.arange(h) + 0.5) / h - 0.5
    xs = (np.arange(w) + 0.5) / w - 0.5
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * 0.25**2))


def pixel_colour_names(hsv: np.ndarray) -> np.ndarray:
    """(..., 3) HSV -> (...) int indices into COLOUR_NAMES."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    names = np.full(h.shape, COLOUR_NAMES.index("gray"), dtype=np.int64)
    lower = 0
    chromatic = np.zeros(h.shape, dtype=np.int64)
    for upper, name in _HUE_BINS:
        chromatic[(h >= lower) & (h < upper)] = COLOUR_NAMES.index(name)
        lower = upper
    # Dark, weakly saturated oranges and reds read as brown; pale reds as pink.
    brownish = np.isin(chromatic, [COLOUR_NAMES.index("orange"), COLOUR_NAMES.index("red")]) & (v < 0.6)
    chromatic[brownish & (h >= 10)] = COLOUR_NAMES.index("brown")
    chromatic[(chromatic == COLOUR_NAMES.index("red")) & (s < 0.45) & (v > 0.75)] = COLOUR_NAMES.index("pink")
    is_chromatic = s >= 0.25
    names[is_chromatic] = chromatic[is_chromatic]
    names[~is_chromatic & (v > 0.8)] = COLOUR_NAMES.index("white")
    names[v < 0.18] = COLOUR_NAMES.index("black")
    return names


def dominant_colour(crop: np.ndarray) -> str:
    """Name of the colour covering the largest share of the object, not of its background.

    Votes are centre-weighted, and a colour that also fills the crop's border band (the
    background around the object, for a box that fits it) loses most of its votes.
    """
    if crop.size == 0:
        return "gray"
    names = pixel_colour_names(rgb_to_hsv(_subsample(crop)))
    votes = np.bincount(names.ravel(), weights=_centre_weights(*names.shape).ravel(), minlength=len(COLOUR_NAMES))
    band = max(1, min(names.shape) // 10)
    border = np.concatenate([names[:band].ravel(), names[-band:].ravel(), names[:, :band].ravel(), names[:, -band:].ravel()])
    border_share = np.bincount(border, minlength=len(COLOUR_NAMES)) / max(len(border), 1)
    return COLOUR_NAMES[int(np.argmax(votes * (1.0 - 0.8 * border_share)))]


def colour_histogram(crop: np.ndarray) -> np.ndarray:
    """(HIST_DIM,) float32 centre-weighted HSV histogram, L2-normalised (zeros for an empty crop)."""
    hist = np.zeros(HIST_DIM, dtype=np.float32)
    if crop.size == 0:
        return hist
    hsv = rgb_to_hsv(_subsample(crop))
    hue = np.minimum((hsv[..., 0] / 360.0 * HIST_HUE_BINS).astype(np.int64), HIST_HUE_BINS - 1)
    sat = np.minimum((hsv[..., 1] * HIST_SAT_BINS).astype(np.int64), HIST_SAT_BINS - 1)
    val = np.minimum((hsv[..., 2] * HIST_VAL_BINS).astype(np.int64), HIST_VAL_BINS - 1)
    bins = (hue * HIST_SAT_BINS + sat) * HIST_VAL_BINS + val
    hist += np.bincount(bins.ravel(), weights=_centre_weights(*bins.shape).ravel(), minlength=HIST_DIM).astype(np.float32)
    # sqrt (Hellinger) so one dominant bin does not swamp the cosine.
    hist = np.sqrt(hist)
    return hist / max(float(np.linalg.norm(hist)), 1e-12)
