"""Safe image decoding, shared by the indexer's worker processes and query-by-image.

:func:`decode_image` turns one file into RGB ``uint8`` pixels of shape ``(H', W', 3)``,
downscaled so that ``max(H', W') <= max_side``, plus the ORIGINAL size in pixels after
EXIF orientation. Anything that cannot become pixels (missing, empty, not an image,
truncated, corrupt, a decompression bomb, an unconvertible colour mode) raises
:class:`objsearch.errors.BadImage` with a short human-readable reason; no Pillow
exception or warning escapes.

Pillow's process-wide switches are not changed for good: while one image decodes,
``ImageFile.LOAD_TRUNCATED_IMAGES`` is forced to ``False`` (so truncated data is an
error, whatever other code set it to) and warnings are caught; both are restored
afterwards. That save/restore is not thread-safe; workers are processes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from objsearch.errors import BadImage

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels than this (stored width * height, before any downscale) are refused."""

DEFAULT_MAX_SIDE = 1600
"""Decoded pixels are downscaled (aspect kept) so that ``max(height, width) <= DEFAULT_MAX_SIDE``."""

_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_AXES = frozenset({5, 6, 7, 8})
_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_REFUSED_FORMATS = frozenset({"EPS"})  # Pillow renders these by running Ghostscript on the file


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image.

    ``pixels``: ``(H', W', 3)`` ``uint8`` RGB, C-contiguous, upright (EXIF orientation
    applied), possibly downscaled. ``width``/``height``: size in pixels of the original
    image after EXIF orientation, i.e. before downscaling.
    """

    path: str
    pixels: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Decoded width / original width (1.0 when not downscaled); multiply original coordinates by it."""
        return self.pixels.shape[1] / self.width


def decode_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> DecodedImage:
    """Decode ``path`` into upright RGB pixels with ``max(H', W') <= max_side``.

    Multi-frame files (animated GIF/PNG/WebP, TIFF pages) give their first frame;
    transparency is composited over white. Raises ``BadImage(path, reason)`` for
    anything that cannot be turned into RGB pixels, and for images of more than
    ``max_pixels`` pixels, which are refused before any pixel data is decoded.
    """
    if max_side < 1 or max_pixels < 1:
        raise ValueError(f"max_side and max_pixels must be >= 1, got {max_side}, {max_pixels}")
    name = os.fsdecode(path)
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below; Pillow never holds the file open
    except FileNotFoundError:
        raise BadImage(name, "file not found") from None
    except IsADirectoryError:
        raise BadImage(name, "is a directory, not a file") from None
    except PermissionError:
        raise BadImage(name, "permission denied") from None
    except OSError as e:
        raise BadImage(name, f"cannot open file: {e.strerror or e}") from None
    with fp:
        try:
            st = os.fstat(fp.fileno())
        except OSError as e:
            raise BadImage(name, f"cannot stat file: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise BadImage(name, "not a regular file")
        if st.st_size == 0:
            raise BadImage(name, "empty file (0 bytes)")
        with _strict_pillow():
            pixels, width, height = _decode_open_file(fp, name, max_pixels, max_side)
    return DecodedImage(path=name, pixels=pixels, width=width, height=height)


def decode_image_bytes(
    data: bytes,
    name: str = "upload",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> DecodedImage:
    """``decode_image`` for an image held in memory (an upload); ``name`` only labels errors."""
    if max_side < 1 or max_pixels < 1:
        raise ValueError(f"max_side and max_pixels must be >= 1, got {max_side}, {max_pixels}")
    if not data:
        raise BadImage(name, "empty file (0 bytes)")
    with _strict_pillow():
        pixels, width, height = _decode_open_file(io.BytesIO(data), name, max_pixels, max_side)
    return DecodedImage(path=name, pixels=pixels, width=width, height=height)


@contextlib.contextmanager
def _strict_pillow() -> Iterator[None]:
    """Within the block: truncated data raises, and no warning escapes (they are logged at DEBUG).

    Pillow's own DecompressionBombWarning (default above ~89.5 Mpx) is dropped on purpose: the
    ``max_pixels`` check right after ``Image.open`` is the authoritative limit. Pillow's hard
    DecompressionBombError (above ~179 Mpx) still fires inside ``Image.open`` and becomes BadImage.
    """
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    log.debug("Pillow warning: %s: %s", w.category.__name__, w.message)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode_open_file(fp, name: str, max_pixels: int, max_side: int) -> tuple[np.ndarray, int, int]:
    """Returns ``(pixels (H', W', 3) uint8, original width, original height)``; raises BadImage."""
    try:
        img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise BadImage(name, f"too many pixels: {e}") from None
    except UnidentifiedImageError:
        raise BadImage(name, "not an image or unsupported format") from None
    except MemoryError:
        raise BadImage(name, "out of memory reading image header") from None
    except Exception as e:  # plugins raise SyntaxError, struct.error, ValueError, ... on bad headers
        raise BadImage(name, f"corrupt image header: {_describe(e)}") from None

    with img:
        if img.format in _REFUSED_FORMATS:
            raise BadImage(name, f"unsupported format {img.format}")
        w, h = img.size
        if w < 1 or h < 1:
            raise BadImage(name, f"image too small: {w}x{h}")
        if w * h > max_pixels:  # checked before any pixel data is decoded
            raise BadImage(name, f"too many pixels: {w * h} > limit {max_pixels}")
        orientation = _exif_orientation(img)
        width, height = (h, w) if orientation in _ORIENTATIONS_SWAPPING_AXES else (w, h)
        try:
            if max(w, h) > max_side:
                # JPEG/MPO only (a no-op for other formats): libjpeg decodes at 1/2, 1/4 or 1/8
                # scale, never below the requested size. Changes img.size, hence width/height above.
                img.draft("RGB", _fit(w, h, max_side))
            img.load()
            if orientation != 1:
                ImageOps.exif_transpose(img, in_place=True)
            rgb = _to_rgb(img, name)
            if max(rgb.size) > max_side:
                rgb = rgb.resize(_fit(*rgb.size, max_side), Image.Resampling.BILINEAR, reducing_gap=3.0)
            pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
        except BadImage:
            raise
        except Image.DecompressionBombError as e:
            raise BadImage(name, f"too many pixels: {e}") from None
        except MemoryError:
            raise BadImage(name, "out of memory decoding image") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise BadImage(name, f"truncated or corrupt image data: {_describe(e)}") from None
        except Exception as e:  # a Pillow plugin choking on corrupt data (IndexError, struct.error, ...)
            raise BadImage(name, f"corrupt image data: {_describe(e)}") from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise BadImage(name, f"decoder produced unexpected pixel shape {pixels.shape}")
    return pixels, width, height


def _exif_orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8 (1 = upright); 1 when absent or unreadable."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as e:  # corrupt EXIF must not cost us the pixels
        log.debug("ignoring unreadable EXIF: %s", _describe(e))
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _fit(w: int, h: int, max_side: int) -> tuple[int, int]:
    """``(w, h)`` scaled so that its longer side is ``max_side`` (never below 1 pixel)."""
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    """Any loaded Pillow image -> mode ``RGB``; transparency composited over white."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_grey_to_uint8(np.asarray(img)), mode="L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")  # P/L/RGB with a tRNS key colour or palette alpha included
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, RGBX, HSV, ...
    except ValueError:
        raise BadImage(name, f"unsupported colour mode {mode}") from None


def _grey_to_uint8(a: np.ndarray) -> np.ndarray:
    """High-bit-depth grey ``(H, W)`` -> ``uint8`` ``(H, W)``, scaled (never clipped) to 0..255.

    Modes ``I;16*`` (uint16) and ``I`` (int32) with values in 0..65535 (how Pillow loads
    some 16-bit files) are 16-bit: ``value >> 8``. ``F`` (float32) in 0..1 is multiplied by
    255, in 0..255 kept. Anything else is stretched linearly from its min..max; NaN/inf -> 0.
    """
    if a.dtype.kind in "ui":
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 0xFFFF:
            return (a >> 8).astype(np.uint8)
        return _stretch(a.astype(np.float64), lo, hi)
    a = np.where(np.isfinite(a), a, 0).astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(a * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(a).astype(np.uint8)
    return _stretch(a, lo, hi)


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of float ``a`` from ``lo..hi`` to uint8 ``0..255`` (all 0 when flat)."""
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _describe(e: BaseException) -> str:
    """Short one-line text of an exception, e.g. ``image file is truncated (3 bytes not processed)``."""
    text = " ".join(str(e).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(e).__name__
