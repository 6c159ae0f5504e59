"""Object masks from boxes: OpenCV's GrabCut, seeded by the box, on a small copy of its region.

GrabCut (Rother, Kolmogorov and Blake, 2004) fits two colour mixtures, one to the pixels outside
the box (background for sure) and one to those inside (foreground, probably), and cuts the box's
pixels between them with a graph cut. The region is the box grown by MARGIN on each side, so the
background model sees the object's surroundings; it is shrunk to at most WORK_SIDE pixels a side
first (the cost grows with its pixels), and the cut is scaled back to the box.

``subject_box`` runs the same cut against a photo's border to propose its main subject, for
objects the detector has no class for.

Inputs are (H, W, 3) uint8 RGB images and xyxy pixel boxes; a mask is (H, W) bool, True inside the
object, False everywhere outside its box.
"""

from __future__ import annotations

import numpy as np

WORK_SIDE = 96  # pixels: the longest side of the region GrabCut works on
ITERATIONS = 2
MARGIN = 0.1  # the region around the box, as a share of the box's width and height
MIN_SHARE = 0.05  # a cut keeping less of the box than this failed: the box itself is the mask


def grabcut_mask(image: np.ndarray, box_xyxy) -> np.ndarray:
    """(H, W) bool mask of the object in ``box_xyxy`` (pixels) of ``image``."""
    import cv2

    height, width = image.shape[:2]
    x1, y1, x2, y2 = _clip(box_xyxy, width, height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return box_mask(height, width, box_xyxy)
    mx, my = int(round(MARGIN * (x2 - x1))), int(round(MARGIN * (y2 - y1)))
    rx1, ry1, rx2, ry2 = max(0, x1 - mx), max(0, y1 - my), min(width, x2 + mx), min(height, y2 + my)
    region = image[ry1:ry2, rx1:rx2]
    scale = min(1.0, WORK_SIDE / max(region.shape[:2]))
    small = cv2.resize(region, (max(2, round(region.shape[1] * scale)), max(2, round(region.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else region
    sh, sw = small.shape[:2]
    # The box in the small region: probably the object inside, surely background outside. Where the
    # box fills the whole region (a box over the whole photo) GrabCut has no background to learn
    # from, so there alone the region's outermost pixels are taken for background.
    bx1, by1 = int((x1 - rx1) * scale), int((y1 - ry1) * scale)
    bx2, by2 = max(int(np.ceil((x2 - rx1) * scale)), bx1 + 1), max(int(np.ceil((y2 - ry1) * scale)), by1 + 1)
    if (bx1, by1, bx2, by2) == (0, 0, sw, sh):
        bx1, by1, bx2, by2 = 1, 1, sw - 1, sh - 1
    cut = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    cut[by1:by2, bx1:bx2] = cv2.GC_PR_FGD
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models by k-means from OpenCV's global RNG: same pixels, same mask
    try:
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), cut, None, *models, ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # GrabCut refused the region (too few pixels to fit its colour models): no cut
        return box_mask(height, width, box_xyxy)
    foreground = ((cut == cv2.GC_FGD) | (cut == cv2.GC_PR_FGD)).astype(np.float32)
    full = cv2.resize(foreground, (rx2 - rx1, ry2 - ry1), interpolation=cv2.INTER_LINEAR) >= 0.5 if scale < 1 else foreground >= 0.5
    inside = np.zeros_like(full)
    inside[y1 - ry1:y2 - ry1, x1 - rx1:x2 - rx1] = full[y1 - ry1:y2 - ry1, x1 - rx1:x2 - rx1]
    if inside.sum() < MIN_SHARE * (x2 - x1) * (y2 - y1):
        return box_mask(height, width, box_xyxy)
    mask = np.zeros((height, width), bool)
    mask[ry1:ry2, rx1:rx2] = inside
    return mask


def box_mask(height: int, width: int, box_xyxy) -> np.ndarray:
    """(height, width) bool mask of the pixels of ``box_xyxy`` (pixels; clipped, edges rounded out)."""
    x1, y1, x2, y2 = _clip(box_xyxy, width, height)
    mask = np.zeros((height, width), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def _clip(box_xyxy, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    x1, x2 = int(np.clip(np.floor(x1), 0, width)), int(np.clip(np.ceil(x2), 0, width))
    y1, y2 = int(np.clip(np.floor(y1), 0, height)), int(np.clip(np.ceil(y2), 0, height))
    return x1, y1, max(x2, x1), max(y2, y1)


def rle(mask: np.ndarray) -> dict:
    """A (H, W) bool mask as COCO RLE (``counts`` as ASCII text, ``size`` [H, W])."""
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def decode(rle: dict, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A COCO RLE mask (``counts`` as text or bytes) as a (H, W) bool array; resized (nearest) to
    ``shape`` (H, W) when given and different: masks may be made on a scaled copy of a photo."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    mask = mask_utils.decode({**rle, "counts": counts}).astype(bool)
    if shape is not None and mask.shape != tuple(shape):
        import cv2

        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    return mask


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (H, W) bool masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


SUBJECT_INSET = 0.05  # the photo's outer band (share of each side) that GrabCut takes for background
SUBJECT_MIN_SHARE = 0.02  # a subject smaller than this share of the photo is noise ...
SUBJECT_MAX_SHARE = 0.6  # ... and one larger is no subject: GrabCut found nothing to separate


def subject_box(image: np.ndarray) -> np.ndarray | None:
    """The photo's main subject as a (4,) xyxy pixel box, or None: GrabCut with the photo's outer
    band (SUBJECT_INSET) for background, then the box of the largest connected part of the cut.
    A classical stand-in for a proposal network: it finds a flower on leaves or a pagoda against
    the sky, which COCO's detector has no class for."""
    from scipy import ndimage

    height, width = image.shape[:2]
    inset_x, inset_y = SUBJECT_INSET * width, SUBJECT_INSET * height
    cut = grabcut_mask(image, (inset_x, inset_y, width - inset_x, height - inset_y))
    parts, count = ndimage.label(cut)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(cut, parts, index=np.arange(1, count + 1))
    largest = int(np.argmax(sizes))
    if not SUBJECT_MIN_SHARE <= cut.mean() <= SUBJECT_MAX_SHARE or sizes[largest] < SUBJECT_MIN_SHARE * cut.size:
        return None
    rows, cols = ndimage.find_objects(parts)[largest]
    return np.array([cols.start, rows.start, cols.stop, rows.stop], np.float32)
