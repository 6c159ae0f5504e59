"""FAISS: the vector side of the index. FAISS ids are object ids; the metric is inner product.

Embeddings are L2-normalised (float32 copies of the stored float16 values), so scores are cosines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from objsearch.store.layout import durable_write

logger = logging.getLogger(__name__)

DEFAULT_INDEX_TYPE = "IDMap2,Flat"


def _faiss():
    import faiss  # imported lazily: `objsearch --help` should not pay for it

    return faiss


def new_index(embed_dim: int, index_type: str = DEFAULT_INDEX_TYPE):
    """An empty inner-product index for ``embed_dim``-d vectors, built from a factory string."""
    faiss = _faiss()
    return faiss.index_factory(embed_dim, index_type, faiss.METRIC_INNER_PRODUCT)


def add(index, ids: np.ndarray, embeddings: np.ndarray) -> None:
    """Add (N, D) embeddings under int64 ids."""
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(embeddings, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def remove(index, ids: np.ndarray) -> int:
    """Remove the given ids; returns how many were present."""
    if not len(ids):
        return 0
    return int(index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))


def write(index, path: Path) -> None:
    """Serialise durably (see ``layout.durable_write``)."""
    durable_write(path, lambda tmp: _faiss().write_index(index, tmp))


def load(path: Path, *, mmap: bool = False):
    faiss = _faiss()
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    return faiss.read_index(str(path), flags)


def search(index, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product -> (scores (Q, k) float32, ids (Q, k) int64); missing slots have id -1.

    ``allowed_ids`` restricts the search to those object ids exactly (FAISS ID selector), so the
    result is the true top-k among them, whatever their share of the index.
    """
    faiss = _faiss()
    queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d)
    k = max(1, min(k, index.ntotal))
    if index.ntotal == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if allowed_ids is None:
        return index.search(queries, k)
    if len(allowed_ids) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
    params = faiss.SearchParameters(sel=selector)
    return index.search(queries, min(k, len(allowed_ids)), params=params)
