"""Ranked-label detection scoring: each box enters COCOeval with its likeliest categories."""

from __future__ import annotations

import numpy as np
import pytest

from objsearch import metrics
from objsearch.evaluation import LABELS_PER_BOX, _ranked_labels


def test_each_box_gets_its_likeliest_categories_scored_by_softmax_probability():
    labels = np.eye(4, 8, dtype=np.float32)  # four categories, orthogonal text embeddings
    embedding = np.zeros(8, np.float32)
    embedding[:2] = [0.8, 0.6]
    det = {"image_id": 1, "bbox_xyxy": [0, 0, 10, 10], "score": 0.9, "embedding": embedding}
    ranked = _ranked_labels([det], det["embedding"][None] @ labels.T, [11, 12, 13, 14], logit_scale=10.0)
    probs = np.exp([8.0, 6.0, 0.0, 0.0])
    probs /= probs.sum()
    assert len(ranked) == LABELS_PER_BOX == 3
    assert [r["category_id"] for r in ranked] == [11, 12, 13]
    assert [r["score"] for r in ranked] == pytest.approx(0.9 * probs[:3])
    assert all(r["bbox_xyxy"] == [0, 0, 10, 10] and r["image_id"] == 1 for r in ranked)


def test_a_box_whose_second_guess_is_right_scores_under_ranked_labels_only():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "categories": [{"id": 11, "name": "circle"}, {"id": 12, "name": "hexagon"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 12, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}]}
    labels = np.eye(2, 4, dtype=np.float32)
    embedding = np.array([0.75, 0.66, 0, 0], np.float32)  # a hexagon that looks a little more like a circle
    det = {"image_id": 1, "bbox_xyxy": [10, 10, 40, 40], "score": 0.8, "embedding": embedding}
    top1 = metrics.coco_detection_ap(gt, [{**det, "category_id": 11}], iou_type="bbox")
    ranked = metrics.coco_detection_ap(gt, _ranked_labels([det], det["embedding"][None] @ labels.T, [11, 12], logit_scale=20.0), iou_type="bbox")
    assert top1["AP50"] == 0.0 and ranked["AP50"] == pytest.approx(1.0)
