"""Render search hits as one self-contained HTML gallery (thumbnails embedded as JPEG data URIs)."""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageOps

from objsearch.hits import Hit
from objsearch.store.layout import atomic_write_bytes

logger = logging.getLogger(__name__)

_CSS = """body{font-family:sans-serif;margin:1em;background:#fafafa}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ccc;background:#fff;padding:8px;width:min-content;min-width:200px}
.card img{display:block}
.missing{display:flex;align-items:center;justify-content:center;background:#eee;color:#a00;font-weight:bold}
.meta{font-size:13px;line-height:1.4}
.path{word-break:break-all;font-family:monospace;font-size:12px}"""


def draw_box(image: Image.Image, box_xyxy, *, color=(255, 64, 0), width: int = 3) -> Image.Image:
    """Return a copy of ``image`` with ``box_xyxy`` (x1, y1, x2, y2 in pixels of ``image``) outlined.

    ``width`` is the line width in pixels; the box is clamped to the image so it stays visible.
    """
    out = image.copy()
    w, h = out.size
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    x1, x2 = sorted((min(max(x1, 0.0), w - 1.0), min(max(x2, 0.0), w - 1.0)))
    y1, y2 = sorted((min(max(y1, 0.0), h - 1.0), min(max(y2, 0.0), h - 1.0)))
    ImageDraw.Draw(out).rectangle((x1, y1, x2, y2), outline=tuple(color), width=width)
    return out


def _load_thumb(path: str, thumb_side: int) -> tuple[Image.Image, float, float] | None:
    """Open ``path``, apply EXIF orientation, convert to RGB, shrink so max side <= ``thumb_side`` px.

    Returns (thumbnail, sx, sy) where sx/sy map oriented-original pixels to thumbnail pixels,
    or None if the image cannot be opened or decoded.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except Exception as exc:  # missing file, unreadable or corrupt image
        logger.warning("image not available for gallery: %s (%s)", path, exc)
        return None
    ow, oh = im.size
    im.thumbnail((thumb_side, thumb_side), Image.Resampling.LANCZOS)
    return im, im.width / ow, im.height / oh


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90, subsampling=0)  # 4:4:4 keeps thin box lines crisp
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def draw_mask(image: Image.Image, rle: dict, *, color=(255, 64, 0), opacity: float = 0.35) -> Image.Image:
    """Return a copy of ``image`` with a COCO RLE mask (of an image of ``rle["size"]`` [H, W], the
    same photo at any scale) filled in ``color`` at ``opacity``."""
    from objsearch.embedders.masks import decode

    alpha = Image.fromarray((decode(rle) * int(255 * opacity)).astype("uint8")).resize(image.size, Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", image.size, tuple(color)), image, alpha)


def _card(hit: Hit, thumb: tuple[Image.Image, float, float] | None, thumb_side: int, mask: dict | None = None) -> str:
    e = html.escape
    if thumb is None:
        visual = (f'<div class="missing" style="width:{thumb_side}px;height:{thumb_side * 3 // 4}px">'
                  "image not available</div>")
    else:
        im, sx, sy = thumb
        x1, y1, x2, y2 = hit.box_xyxy
        boxed = draw_box(draw_mask(im, mask) if mask else im, (x1 * sx, y1 * sy, x2 * sx, y2 * sy))
        visual = (f'<img src="{_data_uri(boxed)}" width="{im.width}" height="{im.height}" '
                  f'alt="{e(hit.label)}">')
    caption = e(hit.caption) if hit.caption is not None else "<em>(no caption)</em>"
    return (
        f'<div class="card" data-rank="{int(hit.rank)}">{visual}<div class="meta">'
        f"<b>#{int(hit.rank)}</b> {e(hit.label)}<br>"
        f'<span class="caption">{caption}</span><br>'
        f"{_scores(hit)} &middot; det_score {hit.det_score:.2f} &middot; "
        f"object_id {int(hit.object_id)}<br>"
        f'<span class="path">{e(hit.path)}</span></div></div>'
    )


def _scores(hit: Hit) -> str:
    """The scores a search gave ``hit``: similarity, keyword score (BM25), fused score."""
    named = (("similarity", hit.similarity), ("keyword score", hit.keyword_score), ("fused score", hit.fused_score))
    return " &middot; ".join(f"{name} {value:.3f}" for name, value in named if value is not None)


def render_gallery(hits: Sequence[Hit], out_path: str | os.PathLike, *, title: str,
                   thumb_side: int = 320, masks: dict[int, dict] | None = None) -> Path:
    """Write a self-contained HTML gallery of ``hits`` (in rank order) to ``out_path``.

    Thumbnails have max side <= ``thumb_side`` pixels; each hit's box (pixels of the
    EXIF-oriented original) is scaled onto its thumbnail, and its mask (``masks``: object id ->
    COCO RLE, ``Index.masks``) is filled in. Each distinct path is decoded once.
    Unreadable images get an "image not available" placeholder. The file is written
    atomically (temp file + os.replace); parent directories are created. Returns the path.
    """
    out = Path(out_path)
    cache: dict[str, tuple[Image.Image, float, float] | None] = {}
    cards = []
    for hit in sorted(hits, key=lambda h: h.rank):
        if hit.path not in cache:
            cache[hit.path] = _load_thumb(hit.path, thumb_side)
        cards.append(_card(hit, cache[hit.path], thumb_side, (masks or {}).get(hit.object_id)))
    body = "\n".join(cards) if cards else '<p class="empty">No results</p>'
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f'<div class="grid">\n{body}\n</div>\n</body></html>\n'
    )
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
