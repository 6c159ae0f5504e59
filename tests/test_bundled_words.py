"""How the bundled embedder puts an object into words, and which objects it gives a photo (the image
models are stubs here; only the sentence encoder is real)."""

from __future__ import annotations

import numpy as np

from objsearch.box_ops import box_iou
from objsearch.embedders.bundled import CONTEXT_MIN_PROB, BundledEmbedder, _colour_pixels, describe
from objsearch.embedders.colour import dominant_colour
from objsearch.embedders.ssd import FEATURE_DIM, SsdOutput


def test_a_person_is_described_by_their_clothes_and_what_the_classifier_sees_with_them():
    words = describe("person", "blue", "military uniform", 0.7, 0.8)
    assert words.caption == "a person in blue (military uniform)"
    assert words.phrases == ("a person in blue", "a person with a military uniform")
    dog = describe("dog", "gray", "malamute", 0.6, 0.9)
    assert dog.phrases == ("a gray dog", "a gray malamute") and dog.caption == "a gray dog (malamute)"


def test_each_description_weighs_as_much_as_its_source_is_sure():
    weak_detection = describe("mouse", "white", "football helmet", 0.9, 0.5)
    assert weak_detection.weights[1] > weak_detection.weights[0]  # the classifier is surer than the detector
    sure_detection = describe("bird", "brown", "bald eagle", 0.3, 1.0)
    assert sure_detection.weights[0] > 2 * sure_detection.weights[1]
    unsure_classifier = describe("cat", "orange", "tabby", 0.1, 0.9)
    assert unsure_classifier.phrases == ("an orange cat",) and unsure_classifier.caption == "an orange cat"


def test_a_person_is_also_described_in_their_scene_when_the_classifier_is_sure_of_it():
    on_beach = describe("person", "blue", "person", 0.0, 0.8, scene=("seashore", 0.76))
    assert on_beach.phrases == ("a person in blue", "a person in blue, seashore")
    assert describe("person", "blue", "person", 0.0, 0.8, scene=("seashore", CONTEXT_MIN_PROB / 2)).phrases == ("a person in blue",)
    assert describe("kite", "green", "kite", 0.0, 0.9, scene=("seashore", 0.76)).phrases == ("a green kite",)


def test_a_persons_colour_is_their_clothes_not_their_face_or_what_stands_beside_them():
    crop = np.full((200, 100, 3), (230, 140, 90), np.uint8)  # skin and an orange wall around ...
    crop[70:170, 25:75] = (30, 40, 160)  # ... a dark blue jacket
    everything = np.ones((200, 100), bool)
    assert dominant_colour(crop, everything) == "orange"
    assert dominant_colour(*_colour_pixels(crop, everything, "person")) == "blue"
    assert dominant_colour(*_colour_pixels(crop, everything, "chair")) == "orange"  # only people
    sliver = np.zeros((200, 100), bool)
    sliver[62:68, 30:40] = True  # a failed cut (on the wall, above the jacket): the window itself is read
    assert dominant_colour(*_colour_pixels(crop, sliver, "person")) == "blue"


def test_an_orange_suit_is_orange_and_a_red_bike_red():
    """Hue 13 degrees (an orange flight suit in studio light: the lower quartile of scikit-image's
    astronaut, whose median is 15) is orange; 5 degrees is red."""
    from objsearch.embedders.colour import COLOUR_NAMES, pixel_colour_names

    hsv = np.array([[13.0, 0.8, 0.9], [5.0, 0.8, 0.9], [355.0, 0.8, 0.9]])
    assert [COLOUR_NAMES[i] for i in pixel_colour_names(hsv)] == ["orange", "red", "red"]


# -- which objects a photo gets: the detector's, its subject, the whole photo (stub detector and classifier) --
class _Detector:
    def __init__(self, boxes_norm, labels):
        self.boxes_norm, self.labels = np.asarray(boxes_norm, np.float32).reshape(-1, 4), labels

    def __call__(self, images):
        return [SsdOutput(self.boxes_norm, np.full(len(self.labels), 0.9, np.float32), list(self.labels),
                          np.ones((FEATURE_DIM, 10, 10), np.float32)) for _ in images]


class _Classifier:
    """The whole photo reads ``photo``, any crop ``crop``; across scales, ``subject``."""

    def __init__(self, photo, crop, subject):
        self.photo, self.crop, self.subject, self.subject_calls = photo, crop, subject, 0

    def top1(self, pixels):
        return self.photo if pixels.shape == _flower_photo()[0].shape else self.crop

    def across_scales(self, image, box, scales):
        self.subject_calls += 1
        return self.subject


def _flower_photo():
    """An orange disc on dark green noise -> (photo, the disc's xyxy box in pixels)."""
    rng = np.random.default_rng(1)
    photo = np.stack([rng.normal(mean, 12, (300, 400)) for mean in (30, 90, 40)], axis=-1).clip(0, 255).astype(np.uint8)
    ys, xs = np.mgrid[:300, :400]
    photo[(xs - 170) ** 2 + (ys - 140) ** 2 <= 75**2] = (245, 150, 70)
    return photo, (95, 65, 246, 216)


def _objects(bundled_embedder, boxes_norm, labels, *, photo=("valley", 0.1), crop=("pot", 0.5), subject=("daisy", 0.11, 2)):
    """Detections of the flower photo by the bundled embedder with a stub detector and classifier."""
    embedder = BundledEmbedder.__new__(BundledEmbedder)
    embedder.__dict__.update(bundled_embedder.__dict__)
    embedder.__dict__["detector"] = _Detector(boxes_norm, labels)
    embedder.__dict__["classifier"] = classifier = _Classifier(photo, crop, subject)
    found = embedder.detect([_flower_photo()[0]])[0]
    assert np.allclose(np.linalg.norm(found.embeddings, axis=1), 1, atol=1e-5)
    return found, classifier


def test_a_photo_without_a_large_detection_gets_its_subject_when_the_classifier_names_it_across_scales(bundled_embedder):
    small = [[0.9, 0.9, 0.95, 0.95]]  # a cup in a corner
    found, _ = _objects(bundled_embedder, small, ["cup"])
    assert found.labels == ["cup", "daisy"] and found.captions[1] == "an orange daisy"
    assert box_iou(found.boxes_xyxy[1:], np.array([_flower_photo()[1]], np.float32))[0, 0] >= 0.85
    assert np.isclose(found.scores[1], 0.11)  # the classifier's mean probability
    assert _objects(bundled_embedder, small, ["cup"], subject=("daisy", 0.05, 2))[0].labels == ["cup"]  # too unsure
    assert _objects(bundled_embedder, small, ["cup"], subject=("daisy", 0.11, 1))[0].labels == ["cup"]  # not consistent
    assert _objects(bundled_embedder, small, ["cup"], subject=("daisy", 0.3, 1))[0].labels == ["cup", "daisy"]  # sure
    large, classifier = _objects(bundled_embedder, [[0.0, 0.0, 0.6, 0.6]], ["dog"])
    assert large.labels == ["dog"] and classifier.subject_calls == 0  # a large detection: no subject is looked for


def test_the_whole_photo_is_an_object_unless_one_already_names_it(bundled_embedder):
    bird, no_subject = [[0.1, 0.1, 0.5, 0.5]], ("daisy", 0.0, 0)
    named, _ = _objects(bundled_embedder, bird, ["bird"], photo=("bald eagle", 0.7), crop=("bald eagle", 0.6), subject=no_subject)
    assert named.labels == ["bird"] and named.captions == ["a green bird (bald eagle)"]
    unsure, _ = _objects(bundled_embedder, bird, ["bird"], photo=("bald eagle", 0.7), crop=("bald eagle", 0.1), subject=no_subject)
    assert unsure.labels == ["bird", "bald eagle"] and unsure.boxes_xyxy[1].tolist() == [0, 0, 400, 300]
