"""The vector side of one committed generation: every segment's FAISS index, minus the tombstones.

A search runs in each segment (restricted to the segment's part of an ``allowed`` selection, and
never returning a tombstoned id) and keeps the best k of all: exactly the result of one Flat index
over the live vectors. An IVF segment scans the share of its lists that one index over all the live
vectors would scan (``vectors.scan_share``), unless ``tune`` sets nprobe for all. Segment files are
loaded on first use; large ones are memory-mapped (``vectors.load``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from objsearch import schema
from objsearch.errors import IndexCorrupt, first_line
from objsearch.store import parquet, vectors
from objsearch.store.manifest import Manifest, Segment

logger = logging.getLogger(__name__)


def read_tombstones(root: Path, manifest: Manifest) -> np.ndarray:
    """Sorted int64 ids of every tombstoned object of ``manifest``."""
    if manifest.tombstones is None:
        return np.zeros(0, np.int64)
    table = parquet.read_shards([root / manifest.tombstones.path], schema.TOMBSTONES_SCHEMA)
    return np.sort(table.column(schema.OBJECT_ID).to_numpy().astype(np.int64))


def in_range(sorted_ids: np.ndarray, segment: Segment) -> np.ndarray:
    """The part of sorted ``sorted_ids`` that lies in the segment's id range."""
    lo, hi = np.searchsorted(sorted_ids, [segment.min_object_id, segment.max_object_id + 1])
    return sorted_ids[lo:hi]


class SegmentSet:
    """Searches the segments of one manifest as one index. ``tune`` applies to every segment."""

    def __init__(self, root: Path, manifest: Manifest, previous: "SegmentSet | None" = None) -> None:
        """``previous``: the set of an older generation of the same index, whose loaded segments
        are taken over where this generation keeps them (segment files never change), so following
        a commit costs what the commit changed, not a reload of every segment."""
        self.root = root
        self.manifest = manifest
        self.dim = manifest.embedder.embed_dim
        self._tombstones: np.ndarray | None = None
        self._searchers: dict[int, vectors.Searcher] = {}
        self._nprobe: int | None = None
        self._loaded: dict[str, vectors.Searcher] = {}  # the previous generation's, by vectors file
        if previous is not None and previous._nprobe is None and previous.root == root:
            loaded = dict(previous._searchers)  # a copy first: the older generation may be loading more
            kept = {s.vectors.path for s in manifest.segments}  # merged-away segments are let go
            self._loaded = {s.vectors.path: loaded[n] for n, s in enumerate(previous.manifest.segments)
                            if n in loaded and s.vectors.path in kept}

    @property
    def tombstones(self) -> np.ndarray:
        if self._tombstones is None:
            try:
                self._tombstones = read_tombstones(self.root, self.manifest)
            except (OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors / OSErrors
                raise IndexCorrupt(f"cannot read {self.manifest.tombstones.path} ({exc}); run `objsearch doctor --repair`") from None
        return self._tombstones

    @property
    def ntotal(self) -> int:
        """Live vectors: every segment's rows less the tombstones."""
        return sum(s.rows for s in self.manifest.segments) - self.manifest.tombstone_count

    def searcher(self, number: int) -> vectors.Searcher:
        """The searcher of segment ``number`` (loaded on first use)."""
        if number not in self._searchers:
            segment = self.manifest.segments[number]
            old = self._taken_over(segment)
            index = old.index if old is not None else self._load(segment)
            excluded = in_range(self.tombstones, segment)
            keep = old is not None and np.array_equal(old.excluded, excluded)
            self._searchers[number] = old if keep else vectors.Searcher(index, excluded=excluded)
        return self._searchers[number]

    def _load(self, segment: Segment):
        path = self.root / segment.vectors.path
        try:
            index = vectors.load(path)
        except (RuntimeError, OSError) as exc:
            raise IndexCorrupt(f"cannot load {path} ({first_line(exc)}); reopen the index, and if this persists, "
                               "run `objsearch doctor --repair`") from None
        ivf = vectors.ivf_of(index)
        if ivf is not None:
            ivf.nprobe = self._nprobe_for(ivf)
        return index

    def _taken_over(self, segment: Segment) -> vectors.Searcher | None:
        """The previous generation's searcher of this segment file when it scans as this generation
        would (same nprobe; its tombstones may differ), else None."""
        old = self._loaded.get(segment.vectors.path)
        if old is None or self._nprobe:
            return None
        ivf = vectors.ivf_of(old.index)
        if ivf is not None and ivf.nprobe != self._nprobe_for(ivf):
            return None  # the share moved (the index grew past a size step): load it afresh
        return old

    def _nprobe_for(self, ivf) -> int:
        """The lists an IVF segment scans: ``tune``'s nprobe if set; in a multi-segment index the
        share of it that one index over all the live vectors would scan (each segment's own
        default, 1/16 of its lists, at least 32, would make a query over many small segments scan
        several times the vectors of the compacted index, for no recall gain); else the default."""
        if self._nprobe:
            return self._nprobe
        if len(self.manifest.segments) > 1:
            return vectors.share_nprobe(ivf.nlist, vectors.scan_share(max(self.ntotal, 1)))
        return vectors.default_nprobe(ivf.nlist)

    def tune(self, nprobe: int) -> None:
        """Scan ``nprobe`` lists in every IVF segment (loaded now or later)."""
        self._nprobe = nprobe
        for searcher in self._searchers.values():
            vectors.tune(searcher.index, nprobe)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over all segments -> (scores (Q, k') float32, ids (Q, k') int64), k' <= k; id -1 = empty slot.
        ``allowed_ids``: as in ``vectors.Searcher.search`` (unique, none tombstoned)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        allowed = None if allowed_ids is None else np.sort(np.asarray(allowed_ids, dtype=np.int64))
        all_scores, all_ids = [], []
        with vectors.one_thread(len(queries)):  # once for all segments: each switch costs ~10 us
            for number, segment in enumerate(self.manifest.segments):
                part = None if allowed is None else in_range(allowed, segment)
                if part is not None and len(part) == 0:
                    continue
                scores, ids = self.searcher(number).search_unguarded(queries, k, part)
                all_scores.append(scores)
                all_ids.append(ids)
        if not all_scores:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return merge_top_k(np.concatenate(all_scores, axis=1), np.concatenate(all_ids, axis=1), k)

    def reconstruct(self, object_id: int) -> np.ndarray | None:
        """The (D,) float32 vector of a live object, or None when there is none."""
        tombstones = self.tombstones
        at = np.searchsorted(tombstones, object_id)
        if at < len(tombstones) and tombstones[at] == object_id:
            return None
        for number, segment in enumerate(self.manifest.segments):
            if segment.holds(object_id):
                try:
                    return self.searcher(number).index.reconstruct(int(object_id))
                except RuntimeError:  # not in the segment
                    return None
        return None

    def all_ids(self) -> np.ndarray:
        """Sorted ids of every live vector."""
        parts = [self.searcher(number)._ids() for number in range(len(self.manifest.segments))]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def merge_top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of (Q, M) candidate scores and ids (id -1 = empty) -> (Q, min(k, M)), best first;
    equal scores in id order, so that a ranking (and the pages cut from it) does not depend on the
    order FAISS met them in."""
    scores = np.where(ids >= 0, scores, -np.inf)
    k = min(k, scores.shape[1])
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    top_ids = np.take_along_axis(ids, order, axis=1)
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids[~np.isfinite(top_scores)] = -1
    return top_scores.astype(np.float32), top_ids


