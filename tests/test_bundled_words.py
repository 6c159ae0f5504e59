"""How the bundled embedder puts an object into words (no model is loaded here)."""

from __future__ import annotations

import numpy as np

from objsearch.embedders.bundled import CONTEXT_MIN_PROB, _colour_pixels, describe
from objsearch.embedders.colour import dominant_colour


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
    sliver[100:110, 45:55] = True  # a failed cut: the window itself is read
    assert dominant_colour(*_colour_pixels(crop, sliver, "person")) == "blue"


def test_an_orange_suit_is_orange_and_a_red_bike_red():
    """Hue 13 degrees (an orange flight suit in studio light: the lower quartile of scikit-image's
    astronaut, whose median is 15) is orange; 5 degrees is red."""
    from objsearch.embedders.colour import COLOUR_NAMES, pixel_colour_names

    hsv = np.array([[13.0, 0.8, 0.9], [5.0, 0.8, 0.9], [355.0, 0.8, 0.9]])
    assert [COLOUR_NAMES[i] for i in pixel_colour_names(hsv)] == ["orange", "red", "red"]
