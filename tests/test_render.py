import base64
import io
import logging
import re

import numpy as np
import pytest
from PIL import Image

from objsearch import render
from objsearch.hits import Hit
from objsearch.render import draw_box, render_gallery

ORANGE = np.array([255, 64, 0])


def _hit(rank, path, box=(100, 100, 500, 400), caption="a cat", label="cat", object_id=None):
    return Hit(rank=rank, object_id=object_id if object_id is not None else 1000 + rank, image_id=rank,
               path=str(path), box_xyxy=tuple(float(v) for v in box), similarity=0.87654,
               det_score=0.912, label=label, caption=caption)


@pytest.fixture
def img_path(tmp_path):
    p = tmp_path / "imgs" / "gray.jpg"
    p.parent.mkdir()
    Image.new("RGB", (800, 600), (128, 128, 128)).save(p, quality=95)
    return p


def _data_uris(page):
    return re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)


def _decode(b64):
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    im.load()
    return im


def _is_orange(px, tol=40):
    return bool(np.all(np.abs(np.asarray(px, dtype=int) - ORANGE) <= tol))


def test_writes_file_with_cards_in_rank_order(tmp_path, img_path):
    hits = [_hit(3, img_path, object_id=33), _hit(1, img_path, object_id=11), _hit(2, img_path, object_id=22)]
    out = render_gallery(hits, tmp_path / "new" / "dir" / "g.html", title="My & <query>")
    assert out == tmp_path / "new" / "dir" / "g.html" and out.is_file()
    page = out.read_text(encoding="utf-8")
    assert re.findall(r'data-rank="(\d+)"', page) == ["1", "2", "3"]
    assert page.count('class="card"') == 3 and len(_data_uris(page)) == 3
    assert "My &amp; &lt;query&gt;" in page and "<query>" not in page
    assert "0.877" in page and "0.91" in page and "object_id 11" in page
    assert str(img_path) in page  # full path shown
    assert not list(out.parent.glob("*.tmp"))  # temp file was renamed away
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page


def test_text_is_escaped(tmp_path, img_path):
    evil = tmp_path / 'we<ir>d & "q".jpg'
    Image.open(img_path).save(evil)
    cap = '<script>alert("x")</script> & more'
    page = render_gallery([_hit(1, evil, caption=cap, label="<b>l</b>")], tmp_path / "g.html",
                          title="t").read_text()
    assert "<script>" not in page and "<b>l</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page
    assert "we&lt;ir&gt;d &amp; &quot;q&quot;.jpg" in page


def test_none_caption(tmp_path, img_path):
    page = render_gallery([_hit(1, img_path, caption=None)], tmp_path / "g.html", title="t").read_text()
    assert "None" not in page and "no caption" in page


def test_missing_image_placeholder(tmp_path, img_path, caplog):
    gone = tmp_path / "deleted.jpg"
    hits = [_hit(1, gone), _hit(2, img_path)]
    with caplog.at_level(logging.WARNING, logger="objsearch.render"):
        out = render_gallery(hits, tmp_path / "g.html", title="t")
    page = out.read_text()
    assert page.count('class="card"') == 2
    assert page.count("image not available") == 1 and len(_data_uris(page)) == 1
    assert str(gone) in page
    assert any(str(gone) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_thumbnail_decodes_with_scaled_box(tmp_path, img_path):
    # 800x600, thumb_side=200 -> scale 0.25 -> box (100,100,500,400) -> (25,25,125,100)
    page = render_gallery([_hit(1, img_path)], tmp_path / "g.html", title="t", thumb_side=200).read_text()
    im = _decode(_data_uris(page)[0]).convert("RGB")
    assert max(im.size) <= 200 and im.size == (200, 150)
    a = np.asarray(im)
    assert _is_orange(a[60, 26])    # left edge, mid-height (3px line spans x 25..27)
    assert _is_orange(a[60, 124])   # right edge
    assert _is_orange(a[26, 75])    # top edge
    assert _is_orange(a[99, 75])    # bottom edge
    assert not _is_orange(a[60, 75])  # inside the box stays gray
    assert not _is_orange(a[60, 10]) and not _is_orange(a[130, 160])  # outside too


def test_exif_orientation_applied(tmp_path):
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400x200, displayed rotated 90 deg -> 200x400
    Image.new("RGB", (400, 200), (128, 128, 128)).save(p, exif=exif, quality=95)
    # box in oriented pixels (200 wide, 400 tall); thumb 100 -> scale 0.25
    page = render_gallery([_hit(1, p, box=(20, 40, 180, 360))], tmp_path / "g.html", title="t",
                          thumb_side=100).read_text()
    im = _decode(_data_uris(page)[0]).convert("RGB")
    assert im.size == (50, 100)
    assert _is_orange(np.asarray(im)[50, 6])  # left edge at x=5..7


def test_same_path_decoded_once(tmp_path, img_path, monkeypatch):
    calls = []
    real_open = render.Image.open
    monkeypatch.setattr(render.Image, "open", lambda *a, **k: calls.append(a[0]) or real_open(*a, **k))
    hits = [_hit(1, img_path, box=(0, 0, 100, 100)), _hit(2, img_path, box=(600, 400, 790, 590))]
    page = render_gallery(hits, tmp_path / "g.html", title="t", thumb_side=200).read_text()
    assert len(calls) == 1
    first, second = (np.asarray(_decode(u).convert("RGB")) for u in _data_uris(page))
    # each card has only its own box: hit 1 near top-left, hit 2 near bottom-right
    assert _is_orange(first[12, 1]) and not _is_orange(second[12, 1])
    assert _is_orange(second[125, 151]) and not _is_orange(first[125, 151])


def test_empty_hits(tmp_path):
    out = render_gallery([], tmp_path / "g.html", title="nothing")
    page = out.read_text()
    assert "No results" in page and 'class="card"' not in page


def test_draw_box_returns_copy():
    im = Image.new("RGB", (50, 50), (0, 0, 0))
    boxed = draw_box(im, (10, 10, 40, 40))
    assert boxed is not im and im.getpixel((10, 25)) == (0, 0, 0)
    assert boxed.getpixel((10, 25)) == (255, 64, 0) and boxed.getpixel((12, 25)) == (255, 64, 0)
    assert boxed.getpixel((13, 25)) == (0, 0, 0) and boxed.getpixel((25, 25)) == (0, 0, 0)


def test_a_mask_is_filled_in_on_the_thumbnail_at_any_scale(tmp_path, img_path):
    from objsearch.embedders.masks import rle

    half = np.zeros((300, 400), bool)  # the mask of a half-size copy of the 800x600 photo
    half[50:200, 50:150] = True  # = pixels (100..300, 100..400) of the photo: the box's left part
    hit = _hit(1, img_path, object_id=7)
    page = render_gallery([hit], tmp_path / "g.html", title="t", thumb_side=200, masks={7: rle(half)}).read_text()
    a = np.asarray(_decode(_data_uris(page)[0]).convert("RGB")).astype(int)
    inside, outside = a[60, 50], a[60, 100]  # thumbnail scale 0.25: the mask covers x 25..75, y 25..100
    assert inside[0] > inside[2] + 40 and abs(outside[0] - outside[2]) < 10  # tinted orange / still gray
