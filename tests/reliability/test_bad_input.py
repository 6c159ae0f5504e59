"""Every kind of bad input file is indexed correctly or skipped with its reason recorded, and the
run goes on. All fixtures are generated here."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.datasets.blob_embedder import build as build_blobs
from tests.conftest import BLOBS


def red_square(size=(120, 90), mode="RGB") -> Image.Image:
    pixels = np.full((size[1], size[0], 3), 255, np.uint8)
    pixels[20:70, 30:90] = (220, 30, 30)
    return Image.fromarray(pixels).convert(mode)


def jpeg_bytes(image: Image.Image, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **kw)
    return out.getvalue()


def write_bad_inputs(folder) -> tuple[dict[str, str], dict[str, str]]:
    """-> (files that must be indexed: name -> expected label, files that must fail: name -> reason part)."""
    folder.mkdir()
    good, bad = {}, {}
    png = io.BytesIO()
    red_square().save(png, "PNG")
    jpg = jpeg_bytes(red_square())

    (folder / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2]); bad["truncated.jpg"] = "truncated"
    (folder / "truncated.png").write_bytes(png.getvalue()[:200]); bad["truncated.png"] = "truncated"
    (folder / "zero.jpg").write_bytes(b""); bad["zero.jpg"] = "0 bytes"
    (folder / "random.png").write_bytes(np.random.default_rng(0).bytes(4096)); bad["random.png"] = "not an image"
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png"); bad["bomb.png"] = "too many pixels"

    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "one-pixel.png"); good["one-pixel.png"] = None
    (folder / "cmyk.jpg").write_bytes(jpeg_bytes(red_square(mode="CMYK"))); good["cmyk.jpg"] = "red box"
    grey16 = np.full((90, 120), 65535, np.uint16)
    grey16[20:70, 30:90] = 0
    Image.fromarray(grey16).save(folder / "grey16.png"); good["grey16.png"] = "black box"
    palette = red_square().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    palette.info["transparency"] = palette.getpixel((0, 0))  # the white background becomes transparent
    palette.save(folder / "palette.png", transparency=palette.getpixel((0, 0))); good["palette.png"] = "red box"
    frames = [red_square(), Image.new("RGB", (120, 90), (30, 60, 220))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100); good["animated.gif"] = "red box"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    red_square().save(folder / "rotated.jpg", exif=exif); good["rotated.jpg"] = "red box"
    long_name = "l" * 240 + ".png"
    red_square().save(folder / long_name); good[long_name] = "red box"
    non_utf8 = os.fsdecode(b"caf\xe9-latin1.png")
    (folder / non_utf8).write_bytes(png.getvalue()); good["caf\\xe9-latin1.png"] = "red box"
    os.symlink("loop.jpg", folder / "loop.jpg"); bad["loop.jpg"] = "symbolic links"
    os.symlink(folder, folder / "folder-loop")  # a directory symlink loop: not followed
    return good, bad


def test_every_bad_input_is_indexed_or_skipped_with_its_reason(tmp_path):
    good, bad = write_bad_inputs(tmp_path / "imgs")
    summary = index_folders([tmp_path / "imgs"], tmp_path / "idx", embedder=build_blobs(), model=BLOBS,
                            options=IndexOptions(progress=False, workers=2))
    assert summary.indexed == len(good)
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        rows = idx.sql("SELECT path, status, error, width, height FROM images")[1]
        labels = dict(idx.sql("SELECT path, first(label) FROM objects_images GROUP BY path")[1])
    by_name = {os.path.basename(r[0]): r for r in rows}
    assert set(by_name) == set(good) | set(bad)  # nothing under the directory loop twice
    for name, reason in bad.items():
        assert by_name[name][1] == "error" and reason in by_name[name][2], by_name[name]
    for name, label in good.items():
        assert by_name[name][1] == "ok", by_name[name]
        if label:
            assert labels[by_name[name][0]] == label, name
    assert (by_name["rotated.jpg"][3], by_name["rotated.jpg"][4]) == (90, 120)  # EXIF applied


def test_an_unreadable_directory_is_reported_and_its_images_kept(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    (folder / "locked").mkdir(parents=True)
    red_square().save(folder / "open.png")
    red_square().save(folder / "locked" / "inside.png")
    options = IndexOptions(progress=False, workers=1)
    index_folders([folder], tmp_path / "idx", embedder=build_blobs(), model=BLOBS, options=options)

    # Root (as on CI) may read any directory, so the permission error is simulated where os.walk
    # meets it; as another user `chmod 000` gives the same error.
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(folder / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    summary = index_folders([folder], tmp_path / "idx", embedder=build_blobs(), model=BLOBS, options=options)
    assert any("unreadable folder" in reason and "Permission denied" in reason for _, reason in summary.skipped)
    assert summary.removed == 0  # its images are not taken for deleted
    with open_index(tmp_path / "idx", model=build_blobs()) as idx:
        assert idx.manifest.counts["images"] == 2
