"""objsearch.metrics against the reference implementations (pycocotools, pycocoevalcap) and naive loops."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil

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


# ---------------------------------------------------------------------------------------------
# Retrieval / grounding: iou_hits, R@K, AP@k, mAP, PR curve
# ---------------------------------------------------------------------------------------------


def _naive_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _naive_iou_hits(r_img, r_box, g_img, g_box, thr) -> list[bool]:
    claimed, out = set(), []
    for i in range(len(r_box)):
        best, best_iou = None, -1.0
        for j in range(len(g_box)):
            if j in claimed or g_img[j] != r_img[i]:
                continue
            iou = _naive_iou(r_box[i], g_box[j])
            if iou >= thr and iou > best_iou:
                best, best_iou = j, iou
        if best is not None:
            claimed.add(best)
        out.append(best is not None)
    return out


def _random_query(rng):
    num_gt = int(rng.integers(0, 7))
    g_img = rng.integers(0, 3, size=num_gt)
    xy = rng.uniform(0, 50, size=(num_gt, 2))
    g_box = np.concatenate([xy, xy + rng.uniform(5, 30, size=(num_gt, 2))], axis=1)
    rows_img, rows_box = [], []
    for _ in range(int(rng.integers(0, 30))):
        if num_gt and rng.random() < 0.6:  # a jittered (possibly duplicate) copy of a GT box
            j = int(rng.integers(num_gt))
            rows_img.append(g_img[j] if rng.random() < 0.9 else int(rng.integers(0, 3)))
            rows_box.append(g_box[j] + rng.normal(0, 3, size=4))
        else:
            x, y = rng.uniform(0, 60, size=2)
            rows_img.append(int(rng.integers(0, 3)))
            rows_box.append([x, y, x + rng.uniform(1, 30), y + rng.uniform(1, 30)])
    return np.array(rows_img, dtype=int), np.array(rows_box).reshape(-1, 4), g_img, g_box


def test_iou_hits_matches_naive_greedy_matching():
    total_hits = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        r_img, r_box, g_img, g_box = _random_query(rng)
        thr = float(rng.uniform(0.3, 0.8))
        ours = metrics.iou_hits(r_img, r_box, g_img, g_box, iou_threshold=thr)
        assert ours.dtype == bool and ours.shape == (len(r_box),)
        assert ours.tolist() == _naive_iou_hits(r_img, r_box, g_img, g_box, thr), seed
        total_hits += int(ours.sum())
    assert total_hits > 300


def test_iou_hits_small_cases():
    gt_img, gt_box = np.array([1]), np.array([[0, 0, 10, 10]])
    # A duplicate of an already-found object is not a second hit; the same box in another image misses.
    assert metrics.iou_hits([1, 1, 2], [[0, 0, 10, 10]] * 3, gt_img, gt_box).tolist() == [True, False, False]
    # The threshold is inclusive: IoU of [0,0,2,1] with [0,0,1,1] is exactly 0.5.
    assert metrics.iou_hits([1], [[0, 0, 2, 1]], [1], [[0, 0, 1, 1]], 0.5).tolist() == [True]
    assert metrics.iou_hits([1], [[0, 0, 2, 1]], [1], [[0, 0, 1, 1]], 0.51).tolist() == [False]
    # The first result overlaps A (0.54) and B (0.82) and claims B, its best, leaving A for the second.
    two_gt = np.array([[0, 0, 10, 10], [4, 0, 14, 10]])
    ranked = np.array([[3, 0, 13, 10], [-1, 0, 9, 10]])
    assert metrics.iou_hits([5, 5], ranked, [5, 5], two_gt).tolist() == [True, True]
    assert metrics.iou_hits([], np.zeros((0, 4)), gt_img, gt_box).tolist() == []
    assert metrics.iou_hits([1], [[0, 0, 1, 1]], [], np.zeros((0, 4))).tolist() == [False]


def _naive_recall_at_k(rows, k) -> float:
    return sum(1 for row in rows if any(row[:k])) / len(rows)


def _naive_ap(hits, num_relevant, k) -> float:
    total, found = 0.0, 0
    for i, hit in enumerate(hits[:k], start=1):
        if hit:
            found += 1
            total += found / i
    return total / min(num_relevant, k)


def _naive_pr_curve(rows, num_relevant):
    curve = [0.0] * 101
    for hits, n in zip(rows, num_relevant):
        precisions, recalls, found = [], [], 0
        for i, hit in enumerate(hits, start=1):
            found += int(hit)
            precisions.append(found / i)
            recalls.append(found / n)
        for level in range(101):
            reached = [p for p, r in zip(precisions, recalls) if r >= level / 100]
            curve[level] += (max(reached) if reached else 0.0) / len(rows)
    return curve


def _random_hit_lists(rng):
    rows, num_relevant = [], []
    for _ in range(int(rng.integers(1, 12))):
        hits = rng.random(int(rng.integers(0, 40))) < rng.uniform(0.05, 0.6)
        rows.append(hits)
        num_relevant.append(int(hits.sum()) + int(rng.integers(1 if not hits.any() else 0, 5)))
    return rows, num_relevant


def test_ranking_metrics_match_naive_loops():
    for seed in range(200):
        rng = np.random.default_rng(seed)
        rows, num_relevant = _random_hit_lists(rng)
        k = int(rng.choice([1, 3, 5, 10, 100]))
        assert metrics.recall_at_k(rows, k) == pytest.approx(_naive_recall_at_k(rows, k), abs=1e-12)
        aps = [_naive_ap(h, n, k) for h, n in zip(rows, num_relevant)]
        for h, n, ap in zip(rows, num_relevant, aps):
            assert metrics.average_precision_at_k(h, n, k) == pytest.approx(ap, abs=1e-12)
        assert metrics.mean_average_precision(rows, num_relevant, k) == pytest.approx(np.mean(aps), abs=1e-12)
        precision, recall = metrics.precision_recall_curve(rows, num_relevant)
        assert precision == pytest.approx(_naive_pr_curve(rows, num_relevant), abs=1e-12)
        assert recall.tolist() == [i / 100 for i in range(101)]


def test_ranking_metrics_small_cases():
    square = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
    assert metrics.recall_at_k(square, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(square, 2) == pytest.approx(2 / 3)
    assert metrics.recall_at_k([np.array([0, 0, 1]), np.array([1])], 2) == pytest.approx(0.5)
    assert metrics.average_precision_at_k(np.array([1, 0, 1]), 2) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.average_precision_at_k(np.array([0, 1, 1]), 5, k=2) == pytest.approx(0.5 / 2)
    assert metrics.mean_average_precision([[1, 0, 1], [0, 0, 0]], [2, 4]) == pytest.approx((1 + 2 / 3) / 4)
    precision, _ = metrics.precision_recall_curve([np.array([1, 0, 1])], [2])
    assert precision[:51] == pytest.approx(np.ones(51)) and precision[51:] == pytest.approx(np.full(50, 2 / 3))
    with pytest.raises(ValueError):
        metrics.average_precision_at_k(np.array([0, 1]), 0)
    with pytest.raises(ValueError):
        metrics.precision_recall_curve([np.array([1, 1])], [1])


# ---------------------------------------------------------------------------------------------
# Classification and embeddings
# ---------------------------------------------------------------------------------------------


def test_accuracy_and_top_k_accuracy_match_naive():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 7))
    target = rng.integers(0, 7, size=200)
    predicted = rng.integers(0, 7, size=200)
    assert metrics.accuracy(predicted, target) == pytest.approx(sum(p == t for p, t in zip(predicted, target)) / 200)
    for k in (1, 2, 5, 7):
        naive = sum(t in np.argsort(-row)[:k] for row, t in zip(scores, target)) / 200
        assert metrics.top_k_accuracy(scores, target, k) == pytest.approx(naive, abs=1e-12)
    assert metrics.top_k_accuracy(scores, target, 1) == pytest.approx(metrics.accuracy(scores.argmax(1), target))
    assert metrics.top_k_accuracy(np.array([[1.0, 1.0, 0.0]]), np.array([1]), 1) == 1.0  # ties favour the target


def _naive_knn_purity(x, labels, k) -> float:
    total = 0.0
    for i in range(len(x)):
        sims = sorted(((float(x[i] @ x[j]), j) for j in range(len(x)) if j != i), reverse=True)
        total += sum(labels[j] == labels[i] for _, j in sims[:k]) / k
    return total / len(x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_purity_matches_naive(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=150)
    centres = rng.normal(size=(4, 8))
    x = centres[labels] + rng.normal(scale=1.2, size=(150, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    expected = _naive_knn_purity(x, labels, 5)
    sims = -np.sort(-(x @ x.T - 3 * np.eye(150)), axis=1)
    assert (sims[:, 4] - sims[:, 5]).min() > 1e-5  # no near-tie at the 5th neighbour for float32 to flip
    assert 0.3 < expected < 0.99
    assert metrics.knn_purity(x, labels, k=5) == pytest.approx(expected, abs=1e-6)
    # Rescaled rows give the same answer (cosine). With three copies of every point, ties at similarity 1
    # may push a point out of its own top k + 1; its neighbour is then still a copy.
    assert metrics.knn_purity(x * rng.uniform(0.5, 3, size=(150, 1)), labels, k=5) == pytest.approx(expected, abs=1e-6)
    assert metrics.knn_purity(np.concatenate([x, x, x]), np.concatenate([labels, labels, labels]), k=1) == 1.0


# ---------------------------------------------------------------------------------------------
# Captioning: CIDEr-D
# ---------------------------------------------------------------------------------------------

VOCAB = ["a", "the", "man", "dog", "red", "ball", "on", "grass", "runs", "with", "two", "small"]


def _sentence(rng, min_len: int = 1) -> str:
    return " ".join(rng.choice(VOCAB, size=int(rng.integers(min_len, 11))))


@pytest.mark.parametrize("seed", range(5))
def test_cider_d_matches_pycocoevalcap(seed):
    from pycocoevalcap.cider.cider import Cider

    rng = np.random.default_rng(seed)
    keys = [f"img{i}" for i in range(int(rng.integers(2, 25)))]
    candidates = {key: _sentence(rng) for key in keys}
    candidates[keys[0]] = ""  # an empty caption scores 0 in both
    references = {key: [_sentence(rng) for _ in range(int(rng.integers(1, 6)))] for key in keys}
    candidates[keys[1]] = references[keys[1]][0]  # one exact match

    ref_score, ref_scores = Cider().compute_score(references, {key: [candidates[key]] for key in keys})
    score, scores = metrics.cider_d(candidates, references, tokenize=False)
    assert score == pytest.approx(ref_score, abs=1e-6)
    assert scores == pytest.approx(np.asarray(ref_scores), abs=1e-6)
    assert scores[0] == 0.0 and scores[1] > 0


def test_cider_d_tokenizes_raw_captions():
    references = {1: ["A dog runs on the grass.", "The dog runs!"], 2: ["Two men, with a ball."], 3: ["A red ball."]}
    candidates = {1: "a DOG runs on the grass", 2: "two men with a ball", 3: "the red ball"}
    raw, _ = metrics.cider_d(candidates, references)
    pre = {k: [metrics.tokenize_caption(r) for r in v] for k, v in references.items()}
    clean, _ = metrics.cider_d({k: metrics.tokenize_caption(v) for k, v in candidates.items()}, pre, tokenize=False)
    assert raw == pytest.approx(clean, abs=1e-12) and raw > 0
    with pytest.raises(ValueError):
        metrics.cider_d({1: "a dog"}, {2: ["a dog"]})


def test_tokenizer_matches_ptb_tokenizer():
    assert shutil.which("java"), "Java is required to run pycocoevalcap's PTBTokenizer (install a JRE, e.g. openjdk-17)"
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = [
        "A man riding a wave on top of a surfboard.",
        "Two dogs, one black-and-white, playing in the snow!",
        "Isn't that the cat's toy? It's on the 2nd floor.",
        "The kids' bikes and we're done -- they'll go at 5:30pm, I'd say.",
        'A "red" bus (double-decker) parked: near 3.5 m; of the U.S. road...',
        "Three people are sitting at a table, eating pizza.",
        "There's a clock tower in the city's center at 12:45.",
        "Hello   WORLD\tagain  ",
    ]
    with contextlib.redirect_stderr(io.StringIO()):
        expected = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    for i, sentence in enumerate(sentences):
        assert metrics.tokenize_caption(sentence) == expected[i][0], sentence


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
