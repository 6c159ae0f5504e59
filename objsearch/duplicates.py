"""Near-identical objects: the same object in burst shots, copies and crops of one photo.

Two objects are near-identical when the cosine similarity of their embeddings is at least a
threshold (DEFAULT_THRESHOLD). ``duplicate_groups`` finds every such pair with FAISS range
searches (each object's vector against every segment; an IVF segment answers from the lists it
scans, so the search is as exact as a query) and returns the connected components of the pairs
(scipy), largest first. ``without_duplicates`` keeps the first hit of each group in a ranking.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from objsearch.hits import Hit

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.95
DEDUP_DEPTH = 4  # a search that drops duplicates asks for this many times its k, so that k remain
BATCH = 4096  # query vectors per range search


def duplicate_groups(index, threshold: float = DEFAULT_THRESHOLD) -> list[list[int]]:
    """Groups (2 objects or more) of object ids whose embeddings have a cosine similarity of at least
    ``threshold`` with another of the group (chains included), largest group first, ids sorted.
    ``index``: an open ``objsearch.search.Index``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    segments = index.vectors
    ids = segments.all_ids()
    if len(ids) < 2:
        return []
    sources, targets = [], []
    for number in range(len(segments.manifest.segments)):
        searcher = segments.searcher(number)
        own = searcher._ids()
        for start in range(0, len(own), BATCH):
            chunk = own[start:start + BATCH]
            queries = searcher.index.reconstruct_batch(chunk)
            for other in range(len(segments.manifest.segments)):
                lims, _, found = segments.searcher(other).range_search(queries, at_least(threshold))
                query_ids = np.repeat(chunk, np.diff(lims).astype(np.int64))
                keep = found != query_ids
                sources.append(query_ids[keep])
                targets.append(found[keep])
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    position = np.searchsorted(ids, np.concatenate([sources, targets]))
    n = len(ids)
    graph = coo_matrix((np.ones(len(position) // 2, np.int8), (position[: len(sources)], position[len(sources):])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=count)
    in_groups = np.flatnonzero(sizes[labels] >= 2)  # positions of objects in a group of 2 or more
    order = in_groups[np.argsort(labels[in_groups], kind="stable")]  # by group, then by id
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    groups = [part.tolist() for part in np.split(ids[order], bounds)] if len(order) else []
    groups.sort(key=lambda group: (-len(group), group[0]))
    logger.info("%d groups of near-identical objects (threshold %.3f) among %d objects", len(groups), threshold, n)
    return groups


def at_least(threshold: float) -> float:
    """The radius for FAISS's inner-product range search, which keeps scores strictly above it."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


def without_duplicates(index, hits: Sequence[Hit], threshold: float = DEFAULT_THRESHOLD) -> list[Hit]:
    """``hits`` minus every hit at least ``threshold`` similar to a better-ranked hit kept; ranks
    renumbered. ``index``: the open ``Index`` the hits came from."""
    kept: list[Hit] = []
    kept_vectors = np.zeros((len(hits), index.manifest.embedder.embed_dim), np.float32)  # the first ``shown`` rows are filled
    shown = 0
    for hit in hits:
        vector = index.vectors.reconstruct(hit.object_id)
        if vector is not None and shown and float(np.max(kept_vectors[:shown] @ vector)) >= threshold:
            continue
        kept.append(hit)
        if vector is not None:
            kept_vectors[shown] = vector
            shown += 1
    return [dataclasses.replace(hit, rank=rank) for rank, hit in enumerate(kept, 1)]
