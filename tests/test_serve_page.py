"""The search page in a real browser (Debian's chromium, driven by Playwright) against a live
`objsearch serve` over the sample photos indexed with the bundled embedder.

Playwright's own browser download needs the internet; the Makefile installs the system chromium
with apt-get, and these tests launch it by its path. Set OBJSEARCH_SCREENSHOT=FILE to keep the
screenshot of the results page (the README's picture is made that way).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from objsearch.box_ops import box_iou
from tests.conftest import REPO
from tests.test_bundled import DARKNET_DOG

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test installs it)")

CHROMIUM_PATHS = ("chromium", "chromium-browser", "/usr/bin/chromium", "/usr/lib/chromium/chromium")


def chromium_path() -> str | None:
    for name in CHROMIUM_PATHS:
        found = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(bundled_index, sample_photos):
    if not (sample_photos / "darknet-dog.jpg").exists():
        pytest.skip("Debian darknet photos not present (make test fetches them with apt-get download)")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "objsearch", "serve", "--index", str(bundled_index), "--port", str(port)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"objsearch serve did not start: {process.communicate()[0][-2000:]}")
        time.sleep(0.3)
    yield base
    # Ctrl-C stops it cleanly and quickly
    process.send_signal(signal.SIGINT)
    try:
        output = process.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("objsearch serve did not stop within 20 s of Ctrl-C")
    assert process.returncode == 0, output[-2000:]
    assert "Traceback" not in output, output[-2000:]


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on this machine (make test installs Debian's chromium with apt-get)")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server)
    opened = context.new_page()
    outside = []
    opened.on("request", lambda request: outside.append(request.url) if not request.url.startswith((server, "data:", "blob:")) else None)
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not outside, f"the page loaded from outside the server: {outside}"
    assert not errors, f"script errors on the page: {errors}"


def search(page, text):
    page.goto("/")
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_selector("#results .card")


def card_box(card) -> np.ndarray:
    return np.array([[float(v) for v in card.get_attribute("data-box").split(",")]])


def dog_card(page):
    for card in page.query_selector_all("#results .card"):
        if card.get_attribute("data-path").endswith("darknet-dog.jpg") and card.get_attribute("data-label") == "dog":
            return card
    raise AssertionError("no card of the dog in darknet-dog.jpg")


def test_typing_dog_shows_a_crop_of_the_dog(page, tmp_path):
    search(page, "dog")
    assert "q=dog" in page.url
    first = page.query_selector("#results .card")
    assert first.get_attribute("data-label") == "dog"
    card = dog_card(page)
    assert box_iou(card_box(card), np.array([DARKNET_DOG]))[0, 0] >= 0.5
    thumb = card.query_selector("img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb)
    # the crop is the box's region: its aspect ratio is the box's
    x1, y1, x2, y2 = card_box(card)[0]
    width, height = thumb.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert abs(width / height - (x2 - x1) / (y2 - y1)) < 0.1
    screenshot = os.environ.get("OBJSEARCH_SCREENSHOT")
    picture = Path(screenshot or tmp_path / "objsearch-page.jpg")
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].slice(0, 12).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(picture), quality=80 if picture.suffix == ".jpg" else None)
    assert picture.stat().st_size > 10_000


def test_opening_a_hit_shows_its_box_on_the_photo(page):
    search(page, "dog")
    card = dog_card(page)
    card.query_selector(".thumb").click()
    page.wait_for_selector("#detail[open]")
    page.wait_for_function("() => { const i = document.getElementById('detail-image'); return i.complete && i.naturalWidth > 0; }")
    selected = page.query_selector("#detail-boxes rect.selected")
    assert selected.get_attribute("data-object-id") == card.get_attribute("data-object-id")
    # the box is drawn where the dog is on the photo as shown
    photo = page.query_selector("#detail-image").bounding_box()
    drawn = selected.bounding_box()
    natural_width = page.eval_on_selector("#detail-image", "img => img.naturalWidth")
    # the photo is sent at most 1600 px a side: darknet's dog.jpg is 768 px wide, sent as it is
    scale = photo["width"] / natural_width
    x1, y1, x2, y2 = card_box(card)[0] * scale
    assert abs(drawn["x"] - photo["x"] - x1) < 4 and abs(drawn["y"] - photo["y"] - y1) < 4
    assert abs(drawn["width"] - (x2 - x1)) < 6 and abs(drawn["height"] - (y2 - y1)) < 6
    # the photo's other objects are outlined too
    others = page.query_selector_all("#detail-boxes rect.other")
    objects = page.evaluate("id => fetch('/api/v1/images/' + id).then(r => r.json()).then(b => b.objects.length)", card.get_attribute("data-image-id"))
    assert len(others) == objects - 1 and objects >= 2
    assert "dog" in page.inner_text("#detail-meta")


def test_more_like_this_and_the_back_button(page):
    search(page, "dog")
    card = dog_card(page)
    object_id = card.get_attribute("data-object-id")
    card.query_selector(".thumb").click()
    page.wait_for_selector("#detail[open]")
    page.click("#detail-like")
    page.wait_for_url(f"**object={object_id}**")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length > 0")
    ids = [c.get_attribute("data-object-id") for c in page.query_selector_all("#results .card")]
    assert object_id not in ids
    assert page.query_selector("#results .card").get_attribute("data-label") in ("dog", "cat", "horse", "sheep", "cow")
    page.go_back()
    page.wait_for_url("**q=dog**")
    page.wait_for_function("() => document.querySelector('#results .card') && document.getElementById('q').value === 'dog'")
    assert page.query_selector("#results .card").get_attribute("data-label") == "dog"


def test_searching_by_a_dragged_box_on_an_uploaded_photo(page, sample_photos):
    page.goto("/")
    page.click("#photo-button")
    page.set_input_files("#upload", str(sample_photos / "darknet-dog.jpg"))
    page.wait_for_function("() => { const i = document.getElementById('region-image'); return i.complete && i.naturalWidth > 0; }")
    shown = page.query_selector("#region-image").bounding_box()
    natural = page.eval_on_selector("#region-image", "img => img.naturalWidth")
    scale = shown["width"] / natural
    x1, y1, x2, y2 = (v * scale for v in DARKNET_DOG)
    page.mouse.move(shown["x"] + x1, shown["y"] + y1)
    page.mouse.down()
    page.mouse.move(shown["x"] + (x1 + x2) / 2, shown["y"] + (y1 + y2) / 2, steps=5)
    page.mouse.move(shown["x"] + x2, shown["y"] + y2, steps=5)
    page.mouse.up()
    assert page.is_visible("#region-box")
    # the box sent is the dragged one, in the photo's own pixels
    sent = [float(v) for v in page.inner_text("#region-status").removeprefix("Box ").removesuffix(" px.").split(", ")]
    assert np.allclose(sent, DARKNET_DOG, atol=3 / scale)
    page.click("#region-search")
    page.wait_for_selector("#results .card")
    first = page.query_selector("#results .card")  # the dog itself: the same photo is in the index
    assert first.get_attribute("data-label") == "dog" and first.get_attribute("data-path").endswith("darknet-dog.jpg")
    assert box_iou(card_box(first), np.array([DARKNET_DOG]))[0, 0] >= 0.5
    assert "photo=darknet-dog.jpg" in page.url


def test_filtering_by_a_label(page):
    search(page, "animal")
    page.wait_for_function("() => document.querySelectorAll('#label-filter option').length > 1")  # the facets
    labels = page.eval_on_selector_all("#label-filter option", "options => options.map(o => o.value)")
    assert "person" in labels
    page.select_option("#label-filter", "person")
    page.wait_for_url("**label=person**")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length > 0 && "
                           "[...document.querySelectorAll('#results .card')].every(c => c.dataset.label === 'person')")
    assert {c.get_attribute("data-label") for c in page.query_selector_all("#results .card")} == {"person"}


def test_a_bad_filter_shows_its_message(page):
    search(page, "dog")
    page.fill("#where", "width >>> 3")
    page.press("#where", "Enter")
    page.wait_for_selector("#message.error:not([hidden])")
    assert "Bad filter" in page.inner_text("#message")
    assert page.query_selector_all("#results .card") == []


def test_matching_exact_words(page):
    search(page, "espresso")
    vector_cards = len(page.query_selector_all("#results .card"))
    page.select_option("#mode", "keyword")
    page.wait_for_url("**mode=keyword**")
    page.wait_for_function("() => { const cards = [...document.querySelectorAll('#results .card')];"
                           " return cards.length > 0 && cards.every(c => c.querySelector('.caption').textContent.includes('espresso')); }")
    cards = page.query_selector_all("#results .card")
    assert 1 <= len(cards) < vector_cards  # only the objects whose caption says it
    assert cards[0].query_selector(".sim").get_attribute("title") == "keyword score (BM25)"
    assert page.is_disabled("#min-similarity")  # a similarity floor is for vector search only
    page.reload()  # the mode is part of the page's address
    page.wait_for_selector("#results .card")
    assert page.eval_on_selector("#mode", "select => select.value") == "keyword"
    assert len(page.query_selector_all("#results .card")) == len(cards)
    page.select_option("#mode", "hybrid")  # ranked by the fused score, and the card says so
    page.wait_for_url("**mode=hybrid**")
    page.wait_for_function("() => { const s = document.querySelector('#results .card .sim'); return s && s.title.startsWith('fused score'); }")
    first = page.query_selector("#results .card .sim")
    assert "similarity" in first.get_attribute("title") and "keyword score" in first.get_attribute("title")
    assert 0 < float(first.inner_text()) < 0.05  # 1/(60 + rank) summed over two rankings


def test_downloading_the_results_as_csv_and_asking_for_no_near_duplicates(page):
    search(page, "person")
    shown = [c.get_attribute("data-object-id") for c in page.query_selector_all("#results .card")]
    page.select_option("#download-format", "csv")
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "objsearch-results.csv"
    rows = Path(download.value.path()).read_text().splitlines()
    assert rows[0].startswith("rank,similarity,object_id") and [r.split(",")[2] for r in rows[1:]] == shown
    asked = []
    page.on("request", lambda request: asked.append(request.url) if "/api/v1/search" in request.url else None)
    page.check("#dedup")
    page.wait_for_url("**dedup=1**")
    page.wait_for_selector("#results .card")
    assert asked and "dedup=true" in asked[-1]
