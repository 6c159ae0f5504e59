"""Synthetic COCO-format training set: coloured shapes on textured backgrounds.

``generate(out_dir, config)`` writes, per split ("train", "val", "test")::

    OUT/images/{split}/{image_id:06d}.png          RGB PNG, image_size x image_size
    OUT/annotations/instances_{split}.json         COCO instances (+ "colour", "rgb", "size", "caption", "phrases")
    OUT/annotations/captions_{split}.json          COCO captions, 1-2 per image
    OUT/annotations/refs_{split}.json              RefCOCO-style referring expressions (list of refs)
    OUT/dataset.json                               config + counts; written last (marks a complete set)

Every object has one flat RGB colour (no anti-aliasing) and backgrounds are low-saturation mid
greys, so an object's visible mask is exactly the pixels of its colour. Image ``i`` of a split is
drawn from its own RNG seeded by ``(seed, split, i)``: splits are independent of each other's sizes.
Image, annotation, ref and sentence ids are unique across splits (train first, then val, test).
An object's "caption" names size, colour and shape ("a small red star"); its "phrases" list the shorter
true description people search with ("a red star"); the training loader draws one of the two per object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from objsearch.embedders.masks import rle

log = logging.getLogger(__name__)

#: Bumped whenever the output for a given config changes; part of the "same set?" check.
GENERATOR_VERSION = 2  # 2: annotations gained "phrases"
#: The "generator" recorded in dataset.json: the module's first home, kept so that a set written
#: here is byte-identical to one written before the move (it names the generator, not an import path).
GENERATOR_NAME = "training.data.synthetic"
SPLITS = ("train", "val", "test")
#: Category names in category-id order (id = index + 1); also the long-tail order (first = most frequent).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "heart", "crescent", "arrow", "semicircle", "hexagon", "hourglass")
#: Saturated colours (channel spread >= 130) plus white and black, whose lightness lies outside the
#: background range: no background pixel can equal an object colour (see ``_BG_RANGE``).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "orange": (245, 140, 20), "yellow": (240, 225, 30), "green": (35, 175, 60),
    "cyan": (30, 200, 215), "blue": (35, 75, 225), "purple": (140, 50, 205), "pink": (250, 120, 200),
    "white": (245, 245, 245), "black": (20, 20, 20),
}  # fmt: skip
SIZES = ("small", "medium", "large")
#: Background kind -> the adjective used in captions.
BACKGROUNDS = {"noise": "grainy", "stripes": "striped", "gradient": "shaded", "checker": "checkered", "clouds": "cloudy"}
_BG_RANGE = (64, 208)  # background pixel values are clipped to this; white >= 233 and black <= 32 after jitter
_BG_TINT = np.array([1.0, 0.5, -0.6])  # beige direction; tint <= 14 keeps the channel spread <= 23
_RELATIONS = ("left of", "right of", "above", "below")
_SIZE_CONTRAST = 1.25  # "the large X" only when the target's side is >= 1.25x (or <=) every other X's


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class SyntheticConfig:
    """Everything that determines a synthetic set; saved in ``dataset.json``."""

    seed: int = _opt(0, "master seed; image i of split s draws from an RNG seeded by (seed, s, i)")
    image_size: int = _opt(128, "image side in pixels (square images); all sizes are relative to it")
    num_train: int = _opt(2000, "number of train images")
    num_val: int = _opt(200, "number of val images")
    num_test: int = _opt(200, "number of test images")
    min_objects: int = _opt(1, "fewest objects drawn per image")
    max_objects: int = _opt(4, "most objects drawn per image (fewer if a placement keeps failing)")
    tail_ratio: float = _opt(10.0, "sampling probability of the most frequent shape / that of the rarest (geometric fall-off)")
    size_edges: tuple[float, float, float, float] = _opt((0.10, 0.18, 0.30, 0.45), "small/medium/large bin edges of the longest side, fraction of the image side")
    min_visible: float = _opt(0.5, "an earlier object must keep at least this fraction of its area visible")
    min_visible_area: float = _opt(0.0015, "every visible mask must cover at least this fraction of the image area")
    duplicate_prob: float = _opt(0.2, "chance that an object repeats an earlier object's shape and colour (needs size/spatial refs)")
    colour_jitter: int = _opt(12, "per-object uniform jitter of each RGB channel, +-value")
    rare_fraction: float = _opt(0.07, "frequency 'r' if a category is in fewer than this fraction of train images")
    common_fraction: float = _opt(0.2, "frequency 'c' if below this fraction (and not 'r'), else 'f'")
    placement_tries: int = _opt(30, "random positions tried per object before it is dropped")

    def __post_init__(self) -> None:
        self.size_edges = tuple(float(e) for e in self.size_edges)  # JSON round trip gives a list
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if len(self.size_edges) != 4 or list(self.size_edges) != sorted(self.size_edges) or not 0 < self.size_edges[0] < self.size_edges[3] <= 0.9:
            raise ValueError(f"size_edges must be 4 increasing fractions in (0, 0.9], got {self.size_edges}")
        if self.tail_ratio < 1 or not 0 <= self.min_visible <= 1 or not 0 <= self.duplicate_prob <= 1:
            raise ValueError("need tail_ratio >= 1 and min_visible, duplicate_prob in [0, 1]")
        if min(self.num_train, self.num_val, self.num_test) < 0 or not self.rare_fraction <= self.common_fraction:
            raise ValueError("split sizes must be >= 0 and rare_fraction <= common_fraction")

    def shape_probabilities(self) -> np.ndarray:
        """(len(SHAPES),) sampling probabilities, falling off geometrically from SHAPES[0] to SHAPES[-1]."""
        weights = self.tail_ratio ** (-np.arange(len(SHAPES)) / (len(SHAPES) - 1))
        return weights / weights.sum()

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}


class SyntheticSetConflict(FileExistsError):
    """The output directory holds something other than a set generated with this config."""


# ----------------------------------------------------------------------------- geometry


def _regular(n: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], 1)


def _arc(centre: tuple[float, float], radius: float, start: float, stop: float, n: int = 40) -> np.ndarray:
    angles = np.linspace(start, stop, n)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1)


def _crescent(offset: float = 0.45, inner: float = 0.85) -> np.ndarray:
    """Unit disc minus a disc of radius ``inner`` centred at (offset, 0), as one polygon."""
    x = (1 + offset**2 - inner**2) / (2 * offset)  # where the two circles cross
    outer_angle = np.arctan2(np.sqrt(1 - x**2), x)
    inner_angle = np.arctan2(np.sqrt(1 - x**2), x - offset)
    return np.concatenate([_arc((0, 0), 1, outer_angle, 2 * np.pi - outer_angle), _arc((offset, 0), inner, 2 * np.pi - inner_angle, inner_angle)])


def _star(points: int = 5, inner: float = 0.48) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return _regular(2 * points) * radii[:, None]


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1) / 16


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)])


#: shape -> (filled polygons, holes); unit-sized, y down. Built once at import.
_POLYGONS: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
    "circle": ([_regular(48)], []),
    "square": ([_regular(4, phase=np.pi / 4)], []),
    "triangle": ([_regular(3, phase=-np.pi / 2)], []),
    "star": ([_star()], []),
    "ring": ([_regular(48)], [_regular(48, 0.55)]),
    "cross": ([_cross()], []),
    "heart": ([_heart()], []),
    "crescent": ([_crescent()], []),
    "arrow": ([np.array([(-1, -0.22), (0.1, -0.22), (0.1, -0.6), (1, 0), (0.1, 0.6), (0.1, 0.22), (-1, 0.22)])], []),
    "semicircle": ([_arc((0, 0), 1, 0, np.pi, 33)], []),
    "hexagon": ([_regular(6)], []),
    "hourglass": ([np.array([(-0.8, -1), (0.8, -1), (0.14, 0), (0.8, 1), (-0.8, 1), (-0.14, 0)])], []),
}
assert tuple(_POLYGONS) == SHAPES


def shape_mask(shape: str, length: float, angle: float) -> np.ndarray:
    """(h, w) bool mask of ``shape`` rotated by ``angle`` radians, cropped to its tight box, whose
    longest side is ``length`` pixels (to within one pixel). Hard edges: no anti-aliasing."""
    filled, holes = _POLYGONS[shape]
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    filled, holes = [p @ rotation.T for p in filled], [p @ rotation.T for p in holes]
    points = np.concatenate(filled)
    low, span = points.min(0), points.max(0) - points.min(0)
    scale = (length - 1) / span.max()
    width, height = (np.ceil(span * scale) + 1).astype(int)
    canvas = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(canvas)
    for polygons, value in ((filled, 1), (holes, 0)):
        for polygon in polygons:
            draw.polygon([tuple(v) for v in ((polygon - low) * scale).tolist()], fill=value)
    mask = np.asarray(canvas, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _background(rng: np.random.Generator, size: int) -> tuple[str, np.ndarray]:
    """(kind, (size, size, 3) uint8): a low-saturation grey/beige texture inside ``_BG_RANGE``."""
    kind = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    y, x = np.mgrid[0:size, 0:size] / size
    theta = rng.uniform(0, np.pi)
    along = x * np.cos(theta) + y * np.sin(theta)  # coordinate along a random direction, in image sides
    contrast = rng.uniform(15, 40) * rng.choice([-1, 1])
    if kind == "stripes":
        pattern = (along / rng.uniform(0.05, 0.16) % 1 < 0.5).astype(float)
    elif kind == "gradient":
        pattern = along - along.mean()
    elif kind == "checker":
        cell = rng.uniform(0.06, 0.2)
        pattern = ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(float)
    elif kind == "clouds":
        coarse = Image.fromarray(rng.uniform(-0.5, 0.5, (6, 6)).astype(np.float32), mode="F")
        pattern = np.asarray(coarse.resize((size, size), Image.BICUBIC))
    else:
        pattern = np.zeros((size, size))
    lightness = rng.uniform(95, 175) + contrast * pattern + rng.normal(0, rng.uniform(2, 7), (size, size))
    rgb = lightness[..., None] + rng.uniform(0, 14) * _BG_TINT  # same noise in all channels: stays unsaturated
    return kind, np.clip(np.rint(rgb), *_BG_RANGE).astype(np.uint8)


# ----------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    """One rendered image: ``image`` (H, W, 3) uint8, ``objects`` (see ``render_image``), ``background`` kind."""

    image: np.ndarray
    objects: list[dict]
    background: str


def render_scene(rng: np.random.Generator, config: SyntheticConfig) -> Scene:
    """Draw background and objects; objects are placed in order, later ones on top, and a
    placement is rejected when it leaves an earlier object under ``min_visible`` of its area or
    any visible mask under ``min_visible_area`` of the image."""
    size = config.image_size
    background, image = _background(rng, size)
    labels = np.full((size, size), -1, np.int16)  # index of the topmost object per pixel
    drawn: list[dict] = []
    visible: list[int] = []
    min_pixels = config.min_visible_area * size * size
    for _ in range(rng.integers(config.min_objects, config.max_objects + 1)):
        if drawn and rng.random() < config.duplicate_prob:
            source = drawn[rng.integers(len(drawn))]
            shape, colour = source["shape"], source["colour"]
        else:
            shape = SHAPES[rng.choice(len(SHAPES), p=config.shape_probabilities())]
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
        size_bin = int(rng.integers(len(SIZES)))
        length = rng.uniform(config.size_edges[size_bin], config.size_edges[size_bin + 1]) * size
        mask = shape_mask(shape, length, rng.uniform(0, 2 * np.pi))
        jitter = rng.integers(-config.colour_jitter, config.colour_jitter + 1, 3)
        rgb = tuple(int(c) for c in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
        height, width = mask.shape
        for _ in range(config.placement_tries):
            top, left = int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - width + 1))
            window = labels[top : top + height, left : left + width]
            covered = window[mask]
            lost = np.bincount(covered[covered >= 0], minlength=len(drawn))
            remaining = np.array(visible, dtype=float) - lost
            keeps = np.maximum(config.min_visible * np.array([o["full_area"] for o in drawn]), min_pixels)
            if mask.sum() >= min_pixels and all(remaining >= keeps):
                window[mask] = len(drawn)
                visible = [int(v) for v in remaining] + [int(mask.sum())]
                drawn.append({"shape": shape, "colour": colour, "rgb": rgb, "size": SIZES[size_bin], "length": float(length), "full_area": int(mask.sum())})
                break
    objects = []
    for index, obj in enumerate(drawn):
        visible_mask = labels == index
        image[visible_mask] = obj["rgb"]
        rows, cols = np.flatnonzero(visible_mask.any(1)), np.flatnonzero(visible_mask.any(0))
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        phrase = f"a {obj['size']} {obj['colour']} {obj['shape']}"
        objects.append({**obj, "category_id": SHAPES.index(obj["shape"]) + 1, "mask": visible_mask, "bbox": bbox, "area": int(visible_mask.sum()), "caption": phrase, "phrases": [f"a {obj['colour']} {obj['shape']}"]})
    return Scene(image, objects, background)


def render_image(rng: np.random.Generator, config: SyntheticConfig) -> tuple[np.ndarray, list[dict]]:
    """(image (H, W, 3) uint8, objects). Each object: "shape", "category_id" (1-based), "colour"
    (name), "rgb" (the exact pixel value), "size" (bin name), "length" (drawn longest side, px),
    "full_area" (px before occlusion), "mask" (H, W) bool visible pixels, "bbox" [x, y, w, h] of the
    visible mask, "area" (visible px), "caption" ("a small red star"), "phrases" (["a red star"])."""
    scene = render_scene(rng, config)
    return scene.image, scene.objects


# ----------------------------------------------------------------------------- language


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _centre(obj: dict) -> np.ndarray:
    x, y, w, h = obj["bbox"]
    return np.array([x + w / 2, y + h / 2])


def image_captions(scene: Scene) -> list[str]:
    """One caption listing every object, plus a left-to-right one when there are several."""
    background = f" on a {BACKGROUNDS[scene.background]} background"
    captions = [_join([o["caption"] for o in scene.objects]) + background]
    if len(scene.objects) > 1:
        ordered = sorted(scene.objects, key=lambda o: _centre(o)[0])
        captions.append("from left to right: " + _join([f"a {o['colour']} {o['shape']}" for o in ordered]))
    return captions


def spatial_relation(target: dict, anchor: dict, margin: float) -> str | None:
    """The dominant-axis relation of target to anchor ("left of", "right of", "above", "below"),
    or None when the box centres are closer than ``margin`` pixels along that axis."""
    dx, dy = _centre(anchor) - _centre(target)
    if max(abs(dx), abs(dy)) < margin:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def _on_side(obj: dict, anchor: dict, relation: str) -> bool:
    """Whether obj's centre lies at all on ``relation``'s side of the anchor's (no margin)."""
    dx, dy = _centre(anchor) - _centre(obj)
    return {"left of": dx > 0, "right of": dx < 0, "above": dy > 0, "below": dy < 0}[relation]


def referring_expressions(objects: list[dict], index: int, image_size: int) -> list[str]:
    """Expressions that pick out ``objects[index]`` alone, simplest first; [] if none does.

    "the red star" when that colour+shape is unique; otherwise "the large red star" when its size
    bin is unique among those and clearly different in length, and/or "the red star left of the
    blue ring" when the anchor's colour+shape is unique and no other red star lies on that side."""
    target = objects[index]
    kind = (target["colour"], target["shape"])
    same = [o for i, o in enumerate(objects) if i != index and (o["colour"], o["shape"]) == kind]
    name = f"{target['colour']} {target['shape']}"
    if not same:
        unique_shape = all(o["shape"] != target["shape"] for i, o in enumerate(objects) if i != index)
        return [f"the {name}"] + ([f"the {target['shape']}"] if unique_shape else [])
    expressions = []
    ratios = [target["length"] / o["length"] for o in same]
    if all(o["size"] != target["size"] for o in same) and all(r >= _SIZE_CONTRAST or r <= 1 / _SIZE_CONTRAST for r in ratios):
        expressions.append(f"the {target['size']} {name}")
    counts: dict[tuple[str, str], int] = {}
    for o in objects:
        counts[(o["colour"], o["shape"])] = counts.get((o["colour"], o["shape"]), 0) + 1
    for anchor in objects:
        if counts[(anchor["colour"], anchor["shape"])] != 1:
            continue
        relation = spatial_relation(target, anchor, margin=0.1 * image_size)
        if relation and not any(_on_side(o, anchor, relation) for o in same):
            expressions.append(f"the {name} {relation} the {anchor['colour']} {anchor['shape']}")
            break
    return expressions


# ----------------------------------------------------------------------------- writing


def _categories(train_annotations: list[dict], num_train: int, config: SyntheticConfig) -> list[dict]:
    """COCO categories with LVIS-style frequency groups from the train split's image counts."""
    images = {c: set() for c in range(1, len(SHAPES) + 1)}
    instances = dict.fromkeys(images, 0)
    for ann in train_annotations:
        images[ann["category_id"]].add(ann["image_id"])
        instances[ann["category_id"]] += 1
    categories = []
    for cid, name in enumerate(SHAPES, start=1):
        fraction = len(images[cid]) / max(num_train, 1)
        frequency = "r" if fraction < config.rare_fraction else "c" if fraction < config.common_fraction else "f"
        categories.append({"id": cid, "name": name, "supercategory": "shape", "frequency": frequency, "image_count": len(images[cid]), "instance_count": instances[cid]})
    return categories


def _render_split(out_dir: Path, split: str, config: SyntheticConfig, ids: dict[str, int]) -> dict[str, list]:
    """Render one split's PNGs; returns its COCO records. ``ids`` holds the next free ids (updated)."""
    folder = out_dir / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    records: dict[str, list] = {"images": [], "annotations": [], "captions": [], "refs": []}
    for index in tqdm(range(config.split_sizes()[split]), desc=f"synthetic {split}", disable=None, leave=False):
        scene = render_scene(np.random.default_rng([config.seed, SPLITS.index(split), index]), config)
        image_id = ids["image"] = ids["image"] + 1
        file_name = f"{image_id:06d}.png"
        Image.fromarray(scene.image).save(folder / file_name)
        records["images"].append({"id": image_id, "file_name": file_name, "width": config.image_size, "height": config.image_size})
        for caption in image_captions(scene):
            ids["caption"] += 1
            records["captions"].append({"id": ids["caption"], "image_id": image_id, "caption": caption})
        for position, obj in enumerate(scene.objects):
            ann_id = ids["annotation"] = ids["annotation"] + 1
            keys = ("category_id", "bbox", "area", "colour", "size", "caption", "phrases")
            records["annotations"].append({"id": ann_id, "image_id": image_id, "iscrowd": 0, "segmentation": rle(obj["mask"]), **{k: obj[k] for k in keys}, "rgb": list(obj["rgb"])})
            expressions = referring_expressions(scene.objects, position, config.image_size)
            if not expressions:
                continue
            sentences = []
            for text in expressions:
                ids["sentence"] += 1
                sentences.append({"sent_id": ids["sentence"], "sent": text, "raw": text, "tokens": text.split()})
            ids["ref"] += 1
            records["refs"].append({"ref_id": ids["ref"], "ann_id": ann_id, "image_id": image_id, "category_id": obj["category_id"], "split": split, "file_name": file_name, "sentences": sentences, "sent_ids": [s["sent_id"] for s in sentences]})
    return records


def _config_json(config: SyntheticConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


def _check_out_dir(out_dir: Path, config: SyntheticConfig) -> bool:
    """True when ``out_dir`` already holds this exact set; raises SyntheticSetConflict when it holds anything else."""
    manifest = out_dir / "dataset.json"
    if manifest.is_file():
        stored = json.loads(manifest.read_text())
        if stored.get("config") == _config_json(config) and stored.get("generator_version") == GENERATOR_VERSION:
            return True
        differences = sorted(k for k, v in _config_json(config).items() if stored.get("config", {}).get(k) != v)
        what = f"config differs in {', '.join(differences)}" if differences else "generator version differs"
        raise SyntheticSetConflict(f"{out_dir} holds a different synthetic set ({what}); use an empty directory or delete it")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SyntheticSetConflict(f"{out_dir} is not empty and holds no dataset.json (an interrupted run?); use an empty directory or delete it")
    return False


def generate(out_dir: Path, config: SyntheticConfig | None = None) -> Path:
    """Write the set described by ``config`` (default: ``SyntheticConfig()``) into ``out_dir``
    (layout in the module docstring) and return ``out_dir``. Returns at once if ``out_dir`` already
    holds the same set; refuses (SyntheticSetConflict) a non-empty directory holding anything else,
    never mixing two sets."""
    out_dir, config = Path(out_dir), config or SyntheticConfig()
    if _check_out_dir(out_dir, config):
        log.info("%s already holds this synthetic set; not regenerating", out_dir)
        return out_dir
    start = time.perf_counter()
    ids = dict.fromkeys(("image", "annotation", "caption", "ref", "sentence"), 0)
    records = {split: _render_split(out_dir, split, config, ids) for split in SPLITS}
    categories = _categories(records["train"]["annotations"], config.num_train, config)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rec in records.items():
        files = {
            "instances": {"info": {"description": f"objsearch synthetic shapes, {split}"}, "images": rec["images"], "annotations": rec["annotations"], "categories": categories},
            "captions": {"images": rec["images"], "annotations": rec["captions"]},
            "refs": rec["refs"],
        }
        for name, content in files.items():
            (out_dir / "annotations" / f"{name}_{split}.json").write_text(json.dumps(content))
        counts[split] = {k: len(v) for k, v in rec.items()}
    groups = {g: [c["name"] for c in categories if c["frequency"] == g] for g in "rcf"}
    manifest = {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "config": _config_json(config), "shapes": list(SHAPES), "colours": COLOURS, "counts": counts, "frequency_groups": groups}
    (out_dir / "dataset.json").write_text(json.dumps(manifest, indent=2))  # last: marks the set complete
    total = {k: sum(c[k] for c in counts.values()) for k in ("images", "annotations", "refs")}
    log.info("synthetic set: %d images (%s), %d objects, %d refs, groups r/c/f = %d/%d/%d, in %.1f s -> %s", total["images"], "/".join(str(counts[s]["images"]) for s in SPLITS), total["annotations"], total["refs"], *(len(groups[g]) for g in "rcf"), time.perf_counter() - start, out_dir)
    return out_dir


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    """One --option per SyntheticConfig field, typed by its default, helped by its metadata."""
    parser = argparse.ArgumentParser(prog="python -m objsearch.datasets.synthetic", description="Write a synthetic COCO-format shapes set (images, instances, captions, refs) into OUT.")
    parser.add_argument("out", type=Path, help="output directory (empty, or holding the same set)")
    for f in fields(SyntheticConfig):
        default, many = f.default, isinstance(f.default, tuple)
        kind = {"type": type(default[0]), "nargs": len(default)} if many else {"type": type(default)}
        parser.add_argument("--" + f.name.replace("_", "-"), default=default, help=f.metadata["help"] + " (default: %(default)s)", **kind)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        generate(args.pop("out"), SyntheticConfig(**args))
    except (SyntheticSetConflict, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
