"""Reciprocal rank fusion: one ranking from several (Cormack, Clarke and Büttcher, SIGIR 2009).

An object's fused score is ``sum over rankings of 1 / (RRF_K + its rank)`` (ranks from 1; a
ranking that does not hold it adds nothing). Only ranks are used, never the scores, so a cosine
and a BM25 score, which have no common scale, need no calibration; ``RRF_K = 60`` is the paper's
constant, the one Elasticsearch, OpenSearch and LanceDB use by default: it keeps one list's first
place from outweighing an object that both lists rank well.
"""

from __future__ import annotations

import numpy as np

RRF_K = 60


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Fuse rankings of ids (each (n_i,) int64, best first, no repeats within one; -1 = empty slot)
    -> (ids (M,) int64, fused scores (M,) float64), best first; equal scores keep the order of the
    best rank any ranking gave, then the id."""
    fused: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking in rankings:
        for rank, object_id in enumerate(np.asarray(ranking, np.int64).tolist(), start=1):
            if object_id < 0:
                continue
            fused[object_id] = fused.get(object_id, 0.0) + 1.0 / (k + rank)
            best_rank[object_id] = min(best_rank.get(object_id, rank), rank)
    ids = np.fromiter(fused, np.int64, len(fused))
    scores = np.fromiter(fused.values(), np.float64, len(fused))
    ranks = np.fromiter((best_rank[i] for i in fused), np.int64, len(fused))
    order = np.lexsort((ids, ranks, -scores))
    return ids[order], scores[order]
