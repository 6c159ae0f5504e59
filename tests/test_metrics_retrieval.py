"""objsearch.metrics retrieval, grounding, classification and embedding figures against naive loops."""

from __future__ import annotations

import numpy as np
import pytest

from objsearch import metrics

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
