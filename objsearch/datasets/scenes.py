"""Generated COCO-style scenes for tests and benchmarks: coloured rectangles on white, with their annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20), "purple": (140, 40, 200)}


def make_scene(path: Path, seed: int, *, size: tuple[int, int] = (320, 240), count: int = 3) -> list[dict]:
    """Write a PNG/JPEG with ``count`` non-overlapping rectangles; returns COCO-like annotations
    ({"bbox_xyxy": [x1, y1, x2, y2] pixels, "colour": name})."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.full((height, width, 3), 255, np.uint8)
    annotations: list[dict] = []
    names = list(COLOURS)
    cell = width // count
    for i in range(count):
        w = int(rng.integers(cell // 3, cell - 10))
        h = int(rng.integers(height // 4, height - 20))
        x1 = i * cell + int(rng.integers(2, cell - w - 2))
        y1 = int(rng.integers(5, height - h - 5))
        colour = names[int(rng.integers(len(names)))]
        pixels[y1 : y1 + h, x1 : x1 + w] = COLOURS[colour]
        annotations.append({"bbox_xyxy": [x1, y1, x1 + w, y1 + h], "colour": colour})
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)
    return annotations


def make_dataset(folder: Path, count: int, *, seed: int = 0, size: tuple[int, int] = (320, 240)) -> dict[str, list[dict]]:
    """``count`` scenes in ``folder`` (+ instances.json in COCO format); returns path -> annotations."""
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, list[dict]] = {}
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(COLOURS)]}
    for i in range(count):
        path = folder / f"scene_{i:04d}.png"
        annotations = make_scene(path, seed * 100_000 + i, size=size)
        truth[str(path.resolve())] = annotations
        coco["images"].append({"id": i, "file_name": path.name, "width": size[0], "height": size[1]})
        for a in annotations:
            x1, y1, x2, y2 = a["bbox_xyxy"]
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": list(COLOURS).index(a["colour"]) + 1, "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    (folder.parent / f"{folder.name}_instances.json").write_text(json.dumps(coco))
    return truth
