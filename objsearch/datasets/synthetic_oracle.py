"""An exact embedder for a generated synthetic set (``objsearch.datasets.synthetic``): an oracle.

It knows each image's objects from the set's own annotations, found by the image's pixels, and
embeds an object as the unit vector ``(onehot(shape) + onehot(colour)) / sqrt(2)``; a text embeds
as the normalised sum of the one-hots of the shape and colour words it names. So the cosine of
"star" with a red star is 0.71 and with a red circle 0, and a query's ranking follows from its
words alone. Tests of the query layer (composed queries, keyword and hybrid search) use it to
know exactly what must come back on the synthetic images; it measures nothing about a model.

Its labels are the shape names and its captions the annotations' ("a small red star").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from objsearch.box_ops import box_iou
from objsearch.datasets.synthetic import COLOURS, SHAPES, SPLITS
from objsearch.embedders.base import Detections

VOCABULARY = list(SHAPES) + list(COLOURS)
EMBED_DIM = len(VOCABULARY)


def pixels_key(image: np.ndarray) -> str:
    """A key of an (H, W, 3) uint8 image's exact pixels."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.blake2b(repr(image.shape).encode() + image.tobytes(), digest_size=16).hexdigest()


def one_hot(words: Sequence[str]) -> np.ndarray:
    """(EMBED_DIM,) float32: the normalised sum of the one-hots of the shape and colour words among
    ``words`` (all zeros when there is none)."""
    vector = np.zeros(EMBED_DIM, np.float32)
    for word in words:
        if word in VOCABULARY:
            vector[VOCABULARY.index(word)] = 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


class SyntheticOracle:
    """The oracle for the set written in ``set_dir`` (every split)."""

    name = "synthetic-oracle"
    version = "1"
    embed_dim = EMBED_DIM

    def __init__(self, set_dir: str | Path) -> None:
        set_dir = Path(set_dir)
        self._objects: dict[str, list[dict]] = {}
        for split in SPLITS:
            coco = json.loads((set_dir / "annotations" / f"instances_{split}.json").read_text())
            shapes = {c["id"]: c["name"] for c in coco["categories"]}
            by_image: dict[int, list[dict]] = {}
            for a in coco["annotations"]:
                x, y, w, h = a["bbox"]
                by_image.setdefault(a["image_id"], []).append(
                    {"box": [x, y, x + w, y + h], "shape": shapes[a["category_id"]], "colour": a["colour"], "caption": a["caption"]})
            for record in coco["images"]:
                pixels = np.asarray(Image.open(set_dir / "images" / split / record["file_name"]).convert("RGB"))
                self._objects[pixels_key(pixels)] = by_image.get(record["id"], [])

    def _objects_of(self, image: np.ndarray) -> list[dict]:
        key = pixels_key(image)
        if key not in self._objects:
            raise ValueError("this image is not one of the synthetic set's (the oracle knows only those)")
        return self._objects[key]

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for image in images:
            objects = self._objects_of(image)
            n = len(objects)
            out.append(Detections(
                boxes_xyxy=np.array([o["box"] for o in objects], np.float32).reshape(n, 4),
                scores=np.ones(n, np.float32),
                labels=[o["shape"] for o in objects],
                embeddings=np.array([one_hot([o["shape"], o["colour"]]) for o in objects], np.float32).reshape(n, EMBED_DIM),
                captions=[o["caption"] for o in objects],
            ))
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([one_hot(text.lower().split()) for text in texts], np.float32).reshape(len(texts), EMBED_DIM)

    def embed_regions(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Each box embeds as the annotated object it overlaps most (zeros where it overlaps none)."""
        objects = self._objects_of(image)
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
        if not objects:
            return np.zeros((len(boxes), EMBED_DIM), np.float32)
        overlaps = box_iou(boxes, np.array([o["box"] for o in objects], np.float32))
        return np.array([one_hot([objects[j]["shape"], objects[j]["colour"]]) if overlaps[i, j] > 0 else np.zeros(EMBED_DIM, np.float32)
                         for i, j in enumerate(overlaps.argmax(axis=1))], np.float32)
