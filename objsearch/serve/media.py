"""Pictures a server sends: an indexed image, or one object's crop, as JPEG at a bounded size.

Images are decoded with the indexer's safe decoding (``objsearch.image_decode``: the max-pixels
guard, EXIF orientation, truncated files refused), so what the page shows is the frame that boxes
are given in. Only files the index names are ever opened: callers pass a path from the index, never
one from a request.
"""

from __future__ import annotations

import io
import threading
from typing import Sequence

from PIL import Image

from objsearch.image_decode import DecodedImage, decode_image

MIN_SIDE, MAX_SIDE = 16, 2048  # pixels: the sizes a request may ask for
JPEG_QUALITY = 85

# decode_image saves and restores Pillow's process-wide switches around each decode, which is not
# thread-safe; a server decodes in its worker threads, so one decode at a time (any caller that
# decodes, uploads included, holds this lock).
DECODING = threading.Lock()


def _decode(path: str, max_side: int) -> DecodedImage:
    with DECODING:
        return decode_image(path, max_side=max_side)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def image_jpeg(path: str, max_side: int) -> bytes:
    """The image at ``path`` (upright, RGB) as JPEG with ``max(width, height) <= max_side`` pixels.
    Raises ``BadImage`` when the file can no longer be decoded (moved, changed, damaged)."""
    return _jpeg(Image.fromarray(_decode(path, max_side).pixels))


def crop_box(box_xyxy: Sequence[float], width: int, height: int, pad: float) -> tuple[int, int, int, int]:
    """``box_xyxy`` (pixels) grown by ``pad`` of its size on each side, clamped to the image, as
    whole pixels, at least one pixel wide and high."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    dx, dy = (x2 - x1) * pad, (y2 - y1) * pad
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(width, int(round(x2 + dx))), min(height, int(round(y2 + dy)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_jpeg(path: str, box_xyxy: Sequence[float], image_size: tuple[int, int], max_side: int, pad: float = 0.0) -> bytes:
    """The region ``box_xyxy`` (pixels of the upright original, whose size the index recorded as
    ``image_size`` (width, height)) of the image at ``path``, grown by ``pad`` of its size on each
    side, as JPEG with ``max(width, height) <= max_side`` pixels.

    The image is decoded at the scale that gives the crop about ``max_side`` pixels (at most the
    original size), so a small object's crop is sharp and a large one's costs no more than needed.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    region_side = max(x2 - x1, y2 - y1, 1.0) * (1 + 2 * pad)
    full_side = max(image_size)
    decoded = _decode(path, max(1, min(full_side, int(full_side * max_side / region_side) + 1)))
    scale = decoded.scale
    height, width = decoded.pixels.shape[:2]
    left, top, right, bottom = crop_box([v * scale for v in (x1, y1, x2, y2)], width, height, pad)
    crop = Image.fromarray(decoded.pixels[top:bottom, left:right])
    crop.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _jpeg(crop)
