"""The worker-process step of indexing: read a file once, hash it, decode it.

Runs in worker processes (see ``indexer.pipeline``); the decoding rules themselves live in
``objsearch.image_decode`` so query-by-image uses exactly the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from objsearch.errors import BadImage
from objsearch.image_decode import DecodedImage, decode_image
from indexer.discover import FileStat, content_hash

MAX_PIXELS = 100_000_000  # larger images are skipped as likely decompression bombs
MAX_SIDE = 1600  # images are downscaled to this many pixels a side for the model


@dataclass(frozen=True)
class DecodeResult:
    """A file and its outcome: ``image`` when it decoded, else ``error`` (a short reason)."""

    file: FileStat
    content_hash: str
    image: DecodedImage | None
    error: str | None


def load_file(file: FileStat, max_pixels: int, max_side: int) -> DecodeResult:
    """Never raises for a bad file: unreadable or undecodable files come back with ``error`` set."""
    try:
        digest = content_hash(file.fs_path)
    except OSError as exc:
        return DecodeResult(file, "", None, f"cannot read file: {exc.strerror or exc}")
    try:
        image = decode_image(file.fs_path, max_pixels=max_pixels, max_side=max_side)
    except BadImage as exc:
        return DecodeResult(file, digest, None, exc.reason)
    return DecodeResult(file, digest, image, None)
