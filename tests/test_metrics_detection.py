"""objsearch.metrics detection figures against pycocotools (COCO/LVIS AP) and naive loops (the store's
score threshold)."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from objsearch import metrics

# ---------------------------------------------------------------------------------------------
# COCO / LVIS detection AP
# ---------------------------------------------------------------------------------------------

HEIGHT, WIDTH = 160, 200
# Category 3 ("rare") never appears in the ground truth: it must not count towards APr.
CATEGORIES = [
    {"id": 1, "name": "cat", "frequency": "r"},
    {"id": 3, "name": "rare", "frequency": "r"},
    {"id": 4, "name": "dog", "frequency": "c"},
    {"id": 7, "name": "cup", "frequency": "c"},
    {"id": 8, "name": "car", "frequency": "f"},
    {"id": 10, "name": "tree", "frequency": "f"},
]
GT_CATEGORY_IDS = [1, 4, 7, 8, 10]


def _ellipse_mask(x: int, y: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    cx, cy = x + w / 2, y + h / 2
    return (((xx + 0.5 - cx) / (w / 2)) ** 2 + ((yy + 0.5 - cy) / (h / 2)) ** 2 <= 1).astype(np.uint8)


def _rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask))


def _random_box(rng) -> tuple[int, int, int, int]:
    w = int(rng.integers(4, 150))
    h = int(rng.integers(4, 120))
    return int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h)), w, h


def _random_coco(seed: int, num_images: int = 6):
    """Random COCO ground truth (ellipse masks of all sizes, one crowd region) and detections:
    shifted copies of most GT objects (some with the wrong category, some duplicated) plus
    false positives, all with random scores. Detections are in objsearch's form (xyxy + bytes RLE)."""
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id * 10, "width": WIDTH, "height": HEIGHT, "file_name": f"{image_id}.jpg"})
        for obj in range(int(rng.integers(2, 6))):
            x, y, w, h = _random_box(rng)
            mask = _ellipse_mask(x, y, w, h)
            if mask.sum() == 0:
                continue
            rle = _rle(mask)
            category_id = int(rng.choice(GT_CATEGORY_IDS))
            crowd = int(image_id == 2 and obj == 0)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id * 10,
                    "category_id": category_id,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": crowd,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                }
            )
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                dx, dy = (int(v) for v in rng.integers(-5, 6, size=2))
                det_category = category_id if rng.random() < 0.85 else int(rng.choice(GT_CATEGORY_IDS))
                detections.append(
                    {
                        "image_id": image_id * 10,
                        "category_id": det_category,
                        "bbox_xyxy": [x + dx, y + dy, x + dx + w + int(rng.integers(-3, 4)), y + dy + h],
                        "score": float(rng.random()),
                        "segmentation": _rle(np.roll(mask, (dy, dx), axis=(0, 1))),
                    }
                )
        for _ in range(int(rng.integers(0, 4))):  # false positives, some in the category without GT
            x, y, w, h = _random_box(rng)
            detections.append(
                {
                    "image_id": image_id * 10,
                    "category_id": int(rng.choice([c["id"] for c in CATEGORIES])),
                    "bbox_xyxy": [x, y, x + w, y + h],
                    "score": float(rng.random()),
                    "segmentation": _rle(_ellipse_mask(x, y, w, h)),
                }
            )
    gt = {"images": images, "annotations": annotations, "categories": copy.deepcopy(CATEGORIES)}
    return gt, detections


def _reference_coco_eval(tmp_path, gt: dict, detections: list[dict], iou_type: str) -> COCOeval:
    """COCOeval run directly on hand-written COCO JSON files (xywh boxes, string RLE counts)."""
    results = []
    for det in detections:
        row = {"image_id": det["image_id"], "category_id": det["category_id"], "score": det["score"]}
        if iou_type == "bbox":
            x1, y1, x2, y2 = det["bbox_xyxy"]
            row["bbox"] = [x1, y1, x2 - x1, y2 - y1]
        else:
            seg = det["segmentation"]
            row["segmentation"] = {"size": list(seg["size"]), "counts": seg["counts"].decode("ascii")}
        results.append(row)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / f"dt_{iou_type}.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_dt = coco_gt.loadRes(str(tmp_path / f"dt_{iou_type}.json"))
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_coco_detection_ap_matches_cocoeval(tmp_path, iou_type, seed):
    gt, detections = _random_coco(seed)
    gt_before = copy.deepcopy(gt)
    ours = metrics.coco_detection_ap(gt, detections, iou_type=iou_type)
    assert gt == gt_before, "the caller's ground truth must not be modified"

    ref = _reference_coco_eval(tmp_path, gt, detections, iou_type)
    for i, key in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        assert ours[key] == pytest.approx(ref.stats[i], abs=1e-6), key
    assert 0.05 < ours["AP"] < 0.95  # the random case is neither trivial nor hopeless

    # Naive per-category AP and LVIS frequency groups from the reference precision array.
    precision = ref.eval["precision"]
    cat_ids = ref.params.catIds
    expected_per_category = {}
    for k, cat_id in enumerate(cat_ids):
        values = [v for v in precision[:, :, k, 0, 2].ravel() if v > -1]
        if values:
            expected_per_category[ref.cocoGt.cats[cat_id]["name"]] = sum(values) / len(values)
    assert set(ours["per_category"]) == set(expected_per_category) == {"cat", "dog", "cup", "car", "tree"}
    for name, ap in expected_per_category.items():
        assert ours["per_category"][name] == pytest.approx(ap, abs=1e-6), name
    with_gt = {ann["category_id"] for ann in gt["annotations"]}
    for key, group in [("APr", "r"), ("APc", "c"), ("APf", "f")]:
        group_aps = [
            expected_per_category[c["name"]] for c in CATEGORIES if c["frequency"] == group and c["id"] in with_gt
        ]
        assert ours[key] == pytest.approx(sum(group_aps) / len(group_aps), abs=1e-6), key


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_detection_ap_perfect_and_empty(iou_type):
    gt, _ = _random_coco(3)
    perfect = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        seg = ann["segmentation"]
        perfect.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox_xyxy": np.array([x, y, x + w, y + h]),
                "score": 1.0,
                "segmentation": {"size": seg["size"], "counts": seg["counts"].encode("ascii")},
            }
        )
    best = metrics.coco_detection_ap(gt, perfect, iou_type=iou_type)
    for key in ["AP", "AP50", "AP75", "APr", "APc", "APf"]:
        assert best[key] == pytest.approx(1.0, abs=1e-6), key
    assert all(ap == pytest.approx(1.0, abs=1e-6) for ap in best["per_category"].values())

    empty = metrics.coco_detection_ap(gt, [], iou_type=iou_type)
    for key in ["AP", "AP50", "AP75", "APr", "APc", "APf"]:
        assert empty[key] == 0.0, key
    assert set(empty["per_category"]) == {"cat", "dog", "cup", "car", "tree"}
    assert all(ap == 0.0 for ap in empty["per_category"].values())


def test_coco_detection_ap_without_frequencies_and_bad_input():
    gt, detections = _random_coco(4)
    for cat in gt["categories"]:
        del cat["frequency"]
    result = metrics.coco_detection_ap(gt, detections)
    assert not {"APr", "APc", "APf"} & set(result)
    with pytest.raises(ValueError, match="not in the ground truth"):
        metrics.coco_detection_ap(gt, [dict(detections[0], image_id=999)])
    with pytest.raises(ValueError, match="segmentation"):
        metrics.coco_detection_ap(gt, [{k: v for k, v in detections[0].items() if k != "segmentation"}], "segm")



# ---------------------------------------------------------------------------------------- store threshold


def test_best_f1_score_threshold_small_case():
    gt_ids, gt_boxes = np.array([1, 1, 2]), np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    # In score order: hit A, a duplicate of A (a miss: A is claimed), hit C, hit B, junk.
    det_ids = np.array([1, 1, 2, 1, 2])
    det_boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [50, 50, 60, 60]])
    det_scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    shuffled = np.array([3, 0, 4, 2, 1])  # the input order must not matter
    best = metrics.best_f1_score_threshold(det_ids[shuffled], det_boxes[shuffled], det_scores[shuffled], gt_ids, gt_boxes)
    # F1 over the prefixes: 0.5, 0.4, 0.667, 0.857 (precision 3/4, recall 1), 0.75.
    assert best == pytest.approx({"threshold": 0.6, "precision": 0.75, "recall": 1.0, "f1": 6 / 7})


def _random_boxes(rng, count: int) -> np.ndarray:
    xy = rng.uniform(0, 60, (count, 2))
    return np.hstack([xy, xy + rng.uniform(5, 30, (count, 2))])


def test_best_f1_score_threshold_matches_trying_every_threshold():
    rng = np.random.default_rng(3)
    gt_ids = rng.integers(0, 6, 25)
    gt_boxes = _random_boxes(rng, 25)
    det_ids = rng.integers(0, 6, 60)
    det_boxes = _random_boxes(rng, 60)
    near_gt = rng.integers(0, 25, 30)  # half the detections are jittered ground truth, so many hit
    det_ids[:30], det_boxes[:30] = gt_ids[near_gt], gt_boxes[near_gt] + rng.normal(0, 2, (30, 4))
    det_scores = rng.random(60)
    best_f1, best_threshold = 0.0, None
    for threshold in det_scores:
        kept = det_scores >= threshold
        found = 0
        for image in np.unique(det_ids[kept]):
            rows = np.flatnonzero(kept & (det_ids == image))
            rows = rows[np.argsort(-det_scores[rows])]
            found += metrics.iou_hits(det_ids[rows], det_boxes[rows], gt_ids[gt_ids == image],
                                      gt_boxes[gt_ids == image]).sum()
        precision, recall = found / kept.sum(), found / len(gt_ids)
        f1 = 2 * precision * recall / (precision + recall) if found else 0.0
        if f1 > best_f1:
            best_f1, best_threshold = f1, threshold
    best = metrics.best_f1_score_threshold(det_ids, det_boxes, det_scores, gt_ids, gt_boxes)
    assert best["f1"] == pytest.approx(best_f1) and best["threshold"] == best_threshold


def test_best_f1_score_threshold_keeps_or_drops_tied_scores_together():
    gt_ids, gt_boxes = np.array([1, 1]), np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    det_ids, det_scores = np.array([1, 1, 1]), np.array([0.9, 0.5, 0.5])
    hit_second_then_miss = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    miss_then_hit_second = hit_second_then_miss[[0, 2, 1]]
    for boxes in (hit_second_then_miss, miss_then_hit_second):
        # Keeping >= 0.5 keeps both tied detections: precision 2/3, recall 1 (F1 0.8) in either order.
        best = metrics.best_f1_score_threshold(det_ids, boxes, det_scores, gt_ids, gt_boxes)
        assert best == pytest.approx({"threshold": 0.5, "precision": 2 / 3, "recall": 1.0, "f1": 0.8})


def test_best_f1_score_threshold_is_none_when_nothing_can_be_found():
    box = np.array([[0, 0, 10, 10]])
    assert metrics.best_f1_score_threshold(np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.array([1]), box) is None
    assert metrics.best_f1_score_threshold(np.array([1]), box, np.array([0.9]), np.zeros(0), np.zeros((0, 4))) is None
    assert metrics.best_f1_score_threshold(np.array([2]), box, np.array([0.9]), np.array([1]), box) is None, \
        "a detection in another image finds nothing"
    with pytest.raises(ValueError, match="equal lengths"):
        metrics.best_f1_score_threshold(np.array([1, 2]), box, np.array([0.9]), np.array([1]), box)
