"""Tests for objsearch.image_decode: every fixture is generated under pytest's tmp_path."""

from __future__ import annotations

import os
import random
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from objsearch.image_decode import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DecodedImage, decode_image
from objsearch.errors import BadImage, ObjsearchError

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _close(pixel, expected, tol=12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


def _assert_valid(img: DecodedImage) -> None:
    assert isinstance(img, DecodedImage)
    assert img.pixels.dtype == np.uint8
    assert img.pixels.ndim == 3 and img.pixels.shape[2] == 3
    assert img.pixels.flags["C_CONTIGUOUS"]


def _png(width: int, height: int, raw: bytes = b"", bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A hand-made PNG: any IHDR size, IDAT = zlib(raw)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _bad(path, **kw) -> BadImage:
    with pytest.raises(BadImage) as info:
        decode_image(path, **kw)
    assert info.value.path == os.fspath(path)
    return info.value


# --- normal images ---------------------------------------------------------------------------


def test_jpeg_basic(tmp_path: Path):
    p = tmp_path / "red.jpg"
    Image.new("RGB", (64, 48), RED).save(p, quality=95)
    img = decode_image(p)
    _assert_valid(img)
    assert img.pixels.shape == (48, 64, 3)
    assert (img.width, img.height, img.scale) == (64, 48, 1.0)
    assert img.path == str(p)
    assert _close(img.pixels.reshape(-1, 3).mean(0), RED, tol=6)


def test_png_exact_colours_and_layout(tmp_path: Path):
    p = tmp_path / "halves.png"
    im = Image.new("RGB", (30, 20), RED)
    im.paste(BLUE, (15, 0, 30, 20))
    im.save(p)
    img = decode_image(str(p))
    _assert_valid(img)
    assert img.pixels.shape == (20, 30, 3)
    assert (img.pixels[:, :15] == RED).all()
    assert (img.pixels[:, 15:] == BLUE).all()


def test_big_jpeg_downscaled_but_reports_original_size(tmp_path: Path):
    p = tmp_path / "big.jpg"
    im = Image.new("RGB", (4000, 3000), BLUE)
    im.paste(RED, (0, 0, 1000, 750))  # top-left quarter (by side) is red
    im.save(p, quality=90)
    img = decode_image(p)
    _assert_valid(img)
    assert max(img.pixels.shape[:2]) == DEFAULT_MAX_SIDE == 1600
    assert img.pixels.shape == (1200, 1600, 3)
    assert (img.width, img.height) == (4000, 3000)
    assert img.scale == pytest.approx(0.4)
    assert _close(img.pixels[100, 100], RED)
    assert _close(img.pixels[1000, 1500], BLUE)
    # red block edge maps to 1000 * scale = 400 columns
    assert _close(img.pixels[100, 390], RED) and _close(img.pixels[100, 410], BLUE)


def test_non_jpeg_downscaled_and_max_side_parameter(tmp_path: Path):
    p = tmp_path / "wide.png"
    Image.new("RGB", (2000, 500), GREEN).save(p)
    img = decode_image(p)
    assert img.pixels.shape == (400, 1600, 3)
    assert (img.width, img.height) == (2000, 500)
    assert img.scale == pytest.approx(0.8)
    assert (img.pixels == GREEN).all()
    small = decode_image(p, max_side=100)
    assert small.pixels.shape == (25, 100, 3)
    assert small.scale == pytest.approx(0.05)


def _oriented_jpeg(path: Path, size: tuple[int, int], orientation: int) -> None:
    """Stored image: blue with a red block in the stored top-left corner, EXIF orientation set."""
    w, h = size
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, w // 4, h // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, quality=95)


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(1, "top-left"), (3, "bottom-right"), (6, "top-right"), (8, "bottom-left")],
)
def test_exif_orientation(tmp_path: Path, orientation: int, red_corner: str):
    p = tmp_path / f"o{orientation}.jpg"
    _oriented_jpeg(p, (40, 20), orientation)
    img = decode_image(p)
    swapped = orientation in (6, 8)
    assert (img.width, img.height) == ((20, 40) if swapped else (40, 20))
    assert img.pixels.shape == (img.height, img.width, 3)
    px = img.pixels
    corners = {"top-left": px[1, 1], "top-right": px[1, -2], "bottom-left": px[-2, 1], "bottom-right": px[-2, -2]}
    for name, pixel in corners.items():
        assert _close(pixel, RED if name == red_corner else BLUE, tol=40), (name, pixel)


def test_exif_orientation_on_big_jpeg_uses_size_before_draft(tmp_path: Path):
    p = tmp_path / "big6.jpg"
    _oriented_jpeg(p, (4000, 3000), 6)  # stored landscape, displayed portrait
    img = decode_image(p)
    assert (img.width, img.height) == (3000, 4000)
    assert img.pixels.shape == (1600, 1200, 3)
    assert img.scale == pytest.approx(0.4)
    assert _close(img.pixels[10, -10], RED) and _close(img.pixels[10, 10], BLUE)


# --- colour modes -----------------------------------------------------------------------------


def test_grey_L(tmp_path: Path):
    p = tmp_path / "grey.png"
    Image.new("L", (10, 8), 128).save(p)
    img = decode_image(p)
    assert img.pixels.shape == (8, 10, 3)
    assert (img.pixels == 128).all()


def test_one_bit(tmp_path: Path):
    p = tmp_path / "bits.png"
    im = Image.new("1", (16, 16), 0)
    im.paste(1, (8, 0, 16, 16))  # right half white
    im.save(p)
    img = decode_image(p)
    assert (img.pixels[:, :8] == 0).all()
    assert (img.pixels[:, 8:] == 255).all()


@pytest.mark.parametrize("ext", ["png", "gif"])
def test_palette_transparency_becomes_white(tmp_path: Path, ext: str):
    p = tmp_path / f"pal.{ext}"
    im = Image.new("P", (16, 16), 0)
    im.putpalette([*RED, *GREEN] + [0, 0, 0] * 254)
    im.paste(1, (0, 8, 16, 16))  # bottom half green (index 1); top half index 0 = transparent red
    im.save(p, transparency=0)
    img = decode_image(p)
    assert (img.pixels[:8] == WHITE).all()
    assert (img.pixels[8:] == GREEN).all()


def test_rgba_composited_over_white(tmp_path: Path):
    p = tmp_path / "rgba.png"
    im = Image.new("RGBA", (30, 10), (*RED, 0))  # fully transparent red
    im.paste((*RED, 128), (10, 0, 20, 10))  # half-transparent red
    im.paste((*BLUE, 255), (20, 0, 30, 10))  # opaque blue
    im.save(p)
    img = decode_image(p)
    assert (img.pixels[:, :10] == WHITE).all()
    assert _close(img.pixels[5, 15], (255, 127, 127), tol=3)
    assert (img.pixels[:, 20:] == BLUE).all()


def test_la_composited_over_white(tmp_path: Path):
    p = tmp_path / "la.png"
    im = Image.new("LA", (20, 10), (0, 0))  # transparent black
    im.paste((0, 255), (10, 0, 20, 10))  # opaque black
    im.save(p)
    img = decode_image(p)
    assert (img.pixels[:, :10] == 255).all()
    assert (img.pixels[:, 10:] == 0).all()


def test_cmyk_jpeg(tmp_path: Path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(p, quality=95)  # red in CMYK
    assert Image.open(p).mode == "CMYK"
    img = decode_image(p)
    assert img.pixels.shape == (32, 32, 3)
    assert _close(img.pixels.reshape(-1, 3).mean(0), RED, tol=20)


def test_16bit_png_scaled_not_clipped(tmp_path: Path):
    p = tmp_path / "g16.png"
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (4, 1))).save(p)
    assert Image.open(p).mode.startswith("I;16")
    img = decode_image(p)
    row = img.pixels[0, :, 0].astype(int)
    assert (img.pixels[..., 0] == img.pixels[..., 1]).all() and (img.pixels[..., 1] == img.pixels[..., 2]).all()
    assert row[0] <= 1 and row[-1] >= 254
    assert (np.diff(row) >= 0).all()
    assert 120 <= row[128] <= 135  # a clip at 255 would make it 255


@pytest.mark.parametrize(
    ("dtype", "top"),
    [(np.int32, 65535), (np.float32, 1.0)],
    ids=["I-32bit-holding-16bit", "F-float-0..1"],
)
def test_wide_grey_modes_tiff(tmp_path: Path, dtype, top):
    p = tmp_path / "wide.tif"
    ramp = np.linspace(0, top, 256).astype(dtype)
    Image.fromarray(np.tile(ramp, (4, 1))).save(p)
    assert Image.open(p).mode in ("I", "F")
    row = decode_image(p).pixels[0, :, 0].astype(int)
    assert row[0] <= 1 and row[-1] >= 254 and (np.diff(row) >= 0).all()
    assert 120 <= row[128] <= 135


def test_animated_gif_first_frame(tmp_path: Path):
    p = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (12, 12), c) for c in (RED, BLUE, GREEN)]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(p).n_frames == 3
    img = decode_image(p)
    assert img.pixels.shape == (12, 12, 3)
    assert (img.pixels == RED).all()


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_one_by_one(tmp_path: Path, ext: str):
    p = tmp_path / f"one.{ext}"
    Image.new("RGB", (1, 1), BLUE).save(p)
    img = decode_image(p)
    assert img.pixels.shape == (1, 1, 3)
    assert (img.width, img.height, img.scale) == (1, 1, 1.0)
    assert _close(img.pixels[0, 0], BLUE)


# --- failures ---------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    err = _bad(p)
    assert isinstance(err, ObjsearchError)
    assert "empty" in err.reason and "0 bytes" in err.reason


def test_random_bytes_named_png(tmp_path: Path):
    p = tmp_path / "noise.png"
    p.write_bytes(random.Random(0).randbytes(4096))
    assert "not an image" in _bad(p).reason


def test_text_file_named_jpg(tmp_path: Path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n" * 20)
    assert "not an image" in _bad(p).reason


def test_postscript_refused(tmp_path: Path):
    p = tmp_path / "drawing.eps"
    Image.new("RGB", (8, 8), RED).save(p, "EPS")
    assert "unsupported format EPS" in _bad(p).reason  # never handed to Ghostscript


def test_missing_file_and_directory(tmp_path: Path):
    assert "not found" in _bad(tmp_path / "nope.jpg").reason
    _bad(tmp_path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_an_error(tmp_path: Path, fmt: str):
    p = tmp_path / f"cut.{fmt.lower()}"
    _noise(300, 200).save(p, fmt)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert "truncated" in _bad(p).reason


def test_truncated_is_an_error_even_if_someone_enabled_load_truncated(tmp_path: Path, monkeypatch):
    p = tmp_path / "cut.jpg"
    _noise(300, 200).save(p)
    p.write_bytes(p.read_bytes()[:3000])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert "truncated" in _bad(p).reason
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored, not left changed


def test_decompression_bomb_refused_before_decoding(tmp_path: Path, monkeypatch):
    # A real, valid 12000x12000 1-bit PNG of zeros (144 Mpx, ~18 KB on disk).
    p = tmp_path / "bomb.png"
    p.write_bytes(_png(12000, 12000, b"\x00" * ((12000 // 8 + 1) * 12000)))
    loads = []
    real_load = ImageFile.ImageFile.load

    def spy_load(self):
        loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        err = _bad(p, max_pixels=100_000_000)
    assert time.perf_counter() - t0 < 2.0
    assert loads == []  # no pixel data was decoded
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert err.reason == "too many pixels: 144000000 > limit 100000000"
    assert DEFAULT_MAX_PIXELS == 100_000_000


def test_header_beyond_pillows_own_bomb_limit(tmp_path: Path):
    p = tmp_path / "huge.png"
    p.write_bytes(_png(100_000, 100_000))  # 10 Gpx claimed: Pillow's DecompressionBombError
    assert "too many pixels" in _bad(p).reason


def test_max_pixels_parameter(tmp_path: Path):
    p = tmp_path / "sq.png"
    Image.new("RGB", (100, 100), RED).save(p)
    assert _bad(p, max_pixels=9_999).reason == "too many pixels: 10000 > limit 9999"
    assert decode_image(p, max_pixels=10_000).pixels.shape == (100, 100, 3)


def test_zero_size_header(tmp_path: Path):
    p = tmp_path / "zero.png"
    p.write_bytes(_png(0, 0))
    _bad(p)


def test_pillow_globals_untouched(tmp_path: Path):
    p = tmp_path / "ok.png"
    Image.new("RGB", (4, 4), RED).save(p)
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    decode_image(p)
    with pytest.raises(BadImage):
        decode_image(tmp_path / "missing.png")
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before
