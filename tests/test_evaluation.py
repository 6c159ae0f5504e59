"""objsearch.evaluation: ranked-label detection scoring (each box enters COCOeval with its likeliest
categories), and crowd regions counted by COCO's rules."""

from __future__ import annotations

import json

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


# ---------------------------------------------------------------------------------------------
# Crowd regions (iscrowd 1): COCO's rules
# ---------------------------------------------------------------------------------------------

PERSON, OTHER = np.eye(2, 4, dtype=np.float32)
ON_CROWD = PERSON  # the detection on the crowd looks most like the query
ON_PERSON = np.array([0.995, 0.0998, 0, 0], np.float32)  # cosine 0.995 with "person"


class _FixedEmbedder:
    """Two detections per image: one on the crowd region (score 0.9, ranks first everywhere) and one
    on the person (score 0.6)."""

    name, version, embed_dim = "fixed", "1", 4

    def detect(self, images):
        from objsearch.embedders.base import Detections

        return [Detections(boxes_xyxy=[[55, 55, 75, 75], [10, 10, 30, 30]], scores=[0.9, 0.6], labels=["person"] * 2,
                           embeddings=np.stack([ON_CROWD, ON_PERSON])) for _ in images]

    def embed_texts(self, texts):
        return np.stack([PERSON if t == "person" else OTHER for t in texts])

    def embed_regions(self, image, boxes_xyxy):
        return np.tile(PERSON, (len(boxes_xyxy), 1))


def _crowd_split(tmp_path, *, crowd_key: bool = True):
    from PIL import Image

    from objsearch.evaluation import CocoSplit

    images, annotations = [], []
    for image_id in (1, 2):
        Image.new("RGB", (100, 100), "white").save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 100, "height": 100})
        annotations += [{"id": 10 * image_id, "image_id": image_id, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                        {"id": 10 * image_id + 1, "image_id": image_id, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 1}]
    if not crowd_key:
        for a in annotations:
            del a["iscrowd"], a["area"]
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "other"}]}
    (tmp_path / "instances.json").write_text(json.dumps(gt))
    return CocoSplit(tmp_path, tmp_path / "instances.json")


def test_a_detection_on_a_crowd_region_is_neither_a_hit_nor_a_false_positive(tmp_path):
    from objsearch.evaluation import evaluate_embedder

    results = evaluate_embedder(_FixedEmbedder(), _crowd_split(tmp_path))
    # Dropping the crowds made the crowd detection, scored above the person, a false positive: 0.5.
    assert results["detection"]["AP50"] == pytest.approx(1.0)
    assert results["detection_class_agnostic"]["AP50"] == pytest.approx(1.0)
    assert results["best_f1_score_threshold"] == pytest.approx({"threshold": 0.6, "precision": 1.0, "recall": 1.0, "f1": 1.0})
    # Retrieval: the crowd detections, ranked first, are skipped (not misses at rank 1).
    category = results["text_to_object"]["category"]
    assert (category["queries"], category["R@1"], category["mAP@100"]) == (1, 1.0, 1.0)
    assert (results["object_to_object"]["queries"], results["object_to_object"]["R@1"]) == (2, 1.0)
    assert results["object_to_object"]["mAP@100"] == 1.0
    # The crowds are no objects to find or embed.
    assert results["counts"] == {"images": 2, "objects": 2, "crowd_regions": 2, "stored_objects": 4}


def test_annotations_without_iscrowd_or_area_are_single_objects(tmp_path):
    from objsearch.evaluation import evaluate_embedder

    split = _crowd_split(tmp_path, crowd_key=False)
    assert [(a["iscrowd"], a["area"]) for a in split.gt["annotations"]] == [(0, 400), (0, 1600)] * 2
    results = evaluate_embedder(_FixedEmbedder(), split)
    assert results["counts"]["objects"] == 4 and results["counts"]["crowd_regions"] == 0
    # Ordinary objects now: the big boxes are missed (the 20 px detections overlap them IoU 0.25) and the
    # detections on them, scored first, are false positives: precision 1/2 up to recall 1/2, at 51 of
    # COCO's 101 recall points.
    assert results["detection"]["AP50"] == pytest.approx(0.5 * 51 / 101)
    assert results["best_f1_score_threshold"] == pytest.approx({"threshold": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5})
