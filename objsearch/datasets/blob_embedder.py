"""A small deterministic embedder for the generated scenes of ``objsearch.datasets.scenes``:
coloured rectangles on white.

It finds each connected non-white region (scipy.ndimage), names its colour, and embeds it as a
one-hot colour vector plus a little shape signal, so tests and benchmarks of the store, indexer
and CLI run in milliseconds and know exactly which objects must come back. Load it with
``--model objsearch.datasets.blob_embedder:build`` (the `module:factory` form of the embedder registry).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from objsearch.embedders.base import Detections
from objsearch.embedders.colour import COLOUR_NAMES, dominant_colour

EMBED_DIM = len(COLOUR_NAMES) + 2


class BlobEmbedder:
    name = "test-blobs"
    version = "1"
    embed_dim = EMBED_DIM

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: np.ndarray) -> Detections:
        foreground = (np.abs(image.astype(np.int16) - 255).max(axis=-1) > 40)
        labelled, count = ndimage.label(foreground)
        boxes, labels, embeddings = [], [], []
        for sl in ndimage.find_objects(labelled):
            ys, xs = sl
            if (ys.stop - ys.start) * (xs.stop - xs.start) < 16:
                continue
            box = np.array([xs.start, ys.start, xs.stop, ys.stop], np.float32)
            boxes.append(box)
            embedding = self._embed_crop(image[sl])
            embeddings.append(embedding)
            labels.append(COLOUR_NAMES[int(np.argmax(embedding[: len(COLOUR_NAMES)]))])
        n = len(boxes)
        return Detections(
            boxes_xyxy=np.array(boxes, np.float32).reshape(n, 4),
            scores=np.ones(n, np.float32),
            labels=[f"{c} box" for c in labels],
            embeddings=np.array(embeddings, np.float32).reshape(n, EMBED_DIM),
            captions=[f"a {c} box" for c in labels],
        )

    @staticmethod
    def _embed_crop(crop: np.ndarray) -> np.ndarray:
        vector = np.zeros(EMBED_DIM, np.float32)
        vector[COLOUR_NAMES.index(dominant_colour(crop))] = 1.0
        height, width = crop.shape[:2]
        vector[-2] = 0.3 * width / max(width + height, 1)
        vector[-1] = 0.3 * height / max(width + height, 1)
        return vector / np.linalg.norm(vector)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), EMBED_DIM), np.float32)
        for i, text in enumerate(texts):
            words = text.lower().split()
            for c, name in enumerate(COLOUR_NAMES):
                out[i, c] = float(name in words)
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-12)
        return out

    def embed_regions(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        rows = []
        for x1, y1, x2, y2 in np.asarray(boxes_xyxy).astype(int):
            rows.append(self._embed_crop(image[y1:y2, x1:x2]))
        return np.array(rows, np.float32).reshape(-1, EMBED_DIM)


def build(*, device: str | None = None) -> BlobEmbedder:
    return BlobEmbedder()


class OtherBlobEmbedder(BlobEmbedder):
    """Same detections, another identity: for model-mismatch tests."""

    name = "other-blobs"


def build_other(*, device: str | None = None) -> OtherBlobEmbedder:
    return OtherBlobEmbedder()


class SlowBlobEmbedder(BlobEmbedder):
    """The same, 20 ms per image: slow enough for kill and concurrency tests to catch it mid-run."""

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        import time

        time.sleep(0.02 * len(images))
        return super().detect(images)


def build_slow(*, device: str | None = None) -> SlowBlobEmbedder:
    return SlowBlobEmbedder()
