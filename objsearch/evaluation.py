"""Evaluate any ObjectEmbedder on a COCO-format split: the numbers behind ``objsearch bench`` and
training-time evaluation. All metric arithmetic is in ``objsearch.metrics``.

What is measured (each a section of the returned dict):
- detection / mask: COCOeval AP of the detections, each labelled with the nearest category name in
  the embedder's text space (open-vocabulary detection, one label per box);
- detection_ranked_labels: COCOeval AP the way DETR-family and open-vocabulary detectors are scored:
  each box enters with its LABELS_PER_BOX most likely categories, each scored detection score x
  softmax probability of the category (the embedder's ``label_logit_scale`` times cosine); only for
  embedders that have such a scale;
- best_f1_score_threshold: the detection score above which the detections find the objects best
  (class-agnostic F1 at IoU 0.5; see ``metrics.best_f1_score_threshold``), for choosing what to store;
- text_to_object: one query per category name, per "colour category" pair when annotations carry a
  "colour" key, and per referring expression when refs are given; a hit is a stored object with
  IoU >= 0.5 to a relevant ground-truth object;
- object_to_object: each ground-truth box embedded as a region query; relevant = same-category
  objects in other images;
- zero_shot_accuracy / knn_purity: of the ground-truth boxes' region embeddings;
- caption_cider: CIDEr-D of region captions against the annotations' "caption" keys, when the
  embedder can describe regions.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.special import softmax

from objsearch import metrics

logger = logging.getLogger(__name__)

RANK_DEPTH = 100  # objects ranked per query (mAP@100)
MAX_REGION_QUERIES = 500  # object-to-object queries per evaluation (a seeded sample beyond this)
AP_SCORE_THRESHOLD = 0.05  # detection threshold while measuring AP (COCO practice: keep low scores)
LABELS_PER_BOX = 3  # category hypotheses per box in detection_ranked_labels


@dataclass
class CocoSplit:
    """A COCO-format split on disk: images + instances (+ optional RefCOCO-style refs JSON)."""

    image_dir: Path
    instances_json: Path
    refs_json: Path | None = None
    gt: dict = field(init=False)

    def __post_init__(self) -> None:
        self.image_dir, self.instances_json = Path(self.image_dir), Path(self.instances_json)
        self.gt = json.loads(self.instances_json.read_text())

    @property
    def category_names(self) -> list[str]:
        return [c["name"] for c in sorted(self.gt["categories"], key=lambda c: c["id"])]

    def load_image(self, record: dict) -> np.ndarray:
        with Image.open(self.image_dir / record["file_name"]) as image:
            return np.asarray(image.convert("RGB"))


@dataclass
class StoredObjects:
    """Every detected object of the split, as the engine would store them (flattened)."""

    image_ids: np.ndarray  # (N,)
    boxes_xyxy: np.ndarray  # (N, 4) pixels
    scores: np.ndarray  # (N,)
    embeddings: np.ndarray  # (N, E)


def _xyxy(bbox_xywh: list[float]) -> list[float]:
    x, y, w, h = bbox_xywh
    return [x, y, x + w, y + h]


def evaluate_embedder(embedder, split: CocoSplit, *, max_images: int | None = None, seed: int = 0,
                      batch_size: int = 16) -> dict[str, Any]:
    """Run ``embedder`` over ``split`` and measure everything listed in the module docstring."""
    images = sorted(split.gt["images"], key=lambda r: r["id"])[:max_images]
    image_ids = {r["id"] for r in images}
    annotations = [a for a in split.gt["annotations"] if a["image_id"] in image_ids and not a.get("iscrowd")]
    names = split.category_names
    cat_index = {c["id"]: i for i, c in enumerate(sorted(split.gt["categories"], key=lambda c: c["id"]))}
    label_embeddings = embedder.embed_texts(names)

    detections, stored = _detect(embedder, split, images, batch_size)
    results: dict[str, Any] = {"counts": {"images": len(images), "objects": len(annotations),
                                          "stored_objects": len(stored.image_ids)}}
    gt_subset = {**split.gt, "images": images, "annotations": annotations}
    category_ids = sorted(cat_index)
    cosines = np.array([det["embedding"] for det in detections]).reshape(-1, label_embeddings.shape[1]) \
        @ label_embeddings.T  # (detections, categories)
    labelled = [{**det, "category_id": category_ids[int(label)]}
                for det, label in zip(detections, cosines.argmax(axis=1))]
    results["detection"] = metrics.coco_detection_ap(gt_subset, labelled, iou_type="bbox")
    scale = getattr(embedder, "label_logit_scale", None)
    if scale is not None:
        ranked = _ranked_labels(detections, cosines, category_ids, float(scale))
        results["detection_ranked_labels"] = metrics.coco_detection_ap(gt_subset, ranked, iou_type="bbox")
    results["detection_class_agnostic"] = _class_agnostic_ap(gt_subset, detections)
    results["best_f1_score_threshold"] = metrics.best_f1_score_threshold(
        np.array([d["image_id"] for d in detections]), np.array([d["bbox_xyxy"] for d in detections]),
        np.array([d["score"] for d in detections]), np.array([a["image_id"] for a in annotations]),
        np.array([_xyxy(a["bbox"]) for a in annotations]))
    if labelled and all(d.get("segmentation") for d in labelled):
        results["mask"] = metrics.coco_detection_ap(gt_subset, labelled, iou_type="segm")

    results["text_to_object"] = {
        kind: _text_retrieval(embedder, queries, stored)
        for kind, queries in _text_queries(split, annotations, names, cat_index).items() if queries
    }
    regions = _region_embeddings(embedder, split, images, annotations)
    region_labels = np.array([cat_index[a["category_id"]] for a in annotations])
    if len(annotations):
        predicted = np.argmax(regions @ label_embeddings.T, axis=1)
        results["zero_shot_accuracy"] = metrics.accuracy(predicted, region_labels)
        if len(annotations) > 1:  # a single object has no neighbours
            results["knn_purity"] = metrics.knn_purity(regions, region_labels, k=min(10, len(annotations) - 1))
        results["object_to_object"] = _object_retrieval(regions, annotations, stored, seed)
    if hasattr(embedder, "describe_regions") and any("caption" in a for a in annotations):
        results["caption_cider"] = _caption_score(embedder, split, images, annotations)
    return results


def _detect(embedder, split: CocoSplit, images: list[dict], batch_size: int) -> tuple[list[dict], StoredObjects]:
    """Detections at the AP threshold (for COCOeval) and the subset the engine would store."""
    store_threshold = getattr(embedder, "score_threshold", None)
    if store_threshold is not None:
        embedder.score_threshold = min(store_threshold, AP_SCORE_THRESHOLD)
    with_captions = getattr(embedder, "with_captions", None)
    if with_captions:
        embedder.with_captions = False  # detections' captions are not scored here (regions' are)
    detections, ids, boxes, scores, embeddings = [], [], [], [], []
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            for record, found in zip(chunk, embedder.detect([split.load_image(r) for r in chunk])):
                for i in range(len(found)):
                    det = {"image_id": record["id"], "bbox_xyxy": found.boxes_xyxy[i].tolist(),
                           "score": float(found.scores[i]), "embedding": found.embeddings[i]}
                    if found.masks[i] is not None:
                        det["segmentation"] = found.masks[i]
                    detections.append(det)
                    if store_threshold is None or found.scores[i] >= store_threshold:
                        ids.append(record["id"])
                        boxes.append(found.boxes_xyxy[i])
                        scores.append(found.scores[i])
                        embeddings.append(found.embeddings[i])
    finally:
        if store_threshold is not None:
            embedder.score_threshold = store_threshold
        if with_captions:
            embedder.with_captions = with_captions
    dim = embedder.embed_dim
    stored = StoredObjects(np.asarray(ids), np.asarray(boxes, np.float64).reshape(-1, 4),
                           np.asarray(scores, np.float32), np.asarray(embeddings, np.float32).reshape(-1, dim))
    return detections, stored


def _ranked_labels(detections: list[dict], cosines: np.ndarray, category_ids: list[int],
                   logit_scale: float) -> list[dict]:
    """Each detection as up to LABELS_PER_BOX (box, category) detections, scored score x p(category),
    p = softmax(logit_scale x cosine) over the categories; ``cosines`` is (detections, categories)."""
    ranked = []
    for det, probs in zip(detections, softmax(logit_scale * cosines, axis=1)):
        for label in np.argsort(-probs)[:LABELS_PER_BOX]:
            ranked.append({"image_id": det["image_id"], "bbox_xyxy": det["bbox_xyxy"],
                           "score": det["score"] * float(probs[label]), "category_id": category_ids[label]})
    return ranked


def _class_agnostic_ap(gt: dict, detections: list[dict]) -> dict[str, float]:
    """COCOeval AP with every category merged into one: how well objects are found and boxed,
    whatever they are called."""
    merged = {**gt, "categories": [{"id": 1, "name": "object"}],
              "annotations": [{**a, "category_id": 1} for a in gt["annotations"]]}
    scores = metrics.coco_detection_ap(merged, [{**d, "category_id": 1} for d in detections], iou_type="bbox")
    return {key: scores[key] for key in ("AP", "AP50", "AP75")}


def _text_queries(split: CocoSplit, annotations: list[dict], names: list[str],
                  cat_index: dict[int, int]) -> dict[str, dict[str, list[dict]]]:
    """kind -> query text -> the relevant ground-truth annotations."""
    by_category: dict[str, list[dict]] = defaultdict(list)
    by_attribute: dict[str, list[dict]] = defaultdict(list)
    for a in annotations:
        name = names[cat_index[a["category_id"]]]
        by_category[name].append(a)
        if "colour" in a:
            by_attribute[f"{a['colour']} {name}"].append(a)
    referring: dict[str, list[dict]] = {}
    if split.refs_json is not None:
        by_id = {a["id"]: a for a in annotations}
        for ref in json.loads(Path(split.refs_json).read_text()):
            if ref["ann_id"] in by_id:
                for sentence in ref["sentences"]:
                    referring.setdefault(sentence["sent"], [by_id[ref["ann_id"]]])
    return {"category": dict(by_category), "attribute": dict(by_attribute), "referring": referring}


def _rank(query: np.ndarray, stored: StoredObjects, exclude_image: Any = None) -> np.ndarray:
    scores = stored.embeddings @ query
    if exclude_image is not None:
        scores = np.where(stored.image_ids == exclude_image, -np.inf, scores)
    order = np.argsort(-scores, kind="stable")[:RANK_DEPTH]
    return order[np.isfinite(scores[order])]


def _retrieval_summary(hits: list[np.ndarray], relevant: list[int]) -> dict[str, float]:
    return {
        "queries": len(hits),
        "R@1": metrics.recall_at_k(hits, 1),
        "R@5": metrics.recall_at_k(hits, 5),
        "R@10": metrics.recall_at_k(hits, 10),
        "mAP@100": metrics.mean_average_precision(hits, relevant, k=RANK_DEPTH),
    }


def _text_retrieval(embedder, queries: dict[str, list[dict]], stored: StoredObjects) -> dict[str, Any]:
    texts = list(queries)
    query_embeddings = embedder.embed_texts(texts)
    hits, relevant = [], []
    for text, q in zip(texts, query_embeddings):
        gold = queries[text]
        order = _rank(q, stored)
        hits.append(metrics.iou_hits(stored.image_ids[order], stored.boxes_xyxy[order],
                                     np.array([a["image_id"] for a in gold]),
                                     np.array([_xyxy(a["bbox"]) for a in gold])))
        relevant.append(len(gold))
    summary = _retrieval_summary(hits, relevant)
    summary["curve"] = [c.tolist() for c in metrics.precision_recall_curve(hits, relevant)]
    return summary


def _region_embeddings(embedder, split: CocoSplit, images: list[dict], annotations: list[dict]) -> np.ndarray:
    by_image: dict[Any, list[int]] = defaultdict(list)
    for i, a in enumerate(annotations):
        by_image[a["image_id"]].append(i)
    out = np.zeros((len(annotations), embedder.embed_dim), np.float32)
    for record in images:
        members = by_image.get(record["id"])
        if members:
            boxes = np.array([_xyxy(annotations[i]["bbox"]) for i in members])
            out[members] = embedder.embed_regions(split.load_image(record), boxes)
    return out


def _object_retrieval(regions: np.ndarray, annotations: list[dict], stored: StoredObjects, seed: int) -> dict:
    order = np.arange(len(annotations))
    if len(order) > MAX_REGION_QUERIES:
        order = np.sort(np.random.default_rng(seed).choice(order, MAX_REGION_QUERIES, replace=False))
    by_category: dict[int, list[dict]] = defaultdict(list)
    for a in annotations:
        by_category[a["category_id"]].append(a)
    hits, relevant = [], []
    for i in order:
        query = annotations[i]
        gold = [a for a in by_category[query["category_id"]] if a["image_id"] != query["image_id"]]
        if not gold:
            continue
        ranked = _rank(regions[i], stored, exclude_image=query["image_id"])
        hits.append(metrics.iou_hits(stored.image_ids[ranked], stored.boxes_xyxy[ranked],
                                     np.array([a["image_id"] for a in gold]),
                                     np.array([_xyxy(a["bbox"]) for a in gold])))
        relevant.append(len(gold))
    return _retrieval_summary(hits, relevant) if hits else {"queries": 0}


def _caption_score(embedder, split: CocoSplit, images: list[dict], annotations: list[dict]) -> dict[str, Any]:
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for a in annotations:
        if "caption" in a:
            by_image[a["image_id"]].append(a)
    candidates, references, examples = {}, {}, []
    for record in images:
        gold = by_image.get(record["id"])
        if not gold:
            continue
        captions = embedder.describe_regions(split.load_image(record), np.array([_xyxy(a["bbox"]) for a in gold]))
        for a, caption in zip(gold, captions):
            candidates[a["id"]] = caption
            references[a["id"]] = [a["caption"]]
            if len(examples) < 5:
                examples.append({"generated": caption, "reference": a["caption"]})
    score, _ = metrics.cider_d(candidates, references)
    exact = float(np.mean([candidates[k] == references[k][0] for k in candidates]))
    return {"CIDEr-D": score, "exact_match": exact, "examples": examples}
