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

Crowd regions (``iscrowd: 1``) follow COCO's rules: COCOeval gets them as crowds, so a detection on
one (at least CROWD_IOA of its box inside) that finds no object is ignored, neither a true nor a
false positive; best_f1_score_threshold ignores such detections the same way, and the category,
attribute and object-to-object rankings leave out stored objects on a crowd of the query's category
that find no object. No measure treats a crowd as an object to find, embed, name or caption.

``objsearch.datasets.coco_files`` reads and checks the files: a malformed one raises
``objsearch.errors.BadDataset`` naming the file and the field.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.special import softmax

from objsearch import metrics
from objsearch.datasets.coco_files import load_coco_instances, load_coco_refs

logger = logging.getLogger(__name__)

RANK_DEPTH = 100  # objects ranked per query (mAP@100)
MAX_REGION_QUERIES = 500  # object-to-object queries per evaluation (a seeded sample beyond this)
AP_SCORE_THRESHOLD = 0.05  # detection threshold while measuring AP (COCO practice: keep low scores)
LABELS_PER_BOX = 3  # category hypotheses per box in detection_ranked_labels
#: A detection or stored object with at least this fraction of its box inside a crowd region's box
#: lies on that crowd (COCOeval's rule for crowds, at IoU threshold 0.5).
CROWD_IOA = 0.5


@dataclass
class CocoSplit:
    """A COCO-format split on disk: images + instances (+ optional RefCOCO-style refs JSON)."""

    image_dir: Path
    instances_json: Path
    refs_json: Path | None = None
    gt: dict = field(init=False)  # load_coco_instances(instances_json): checked, defaults filled in
    refs: list[dict] | None = field(init=False)  # load_coco_refs(refs_json), None without refs

    def __post_init__(self) -> None:
        self.image_dir, self.instances_json = Path(self.image_dir), Path(self.instances_json)
        self.gt = load_coco_instances(self.instances_json)
        self.refs_json = None if self.refs_json is None else Path(self.refs_json)
        self.refs = None if self.refs_json is None else load_coco_refs(self.refs_json)

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
    in_images = [a for a in split.gt["annotations"] if a["image_id"] in image_ids]
    # A crowd region (iscrowd 1) is not one object: COCOeval gets it as a crowd (detections on it are
    # ignored, neither true nor false positives); every other measure neither looks for it nor counts
    # what lies on it against a model (see _unmatched_on_crowds and _ranked_hits).
    annotations = [a for a in in_images if not a["iscrowd"]]
    crowds = [a for a in in_images if a["iscrowd"]]
    names = split.category_names
    cat_index = {c["id"]: i for i, c in enumerate(sorted(split.gt["categories"], key=lambda c: c["id"]))}
    label_embeddings = embedder.embed_texts(names)

    detections, stored = _detect(embedder, split, images, batch_size)
    results: dict[str, Any] = {"counts": {"images": len(images), "objects": len(annotations),
                                          "crowd_regions": len(crowds), "stored_objects": len(stored.image_ids)}}
    gt_subset = {**split.gt, "images": images, "annotations": in_images}
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
    det_image_ids = np.array([d["image_id"] for d in detections])
    det_boxes = np.array([d["bbox_xyxy"] for d in detections], np.float64).reshape(-1, 4)
    det_scores = np.array([d["score"] for d in detections], np.float64)
    gt_image_ids = np.array([a["image_id"] for a in annotations])
    gt_boxes = np.array([_xyxy(a["bbox"]) for a in annotations], np.float64).reshape(-1, 4)
    counted = ~_unmatched_on_crowds(det_image_ids, det_boxes, det_scores, gt_image_ids, gt_boxes, crowds)
    results["best_f1_score_threshold"] = metrics.best_f1_score_threshold(
        det_image_ids[counted], det_boxes[counted], det_scores[counted], gt_image_ids, gt_boxes)
    if labelled and all(d.get("segmentation") for d in labelled) and all("segmentation" in a for a in in_images):
        results["mask"] = metrics.coco_detection_ap(gt_subset, labelled, iou_type="segm")

    on_crowds = _on_crowds_by_category(stored, crowds)
    results["text_to_object"] = {
        # A referring expression means one object: others of its category, on a crowd or not, are misses.
        kind: _text_retrieval(embedder, queries, stored, on_crowds if kind != "referring" else {})
        for kind, queries in text_queries(split, annotations, names, cat_index).items() if queries
    }
    regions = _region_embeddings(embedder, split, images, annotations)
    region_labels = np.array([cat_index[a["category_id"]] for a in annotations])
    if len(annotations):
        predicted = np.argmax(regions @ label_embeddings.T, axis=1)
        results["zero_shot_accuracy"] = metrics.accuracy(predicted, region_labels)
        if len(annotations) > 1:  # a single object has no neighbours
            results["knn_purity"] = metrics.knn_purity(regions, region_labels, k=min(10, len(annotations) - 1))
        results["object_to_object"] = _object_retrieval(regions, annotations, stored, seed, on_crowds)
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


def text_queries(split: CocoSplit, annotations: list[dict], names: list[str],
                 cat_index: dict[int, int]) -> dict[str, dict[str, list[dict]]]:
    """kind ("category": "star"; "attribute": "red star"; "referring": the split's referring
    expressions) -> query text -> the relevant ground-truth annotations. ``cat_index``: category
    id -> its position in ``names``."""
    by_category: dict[str, list[dict]] = defaultdict(list)
    by_attribute: dict[str, list[dict]] = defaultdict(list)
    for a in annotations:
        name = names[cat_index[a["category_id"]]]
        by_category[name].append(a)
        if "colour" in a:
            by_attribute[f"{a['colour']} {name}"].append(a)
    referring: dict[str, list[dict]] = {}
    if split.refs is not None:
        by_id = {a["id"]: a for a in annotations}  # refs to crowd regions are left out
        for ref in split.refs:
            if ref["ann_id"] in by_id:
                for sentence in ref["sentences"]:
                    referring.setdefault(sentence["sent"], [by_id[ref["ann_id"]]])
    return {"category": dict(by_category), "attribute": dict(by_attribute), "referring": referring}


def _crowd_ioa(boxes_xyxy: np.ndarray, crowd_xyxy: list[float]) -> np.ndarray:
    """(N,) fraction of each box's area inside the crowd region's box: what COCOeval takes for the
    "IoU" of a detection with a crowd (0 for an empty box)."""
    x1 = np.maximum(boxes_xyxy[:, 0], crowd_xyxy[0])
    y1 = np.maximum(boxes_xyxy[:, 1], crowd_xyxy[1])
    x2 = np.minimum(boxes_xyxy[:, 2], crowd_xyxy[2])
    y2 = np.minimum(boxes_xyxy[:, 3], crowd_xyxy[3])
    inside = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    return np.where(area > 0, inside / np.where(area > 0, area, 1.0), 0.0)


def _on_crowds(image_ids: np.ndarray, boxes_xyxy: np.ndarray, crowds: list[dict]) -> np.ndarray:
    """(N,) whether each box lies on one of ``crowds`` in its image (CROWD_IOA of it inside)."""
    on = np.zeros(len(image_ids), bool)
    rows_of: dict[Any, np.ndarray] = {}
    for crowd in crowds:
        if crowd["image_id"] not in rows_of:
            rows_of[crowd["image_id"]] = np.flatnonzero(image_ids == crowd["image_id"])
        rows = rows_of[crowd["image_id"]]
        if len(rows):
            on[rows] |= _crowd_ioa(boxes_xyxy[rows], _xyxy(crowd["bbox"])) >= CROWD_IOA
    return on


def _unmatched_on_crowds(det_image_ids: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                         gt_image_ids: np.ndarray, gt_boxes: np.ndarray, crowds: list[dict]) -> np.ndarray:
    """(D,) the detections COCOeval would ignore, class-agnostic at IoU 0.5: those that find no object
    (matching in descending score order within each image, as ``metrics.best_f1_score_threshold``
    does) and lie on a crowd region. Leaving them out changes no other detection's match."""
    ignored = np.zeros(len(det_scores), bool)
    if not crowds or not len(det_scores):
        return ignored
    order = np.argsort(-det_scores, kind="stable")
    matched = np.zeros(len(det_scores), bool)
    for image in np.unique(det_image_ids):
        rows = order[det_image_ids[order] == image]
        in_image = gt_image_ids == image
        matched[rows] = metrics.iou_hits(det_image_ids[rows], det_boxes[rows], gt_image_ids[in_image],
                                         gt_boxes[in_image], 0.5)
    return ~matched & _on_crowds(det_image_ids, det_boxes, crowds)


def _on_crowds_by_category(stored: StoredObjects, crowds: list[dict]) -> dict[Any, np.ndarray]:
    """category id -> (N,) whether each stored object lies on a crowd region of that category."""
    by_category: dict[Any, list[dict]] = defaultdict(list)
    for crowd in crowds:
        by_category[crowd["category_id"]].append(crowd)
    return {category: _on_crowds(stored.image_ids, stored.boxes_xyxy, members)
            for category, members in by_category.items()}


def _rank(query: np.ndarray, stored: StoredObjects, exclude_image: Any = None, depth: int = RANK_DEPTH) -> np.ndarray:
    scores = stored.embeddings @ query
    if exclude_image is not None:
        scores = np.where(stored.image_ids == exclude_image, -np.inf, scores)
    order = np.argsort(-scores, kind="stable")[:depth]
    return order[np.isfinite(scores[order])]


def _ranked_hits(query: np.ndarray, stored: StoredObjects, gold: list[dict], on_crowds: np.ndarray | None,
                 exclude_image: Any = None) -> np.ndarray:
    """Which of the top RANK_DEPTH stored objects for ``query`` hit ``gold`` (``metrics.iou_hits``).
    Stored objects flagged in ``on_crowds`` (on a crowd region of the query's category) that hit
    nothing are left out of the ranking, as COCOeval ignores detections on crowds: neither found
    objects nor mistakes."""
    ignorable = 0 if on_crowds is None else int(on_crowds.sum())
    order = _rank(query, stored, exclude_image, depth=RANK_DEPTH + ignorable)
    hits = metrics.iou_hits(stored.image_ids[order], stored.boxes_xyxy[order],
                            np.array([a["image_id"] for a in gold]), np.array([_xyxy(a["bbox"]) for a in gold]))
    if ignorable:
        hits = hits[hits | ~on_crowds[order]]  # a left-out object claimed nothing: the other hits stand
    return hits[:RANK_DEPTH]


def retrieval_summary(hits: list[np.ndarray], relevant: list[int]) -> dict[str, float]:
    """R@1/5/10 and mAP@RANK_DEPTH of per-query ranked hit vectors (``hits``) with ``relevant``
    relevant objects each."""
    return {
        "queries": len(hits),
        "R@1": metrics.recall_at_k(hits, 1),
        "R@5": metrics.recall_at_k(hits, 5),
        "R@10": metrics.recall_at_k(hits, 10),
        "mAP@100": metrics.mean_average_precision(hits, relevant, k=RANK_DEPTH),
    }


def _text_retrieval(embedder, queries: dict[str, list[dict]], stored: StoredObjects,
                    on_crowds: dict[Any, np.ndarray]) -> dict[str, Any]:
    """``on_crowds``: category id -> stored objects on its crowds (``_on_crowds_by_category``), ignored
    for a query whose relevant objects are of that category ({} = ignore none)."""
    texts = list(queries)
    query_embeddings = embedder.embed_texts(texts)
    hits, relevant = [], []
    for text, q in zip(texts, query_embeddings):
        gold = queries[text]
        categories = {a["category_id"] for a in gold}
        ignore = on_crowds.get(next(iter(categories))) if len(categories) == 1 else None
        hits.append(_ranked_hits(q, stored, gold, ignore))
        relevant.append(len(gold))
    summary = retrieval_summary(hits, relevant)
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


def _object_retrieval(regions: np.ndarray, annotations: list[dict], stored: StoredObjects, seed: int,
                      on_crowds: dict[Any, np.ndarray]) -> dict:
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
        hits.append(_ranked_hits(regions[i], stored, gold, on_crowds.get(query["category_id"]),
                                 exclude_image=query["image_id"]))
        relevant.append(len(gold))
    return retrieval_summary(hits, relevant) if hits else {"queries": 0}


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
