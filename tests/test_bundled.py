"""The offline default embedder on real photos shipped in packages, boxes annotated by hand here."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.box_ops import box_iou

# Hand-annotated boxes (pixels, xyxy), read off the photos with a 50-px grid drawn over them.
CHELSEA_CAT = (0, 0, 400, 300)
DARKNET_DOG = (130, 220, 310, 540)


def test_cat_query_finds_the_cat_in_chelsea(bundled_index):
    with open_index(bundled_index) as idx:
        top = idx.search_text("cat", k=1)[0]
    assert os.path.basename(top.path) == "skimage-chelsea.png"
    assert box_iou(np.array([top.box_xyxy]), np.array([CHELSEA_CAT]))[0, 0] >= 0.5


def test_dog_query_finds_a_dog(bundled_index, sample_photos):
    if not (sample_photos / "darknet-dog.jpg").exists():
        pytest.skip("Debian darknet photos not present (make test fetches them with apt-get download)")
    with open_index(bundled_index) as idx:
        hits = idx.search_text("dog", k=2)
    assert all(h.label == "dog" for h in hits)
    dog = next(h for h in hits if h.path.endswith("darknet-dog.jpg"))
    assert box_iou(np.array([dog.box_xyxy]), np.array([DARKNET_DOG]))[0, 0] >= 0.5


def test_classifier_widens_the_vocabulary_beyond_coco(bundled_index):
    # "rocket" is no COCO category: the ImageNet classifier's whole-image label finds it.
    with open_index(bundled_index) as idx:
        top = idx.search_text("rocket", k=1)[0]
    assert os.path.basename(top.path) == "skimage-rocket.jpg"


def test_objects_carry_their_colour_and_region_search_prefers_the_same_look(tmp_path, sample_photos, bundled_embedder):
    """Chelsea, a mirrored copy, and a copy with the cat's hues turned blue."""
    original = Image.open(sample_photos / "skimage-chelsea.png").convert("RGB")
    folder = tmp_path / "cats"
    folder.mkdir()
    original.save(folder / "orange.png")
    original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "mirrored.png")
    hsv = np.asarray(original.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(255 * 0.55)) % 256  # orange -> blue
    hsv[..., 1] = np.maximum(hsv[..., 1], 110)
    Image.fromarray(hsv, "HSV").convert("RGB").save(folder / "blue.png")
    index_folders([folder], tmp_path / "idx", embedder=bundled_embedder, options=IndexOptions(progress=False, workers=1))
    with open_index(tmp_path / "idx", model=bundled_embedder) as idx:
        blue = idx.search_text("blue cat", k=1, where="label = 'cat'")[0]
        orange = idx.search_text("orange cat", k=1, where="label = 'cat'")[0]
        similar = idx.search_region(folder / "orange.png", CHELSEA_CAT, k=3, where="label = 'cat'")
    assert os.path.basename(blue.path) == "blue.png"
    assert os.path.basename(orange.path) in ("orange.png", "mirrored.png")
    assert [os.path.basename(h.path) for h in similar][:2] in (["orange.png", "mirrored.png"], ["mirrored.png", "orange.png"])
    assert similar[0].similarity > 0.95


def test_embeddings_are_unit_length_and_text_cache_is_consistent(bundled_embedder):
    texts = ["red umbrella", "dog", "red umbrella"]
    first = bundled_embedder.embed_texts(texts)
    again = bundled_embedder.embed_texts(texts[::-1])
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[0], again[0])
    assert first.shape == (3, bundled_embedder.embed_dim) == (3, 512)


def test_blank_and_tiny_images_give_no_objects_and_no_error(bundled_embedder):
    for image in (np.full((64, 64, 3), 255, np.uint8), np.zeros((1, 1, 3), np.uint8)):
        detections = bundled_embedder.detect([image])[0]
        assert len(detections) == 0 and detections.embeddings.shape == (0, 512)


def test_a_label_that_holds_across_scales_names_the_subject(bundled_embedder):
    """scikit-learn's dahlia: its tight crop reads "mushroom", the wider ones "daisy" (ImageNet has
    no dahlia), so across scales it is a daisy, as a user searching "flower" needs."""
    from sklearn.datasets import load_sample_image

    from objsearch.embedders.bundled import SUBJECT_SCALES

    flower = load_sample_image("flower.jpg")  # (427, 640, 3) uint8
    box = (167, 87, 447, 360)  # the dahlia, drawn by hand
    classifier = bundled_embedder.classifier
    assert classifier.top1(flower[87:360, 167:447])[0] == "mushroom"
    label, prob, agreeing = classifier.across_scales(flower, box, SUBJECT_SCALES)
    assert (label, agreeing) == ("daisy", 2) and 0 < prob < 1
    assert classifier.across_scales(flower, box, (1.0,))[:3:2] == ("mushroom", 1)
