"""Evaluation metrics in one place: numpy in, plain floats or numpy arrays out.

Used by the benchmark suite (``objsearch bench coco-search``) and by training evaluation.

- Retrieval / grounding: :func:`iou_hits` turns one query's ranked results into a boolean hit vector;
  :func:`recall_at_k`, :func:`average_precision_at_k`, :func:`mean_average_precision` and
  :func:`precision_recall_curve` score hit vectors.
- Detection: :func:`coco_detection_ap` (pycocotools COCOeval, plus LVIS-style APr/APc/APf);
  :func:`best_f1_score_threshold` (the score threshold at which stored detections find objects best).
- Classification / embeddings: :func:`accuracy`, :func:`top_k_accuracy`, :func:`knn_purity`.
- Captioning: :func:`cider_d` (CIDEr-D exactly as pycocoevalcap computes it) and :func:`tokenize_caption`.

Boxes are absolute pixel xyxy, as everywhere in objsearch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from objsearch.box_ops import box_iou

logger = logging.getLogger(__name__)

HitLists = Sequence[np.ndarray] | np.ndarray


# ----------------------------------------------------------------------------------------------
# Retrieval and grounding
# ----------------------------------------------------------------------------------------------


def iou_hits(
    ranked_image_ids: np.ndarray,
    ranked_boxes_xyxy: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_boxes_xyxy: np.ndarray,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Mark which of one query's ranked results hit a relevant ground-truth object.

    ``ranked_image_ids`` (R,) and ``ranked_boxes_xyxy`` (R, 4) are the results, best first;
    ``gt_image_ids`` (G,) and ``gt_boxes_xyxy`` (G, 4) are the objects relevant to the query.
    Walking the results in rank order, a result is a hit when some still-unclaimed GT box in the same
    image has IoU >= ``iou_threshold`` with it; it then claims the unclaimed GT of highest IoU (the
    lowest GT index on ties). Each GT object is claimed at most once, so a duplicate result of an
    already-found object is not a hit. Returns (R,) bool.
    """
    ranked_image_ids = np.asarray(ranked_image_ids).reshape(-1)
    gt_image_ids = np.asarray(gt_image_ids).reshape(-1)
    ranked_boxes = np.asarray(ranked_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(ranked_image_ids) != len(ranked_boxes) or len(gt_image_ids) != len(gt_boxes):
        raise ValueError("image ids and boxes must have the same length")
    hits = np.zeros(len(ranked_boxes), dtype=bool)
    if len(gt_boxes) == 0 or len(ranked_boxes) == 0:
        return hits
    # IoU only counts within one image; -1 marks pairs that can never match.
    iou = np.where(ranked_image_ids[:, None] == gt_image_ids[None, :], box_iou(ranked_boxes, gt_boxes), -1.0)
    for i in range(len(ranked_boxes)):
        j = int(np.argmax(iou[i]))
        if iou[i, j] >= iou_threshold:
            hits[i] = True
            iou[:, j] = -1.0  # claimed
    return hits


def _as_hit_rows(ranked_hits: HitLists) -> list[np.ndarray]:
    if isinstance(ranked_hits, np.ndarray) and ranked_hits.ndim == 2:
        rows = [row for row in ranked_hits]
    else:
        rows = [np.asarray(row).reshape(-1) for row in ranked_hits]
    if not rows:
        raise ValueError("no queries to score")
    return [row.astype(bool) for row in rows]


def recall_at_k(ranked_hits: HitLists, k: int) -> float:
    """R@K of grounding / retrieval papers: the fraction of queries with at least one hit in the top ``k``.

    ``ranked_hits`` is a list of per-query (R_q,) bool hit vectors (lengths may differ) or a (Q, R)
    bool array. The caller must leave out queries that have no relevant object: they can never hit
    and would only pull the recall down.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rows = _as_hit_rows(ranked_hits)
    return float(np.mean([bool(row[:k].any()) for row in rows]))


def average_precision_at_k(hits: np.ndarray, num_relevant: int, k: int = 100) -> float:
    """AP@k of one query: ``(1 / min(num_relevant, k)) * sum_{i <= k, hit_i} precision@i``.

    ``hits`` (R,) bool is the ranked hit vector, ``num_relevant`` the number of relevant objects for
    the query (> 0: queries without any must be left out by the caller). Example: hits [1, 0, 1]
    with 2 relevant -> (1/1 + 2/3) / 2.
    """
    if num_relevant <= 0:
        raise ValueError("average precision is undefined for a query with no relevant objects")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = np.asarray(hits, dtype=bool).reshape(-1)[:k]
    if top.sum() > num_relevant:
        raise ValueError(f"{int(top.sum())} hits but only {num_relevant} relevant objects")
    precision_at_i = np.cumsum(top) / np.arange(1, len(top) + 1)
    return float(precision_at_i[top].sum() / min(num_relevant, k))


def mean_average_precision(list_of_hits: HitLists, list_of_num_relevant: Sequence[int], k: int = 100) -> float:
    """Mean over queries of :func:`average_precision_at_k` (every query must have a relevant object)."""
    rows = _as_hit_rows(list_of_hits)
    if len(rows) != len(list_of_num_relevant):
        raise ValueError("one num_relevant per query is needed")
    return float(np.mean([average_precision_at_k(h, n, k) for h, n in zip(rows, list_of_num_relevant)]))


def precision_recall_curve(
    list_of_hits: HitLists, list_of_num_relevant: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated 101-point precision-recall curve, averaged over queries (for the benchmark plot).

    For each query, with ``recall@i = hits in top i / num_relevant`` and ``precision@i = hits in top i / i``,
    the interpolated precision at recall level r is ``max{precision@i : recall@i >= r}``, or 0 when the
    ranked list never reaches recall r. The curve is the mean of that over queries at
    r = 0, 0.01, ..., 1 (the recall levels are ``arange(101) / 100``, so a recall that equals a level
    as a fraction also equals it in floating point). Returns (precision (101,), recall (101,)).
    Every query must have at least one relevant object.
    """
    rows = _as_hit_rows(list_of_hits)
    if len(rows) != len(list_of_num_relevant):
        raise ValueError("one num_relevant per query is needed")
    levels = np.arange(101) / 100
    curves = np.zeros((len(rows), len(levels)))
    for q, (hits, num_relevant) in enumerate(zip(rows, list_of_num_relevant)):
        if num_relevant <= 0:
            raise ValueError("the precision-recall curve is undefined for a query with no relevant objects")
        if len(hits) == 0:
            continue
        found = np.cumsum(hits)
        if found[-1] > num_relevant:
            raise ValueError(f"{int(found[-1])} hits but only {num_relevant} relevant objects")
        recall = found / num_relevant
        # Running max from the end: best precision at this rank or any deeper one.
        best_from_here = np.maximum.accumulate((found / np.arange(1, len(hits) + 1))[::-1])[::-1]
        first_rank = np.searchsorted(recall, levels, side="left")  # recall is non-decreasing
        reached = first_rank < len(hits)
        curves[q, reached] = best_from_here[first_rank[reached]]
    return curves.mean(axis=0), levels


# ----------------------------------------------------------------------------------------------
# Detection: COCO / LVIS average precision
# ----------------------------------------------------------------------------------------------

_FREQUENCY_GROUPS = {"APr": "r", "APc": "c", "APf": "f"}


def _coco_result(det: Mapping[str, Any], iou_type: str) -> dict:
    row = {"image_id": int(det["image_id"]), "category_id": int(det["category_id"]), "score": float(det["score"])}
    if iou_type == "segm":
        if det.get("segmentation") is None:
            raise ValueError("iou_type='segm' needs a 'segmentation' RLE on every detection")
        # No bbox on purpose: given one, loadRes would take the box area as the instance area and
        # mis-assign small/medium/large (detectron2 drops it for the same reason).
        row["segmentation"] = det["segmentation"]
    else:
        x1, y1, x2, y2 = (float(v) for v in det["bbox_xyxy"])
        row["bbox"] = [x1, y1, x2 - x1, y2 - y1]  # COCO wants xywh
    return row


def coco_detection_ap(
    gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], iou_type: str = "bbox"
) -> dict[str, Any]:
    """COCO average precision of ``detections`` against ``gt``, with pycocotools' COCOeval (its prints silenced).

    ``gt`` is a COCO instances dict (``images``, ``annotations`` with xywh ``bbox``, ``area``, ``iscrowd``
    and, for segm, ``segmentation``; ``categories``); it is not modified. Each detection is
    ``{"image_id", "category_id", "bbox_xyxy" (absolute pixels), "score"}`` plus, for
    ``iou_type="segm"``, ``"segmentation"`` (a COCO RLE, e.g. from ``pycocotools.mask.encode``).

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (COCOeval's first six stats, maxDets 100),
    ``"per_category": {category name: AP}`` for the categories that have ground truth, and, when any
    category carries an LVIS-style ``"frequency"`` ("r"/"c"/"f"), ``"APr"``, ``"APc"``, ``"APf"``: the
    mean of COCOeval's ``eval["precision"]`` over IoU thresholds, recall points and the group's
    categories, keeping only valid (> -1) entries, as LVIS does (equal to the mean per-category AP over
    the group's categories with ground truth). As in COCOeval, a value with nothing to average (no
    ground truth in that area range or group) is -1.0. No detections gives 0.0 where there is ground truth.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    # COCOeval writes 'ignore' (and, for segm, converted RLEs) into the GT annotations: work on copies.
    # It also records a match by the ground truth's id and takes id 0 for "no match", so a file that
    # numbers annotations from 0 would lose its first object: the copies are numbered from 1.
    gt_copy = dict(gt)
    gt_copy["annotations"] = [{**ann, "id": number} for number, ann in enumerate(gt.get("annotations", []), 1)]
    results = [_coco_result(det, iou_type) for det in detections]
    unknown = {r["image_id"] for r in results} - {img["id"] for img in gt_copy.get("images", [])}
    if unknown:
        raise ValueError(f"detections refer to images not in the ground truth: {sorted(unknown)[:5]}")

    logger.debug("COCOeval %s: %d detections, %d images", iou_type, len(results), len(gt_copy.get("images", [])))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_copy
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list; an empty result set scores 0 through COCOeval itself
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt_copy.get("images", [])), "categories": [], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    out: dict[str, Any] = {
        name: float(value) for name, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluator.stats[:6])
    }
    # (T IoU thresholds, R recall points, K categories, A area ranges, M maxDets); area 'all', maxDets 100.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    cat_ids = list(evaluator.params.catIds)
    out["per_category"] = {}
    for k, cat_id in enumerate(cat_ids):
        values = precision[:, :, k]
        if (values > -1).any():
            out["per_category"][coco_gt.cats[cat_id]["name"]] = float(values[values > -1].mean())
    if any("frequency" in coco_gt.cats[c] for c in cat_ids):
        for key, group in _FREQUENCY_GROUPS.items():
            members = [k for k, c in enumerate(cat_ids) if coco_gt.cats[c].get("frequency") == group]
            values = precision[:, :, members]
            out[key] = float(values[values > -1].mean()) if (values > -1).any() else -1.0
    return out


def best_f1_score_threshold(
    det_image_ids: np.ndarray,
    det_boxes_xyxy: np.ndarray,
    det_scores: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_boxes_xyxy: np.ndarray,
    iou_threshold: float = 0.5,
) -> dict[str, float] | None:
    """The detection-score threshold whose kept detections find the objects best: highest F1, class-agnostic.

    ``det_*`` are (D,) image ids, (D, 4) pixel boxes and (D,) scores; ``gt_*`` (G,) and (G, 4). Within
    each image, detections claim ground-truth boxes in descending score order as in :func:`iou_hits`
    (and COCOeval), so keeping the detections scoring >= t keeps exactly the matches of that prefix.
    Precision and recall at t count those matches over the kept detections and over G. Returns
    ``{"threshold", "precision", "recall", "f1"}`` at the best t (one of the detection scores; tied
    scores are kept or dropped together), or None
    when no threshold finds any object (no detections, no ground truth, or no match at all).
    """
    det_image_ids = np.asarray(det_image_ids).reshape(-1)
    det_boxes = np.asarray(det_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    gt_image_ids = np.asarray(gt_image_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if not (len(det_image_ids) == len(det_boxes) == len(det_scores)) or len(gt_image_ids) != len(gt_boxes):
        raise ValueError("detection ids, boxes and scores (and ground-truth ids and boxes) must have equal lengths")
    if len(det_scores) == 0 or len(gt_boxes) == 0:
        return None
    order = np.argsort(-det_scores, kind="stable")
    matched = np.zeros(len(det_scores), dtype=bool)
    for image in np.unique(det_image_ids):
        rows = order[det_image_ids[order] == image]  # this image's detections, best first
        in_image = gt_image_ids == image
        matched[rows] = iou_hits(det_image_ids[rows], det_boxes[rows], gt_image_ids[in_image], gt_boxes[in_image],
                                 iou_threshold)
    found = np.cumsum(matched[order])
    precision = found / np.arange(1, len(order) + 1)
    recall = found / len(gt_boxes)
    with np.errstate(invalid="ignore"):
        f1 = np.where(found > 0, 2 * precision * recall / (precision + recall), 0.0)
    sorted_scores = det_scores[order]
    inside_a_tie = np.append(sorted_scores[:-1] == sorted_scores[1:], False)
    f1[inside_a_tie] = 0.0  # a threshold keeps all tied detections: only cut after the last of them
    best = int(np.argmax(f1))
    if f1[best] == 0:
        return None
    return {"threshold": float(det_scores[order[best]]), "precision": float(precision[best]),
            "recall": float(recall[best]), "f1": float(f1[best])}


# ----------------------------------------------------------------------------------------------
# Classification and embedding quality
# ----------------------------------------------------------------------------------------------


def accuracy(predicted: np.ndarray, target: np.ndarray) -> float:
    """Fraction of (N,) ``predicted`` labels equal to (N,) ``target``."""
    predicted, target = np.asarray(predicted).reshape(-1), np.asarray(target).reshape(-1)
    if predicted.shape != target.shape or len(target) == 0:
        raise ValueError(f"need two non-empty label arrays of one length, got {predicted.shape} and {target.shape}")
    return float(np.mean(predicted == target))


def top_k_accuracy(scores: np.ndarray, target: np.ndarray, k: int) -> float:
    """Fraction of rows of ``scores`` (N, C) whose ``target`` class (N,) is among the ``k`` highest scores.

    Ties count in the target's favour: it is in the top k when fewer than k classes score strictly higher.
    """
    scores = np.asarray(scores)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if scores.ndim != 2 or len(scores) != len(target) or len(target) == 0:
        raise ValueError(f"need scores (N, C) and target (N,), got {scores.shape} and {target.shape}")
    target_score = scores[np.arange(len(target)), target]
    return float(np.mean((scores > target_score[:, None]).sum(axis=1) < k))


def knn_purity(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean over points of the fraction of their ``k`` nearest neighbours (cosine, self excluded) sharing their label.

    ``embeddings`` (N, D) should be L2-normalised (they are re-normalised here, so cosine is exact either
    way); ``labels`` (N,). The search is exact (faiss ``IndexFlatIP``, float32), which works through the
    similarities block by block: memory is O(N * (D + k)), never O(N^2). Ties between neighbours of equal
    similarity (e.g. duplicate embeddings) are broken arbitrarily.
    """
    import faiss

    x = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    n = len(x)
    if x.ndim != 2 or len(labels) != n:
        raise ValueError(f"need embeddings (N, D) and labels (N,), got {x.shape} and {labels.shape}")
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.ascontiguousarray(x / np.where(norms > 0, norms, 1))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, ids = index.search(x, k + 1)  # the costly line: all N x N similarities, blocked inside faiss
    # Drop each point itself; when a tie (a duplicate) pushed it out of the k + 1, drop the last instead.
    keep = ids != np.arange(n)[:, None]
    keep[keep.all(axis=1), k] = False
    neighbours = ids[keep].reshape(n, k)
    return float(np.mean(labels[neighbours] == labels[:, None]))


# ----------------------------------------------------------------------------------------------
# Captioning: CIDEr-D
# ----------------------------------------------------------------------------------------------

# Tokens pycocoevalcap's PTBTokenizer drops after tokenising (compared case-sensitively, so the
# lower-cased bracket tokens "-lrb-" etc. survive there, and here).
_PTB_DROPPED = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_PTB_SYMBOLS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-", '"': "''"}
_ALNUM = r"[^\W_]"
_CONTRACTION = re.compile(rf"(?<={_ALNUM})(n't|'(?:s|re|ve|ll|d|m))(?!{_ALNUM})")
_PTB_TOKEN = re.compile(
    rf"""
      (?:[^\W\d_]\.){{2,}}                                    # initialisms: u.s. e.g. a.m.
    | (?:mrs?|ms|dr|st|vs|jr|sr|mt|prof|etc)\.(?!{_ALNUM})    # a few abbreviations that keep their period
    | \d+(?:[.,:]\d+)+                                        # 3.5  1,000  5:30
    | n't(?!{_ALNUM}) | '(?:s|re|ve|ll|d|m)(?!{_ALNUM})       # contraction halves split off below
    | {_ALNUM}+(?:[-'/.]{_ALNUM}+)*                           # words: black-and-white, and/or, o'clock
    | [.?!]+ | --                                             # punctuation runs: "...", "?!"
    | \S                                                      # any other symbol alone
    """,
    re.VERBOSE,
)


def tokenize_caption(text: str) -> str:
    """Lower-case and tokenise ``text`` the way pycocoevalcap's PTBTokenizer does for plain sentences.

    Contractions split PTB-style ("isn't" -> "is n't", "cat's" -> "cat 's"), punctuation tokens are
    dropped, hyphenated words and decimal numbers stay whole. Returns the tokens joined by single spaces.
    An approximation of Stanford's tokenizer without Java; exotic input (URLs, emoticons) may differ.
    """
    text = _CONTRACTION.sub(r" \1", text.lower())
    tokens = (_PTB_SYMBOLS.get(tok, tok) for tok in _PTB_TOKEN.findall(text))
    return " ".join(tok for tok in tokens if tok not in _PTB_DROPPED)


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + order]) for order in range(1, n + 1) for i in range(len(tokens) - order + 1))


def cider_d(
    candidates: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    tokenize: bool = True,
    *,
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, np.ndarray]:
    """CIDEr-D of one candidate caption per key against that key's reference captions.

    Computed as pycocoevalcap's ``Cider().compute_score`` does: TF-IDF vectors of 1..``n``-grams with
    document frequencies counted over the references (one document per key, so the score depends on
    the whole set), per-order cosine similarity with the candidate weights clipped at the reference
    weights, a Gaussian length penalty ``exp(-delta^2 / (2 sigma^2))``, averaged over orders and
    references and scaled by 10. ``delta`` is, like in pycocoevalcap, the difference in *bigram* counts
    (the word-count difference unless a caption is empty). With ``tokenize`` the captions go through
    :func:`tokenize_caption` first; otherwise they are split on whitespace as given.

    Returns (corpus score, per-key scores (K,) in the order of ``candidates``).
    """
    keys = list(candidates)
    if not keys or set(keys) != set(references):
        raise ValueError("candidates and references must be non-empty and have the same keys")
    prepare = tokenize_caption if tokenize else (lambda s: s)
    cand_counts = [_ngram_counts(prepare(candidates[key]).split(), n) for key in keys]
    ref_counts = []
    for key in keys:
        if isinstance(references[key], str) or len(references[key]) == 0:
            raise ValueError(f"references[{key!r}] must be a non-empty list of strings")
        ref_counts.append([_ngram_counts(prepare(ref).split(), n) for ref in references[key]])
    doc_freq: Counter = Counter()
    for refs in ref_counts:
        doc_freq.update(set().union(*refs))
    log_num_docs = math.log(len(keys))

    def tfidf(counts: Counter) -> tuple[list[dict], np.ndarray, int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = np.zeros(n)
        for gram, tf in counts.items():
            weight = tf * (log_num_docs - math.log(max(1.0, doc_freq[gram])))  # unseen n-grams: df 1
            vec[len(gram) - 1][gram] = weight
            norm[len(gram) - 1] += weight * weight
        bigrams = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, np.sqrt(norm), bigrams

    scores = np.zeros(len(keys))
    for idx, (cand, refs) in enumerate(zip(cand_counts, ref_counts)):
        vec, norm, length = tfidf(cand)
        total = np.zeros(n)
        for ref in refs:
            vec_ref, norm_ref, length_ref = tfidf(ref)
            penalty = math.exp(-((length - length_ref) ** 2) / (2 * sigma**2))
            for order in range(n):
                val = sum(
                    min(w, vec_ref[order].get(g, 0.0)) * vec_ref[order].get(g, 0.0) for g, w in vec[order].items()
                )
                if norm[order] != 0 and norm_ref[order] != 0:
                    val /= norm[order] * norm_ref[order]
                total[order] += val * penalty
        scores[idx] = total.mean() / len(refs) * 10.0
    return float(scores.mean()), scores
