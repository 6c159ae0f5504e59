"""Colour description of an object: a dominant colour name and a hue/saturation/value histogram.

With a mask (the object's own pixels, ``objsearch.embedders.masks``) only those pixels count; without
one, pixels near the centre of the box count more (Gaussian weight) and a colour that also fills the
box's border band (the background around a box that fits its object) loses most of its votes.
An object whose chromatic pixels (hue named) hold at least CHROMATIC_MIN_SHARE of the votes is
named by its leading hue: a blue bus is also its grey windows and black tyres. Otherwise it is
white, grey or black, and its brightness decides which: JPEG noise and shadows pull single pixels
of a white object to grey (a white horse in shade is mostly grey pixels), so the name follows the
brighter quantiles of its achromatic pixels.
Inputs are (H, W, 3) uint8 RGB crops and (H, W) bool masks of the same size.
"""

from __future__ import annotations

import numpy as np

COLOUR_NAMES = (
    "black", "white", "gray", "red", "orange", "brown", "yellow", "green", "blue", "purple", "pink",
)  # fmt: skip

# Hue ranges in degrees for the chromatic names (brown and pink are decided by value/saturation).
_HUE_BINS = ((12, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (255, "blue"), (290, "purple"), (335, "pink"), (361, "red"))  # fmt: skip

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


def _pixel_weights(mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """(weights of the subsampled pixels, whether they come from ``mask``): the mask's pixels, or,
    without a mask or with one too thin to leave a pixel on the subsampling grid, the box's centre."""
    inside = None if mask is None else _subsample(mask)
    if inside is not None and inside.any():
        return inside.astype(np.float64), True
    return _centre_weights(*shape), False


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


ACHROMATIC = tuple(COLOUR_NAMES.index(n) for n in ("black", "white", "gray"))
CHROMATIC_MIN_SHARE = 0.25  # an object this colourful (share of its votes) is named by its leading hue
WHITE_MIN_VALUE = 0.72  # achromatic pixels this bright at the object's 75th percentile: white
BLACK_MAX_VALUE = 0.25  # ... this dark at its median: black; between: gray


def dominant_colour(crop: np.ndarray, mask: np.ndarray | None = None) -> str:
    """Name of the colour covering the largest share of the object (its ``mask`` pixels, or the
    crop's centre-weighted pixels less the background's colours), not of its background."""
    if crop.size == 0 or (mask is not None and not mask.any()):
        return "gray"
    hsv = rgb_to_hsv(_subsample(crop))
    names = pixel_colour_names(hsv)
    weights, masked = _pixel_weights(mask, names.shape)
    if masked:
        factor = np.ones(len(COLOUR_NAMES))
    else:
        band = max(1, min(names.shape) // 10)
        border = np.concatenate([names[:band].ravel(), names[-band:].ravel(), names[:, :band].ravel(), names[:, -band:].ravel()])
        factor = 1.0 - 0.8 * np.bincount(border, minlength=len(COLOUR_NAMES)) / max(len(border), 1)
    votes = np.bincount(names.ravel(), weights=weights.ravel(), minlength=len(COLOUR_NAMES)) * factor
    chromatic = votes.copy()
    chromatic[list(ACHROMATIC)] = 0
    if chromatic.sum() >= CHROMATIC_MIN_SHARE * votes.sum():
        return COLOUR_NAMES[int(np.argmax(chromatic))]
    grey_pixels = np.isin(names, ACHROMATIC) & (weights > 0.5 * weights.max())
    values = hsv[..., 2][grey_pixels] if grey_pixels.any() else hsv[..., 2][weights > 0]
    if np.quantile(values, 0.75) >= WHITE_MIN_VALUE:
        return "white"
    return "black" if np.median(values) <= BLACK_MAX_VALUE else "gray"


def colour_histogram(crop: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(HIST_DIM,) float32 HSV histogram of the ``mask`` pixels (else centre-weighted), L2-normalised
    (zeros for an empty crop or mask)."""
    hist = np.zeros(HIST_DIM, dtype=np.float32)
    if crop.size == 0 or (mask is not None and not mask.any()):
        return hist
    hsv = rgb_to_hsv(_subsample(crop))
    hue = np.minimum((hsv[..., 0] / 360.0 * HIST_HUE_BINS).astype(np.int64), HIST_HUE_BINS - 1)
    sat = np.minimum((hsv[..., 1] * HIST_SAT_BINS).astype(np.int64), HIST_SAT_BINS - 1)
    val = np.minimum((hsv[..., 2] * HIST_VAL_BINS).astype(np.int64), HIST_VAL_BINS - 1)
    bins = (hue * HIST_SAT_BINS + sat) * HIST_VAL_BINS + val
    weights, _ = _pixel_weights(mask, bins.shape)
    hist += np.bincount(bins.ravel(), weights=weights.ravel(), minlength=HIST_DIM).astype(np.float32)
    # sqrt (Hellinger) so one dominant bin does not swamp the cosine.
    hist = np.sqrt(hist)
    return hist / max(float(np.linalg.norm(hist)), 1e-12)
