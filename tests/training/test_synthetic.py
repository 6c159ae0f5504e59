"""The synthetic shapes set: valid COCO, exact masks, unique referring expressions, a long tail."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from objsearch.datasets.synthetic import (
    COLOURS,
    SHAPES,
    SIZES,
    SPLITS,
    SyntheticConfig,
    SyntheticSetConflict,
    generate,
    render_image,
    shape_mask,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = SyntheticConfig(num_train=30, num_val=10, num_test=10)


def load(root: Path, kind: str, split: str):
    return json.loads((root / "annotations" / f"{kind}_{split}.json").read_text())


def pixels(root: Path, split: str, file_name: str) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / split / file_name).convert("RGB"))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("small"), SMALL)


@pytest.fixture(scope="module")
def large_set(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("large"), SyntheticConfig(seed=1, num_train=400, num_val=0, num_test=0))


def test_every_split_loads_with_pycocotools_and_shares_one_category_list(small_set):
    categories = None
    for split, count in SMALL.split_sizes().items():
        coco = COCO(str(small_set / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == count
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
        assert len(coco.getAnnIds()) >= count  # at least one object per image
        for image in coco.loadImgs(coco.getImgIds()):
            with Image.open(small_set / "images" / split / image["file_name"]) as im:
                assert im.mode == "RGB" and im.size == (image["width"], image["height"]) == (128, 128)
        categories = categories or coco.dataset["categories"]
        assert coco.dataset["categories"] == categories
    manifest = json.loads((small_set / "dataset.json").read_text())
    assert manifest["config"]["num_train"] == 30 and manifest["counts"]["val"]["images"] == 10


@pytest.mark.parametrize("split", SPLITS)
def test_each_mask_is_exactly_the_pixels_of_its_object_colour(small_set, split):
    data = load(small_set, "instances", split)
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in data["images"]:
        rgb = pixels(small_set, split, image["file_name"])
        for ann in by_image[image["id"]]:
            assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert mask.sum() == ann["area"] == mask_utils.area(ann["segmentation"])
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert ann["bbox"] == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
            same_colour = (rgb == ann["rgb"]).all(-1)
            assert same_colour[mask].all()
            # every pixel of that exact RGB belongs to some object drawn in it (background never matches)
            owners = [a for a in by_image[image["id"]] if a["rgb"] == ann["rgb"]]
            assert same_colour.sum() == sum(a["area"] for a in owners)
            assert np.abs(np.array(ann["rgb"]) - COLOURS[ann["colour"]]).max() <= SMALL.colour_jitter
        assert SMALL.min_objects <= len(by_image[image["id"]]) <= SMALL.max_objects


def test_occlusion_happens_but_leaves_every_object_mostly_visible():
    config = SyntheticConfig()
    rng = np.random.default_rng(7)
    fractions, count = [], 0
    for _ in range(150):
        image, objects = render_image(rng, config)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert config.min_objects <= len(objects) <= config.max_objects
        union = np.zeros((128, 128), int)
        for obj in objects:
            union += obj["mask"]
            assert obj["area"] == obj["mask"].sum() >= config.min_visible_area * 128 * 128
            fractions.append(obj["area"] / obj["full_area"])
        assert union.max() <= 1  # visible masks never overlap
        count += len(objects)
    fractions = np.array(fractions)
    assert fractions.min() >= config.min_visible
    assert (fractions < 0.95).sum() >= 10  # objects do get covered
    assert count >= 150 * 2


def test_shapes_have_the_drawn_longest_side_at_any_rotation():
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        for length in (12.8, 40.0, 57.6):
            mask = shape_mask(shape, length, rng.uniform(0, 2 * np.pi))
            assert abs(max(mask.shape) - length) <= 1.5, (shape, length, mask.shape)
            assert mask.any(0).all() and mask.any(1).all()  # cropped tight
    small = {s: shape_mask(s, 13, 0.0) for s in SHAPES}
    assert len({(m.shape, m.tobytes()) for m in small.values()}) == len(SHAPES)


def test_same_seed_gives_identical_files_and_another_seed_other_images(small_set, tmp_path):
    again = generate(tmp_path / "again", SMALL)
    files = sorted(p.relative_to(small_set) for p in small_set.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (small_set / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = generate(tmp_path / "other", SyntheticConfig(seed=1, num_train=30, num_val=10, num_test=10))
    first = sorted((small_set / "images" / "train").iterdir())
    assert sum((other / p.relative_to(small_set)).read_bytes() != p.read_bytes() for p in first) == len(first)
    # a split's images depend on (seed, split, index) only, not on the size of the other splits
    resized = generate(tmp_path / "resized", SyntheticConfig(num_train=5, num_val=10, num_test=1))
    val_a = [p.read_bytes() for p in sorted((small_set / "images" / "val").iterdir())]
    val_b = [p.read_bytes() for p in sorted((resized / "images" / "val").iterdir())]
    assert val_a == val_b


def test_captions_name_the_annotated_objects(small_set):
    for split in SPLITS:
        instances, captions = load(small_set, "instances", split), load(small_set, "captions", split)
        image_ids = {im["id"] for im in instances["images"]}
        per_image: dict[int, list[str]] = {}
        for cap in captions["annotations"]:
            assert cap["image_id"] in image_ids
            per_image.setdefault(cap["image_id"], []).append(cap["caption"])
        assert set(per_image) == image_ids and all(1 <= len(c) <= 2 for c in per_image.values())
        for ann in instances["annotations"]:
            size, colour, shape = re.fullmatch(r"a (\w+) (\w+) (\w+)", ann["caption"]).groups()
            assert (size, colour, shape) == (ann["size"], ann["colour"], SHAPES[ann["category_id"] - 1])
            assert ann["phrases"] == [f"a {colour} {shape}"], "the size-free description people search with"
            assert ann["caption"] in per_image[ann["image_id"]][0]
            if len(per_image[ann["image_id"]]) == 2:  # the left-to-right caption, for 2+ objects
                assert per_image[ann["image_id"]][1].startswith("from left to right: ")
                assert f"a {colour} {shape}" in per_image[ann["image_id"]][1]
            assert size in SIZES and colour in COLOURS


REF = re.compile(rf"the (?:({'|'.join(SIZES)}) )?(?:({'|'.join(COLOURS)}) )?({'|'.join(SHAPES)})(?: (left of|right of|above|below) the ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}))?")


def centre(ann: dict) -> np.ndarray:
    x, y, w, h = ann["bbox"]
    return np.array([x + w / 2, y + h / 2])


def on_side(ann: dict, anchor: dict, relation: str) -> bool:
    dx, dy = centre(anchor) - centre(ann)
    return {"left of": dx > 0, "right of": dx < 0, "above": dy > 0, "below": dy < 0}[relation]


def matches(ann: dict, size, colour, shape) -> bool:
    return SHAPES[ann["category_id"] - 1] == shape and colour in (None, ann["colour"]) and size in (None, ann["size"])


@pytest.mark.parametrize("which", ["small_set", "large_set"])
def test_every_referring_expression_picks_out_exactly_its_object(which, request):
    root = request.getfixturevalue(which)
    kinds = set()
    sent_ids = set()
    for split in SPLITS:
        anns = {a["id"]: a for a in load(root, "instances", split)["annotations"]}
        images = {im["id"]: im["file_name"] for im in load(root, "instances", split)["images"]}
        for ref in load(root, "refs", split):
            target = anns[ref["ann_id"]]
            assert (ref["image_id"], ref["category_id"], ref["split"], ref["file_name"]) == (target["image_id"], target["category_id"], split, images[target["image_id"]])
            assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]] and ref["sentences"]
            others = [a for a in anns.values() if a["image_id"] == target["image_id"]]
            for sentence in ref["sentences"]:
                assert sentence["sent_id"] not in sent_ids and sentence["tokens"] == sentence["sent"].split()
                sent_ids.add(sentence["sent_id"])
                size, colour, shape, relation, anchor_colour, anchor_shape = REF.fullmatch(sentence["sent"]).groups()
                candidates = [a for a in others if matches(a, size, colour, shape)]
                if relation:
                    anchors = [a for a in others if matches(a, None, anchor_colour, anchor_shape)]
                    assert len(anchors) == 1, sentence["sent"]
                    candidates = [a for a in candidates if a is not anchors[0] and on_side(a, anchors[0], relation)]
                assert [a["id"] for a in candidates] == [target["id"]], sentence["sent"]
                kinds.add("relation" if relation else "size" if size else "colour" if colour else "shape")
    if which == "large_set":
        assert kinds == {"relation", "size", "colour", "shape"}


def test_refs_cover_objects_that_can_be_told_apart(large_set):
    anns = load(large_set, "instances", "train")["annotations"]
    refs = load(large_set, "refs", "train")
    referred = {r["ann_id"] for r in refs}
    assert len(refs) == len(referred) >= 0.8 * len(anns)
    # an object whose colour+shape is unique in its image always gets a ref
    for a in anns:
        twins = [b for b in anns if b["image_id"] == a["image_id"] and (b["colour"], b["category_id"]) == (a["colour"], a["category_id"])]
        if len(twins) == 1:
            assert a["id"] in referred


def test_category_frequencies_form_a_long_tail(large_set):
    data = load(large_set, "instances", "train")
    instances = np.bincount([a["category_id"] for a in data["annotations"]], minlength=len(SHAPES) + 1)[1:]
    assert instances.max() >= 5 * instances.min() > 0
    for category, count in zip(data["categories"], instances):
        assert category["instance_count"] == count
        images = {a["image_id"] for a in data["annotations"] if a["category_id"] == category["id"]}
        assert category["image_count"] == len(images)
        fraction = len(images) / 400
        expected = "r" if fraction < 0.07 else "c" if fraction < 0.2 else "f"
        assert category["frequency"] == expected
    assert {c["frequency"] for c in data["categories"]} == {"r", "c", "f"}


def test_existing_output_is_reused_or_refused(small_set, tmp_path):
    stamp = (small_set / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert generate(small_set, SMALL) == small_set
    assert (small_set / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    with pytest.raises(SyntheticSetConflict, match="seed"):
        generate(small_set, SyntheticConfig(seed=5, num_train=30, num_val=10, num_test=10))
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(SyntheticSetConflict, match="not empty"):
        generate(tmp_path, SMALL)
    with pytest.raises(ValueError):
        SyntheticConfig(min_objects=3, max_objects=2)


def test_cli_generates_a_set_end_to_end(tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "objsearch.datasets.synthetic", str(out), "--num-train", "6", "--num-val", "2", "--num-test", "2", "--seed", "3", "--image-size", "64", "--size-edges", "0.2", "0.3", "0.4", "0.5"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "10 images" in run.stderr and "synthetic set" in run.stderr
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["config"]["seed"] == 3 and manifest["config"]["size_edges"] == [0.2, 0.3, 0.4, 0.5]
    assert Image.open(out / "images" / "test" / "000010.png").size == (64, 64)
    command[command.index("--seed") + 1] = "4"
    clash = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert clash.returncode == 1 and clash.stderr.startswith("error:") and "Traceback" not in clash.stderr
