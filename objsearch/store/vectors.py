"""FAISS: the vector side of the index. FAISS ids are object ids; the metric is inner product.

Embeddings are L2-normalised (float32 copies of the stored float16 values), so scores are cosines.

The index type follows the collection's size (``choose_index_type``):

- up to EXACT_MAX_OBJECTS: ``IDMap2,Flat``, exact. (Measured here: one query over 200k 512-d
  vectors takes 32 ms, over 1M 152 ms, so exact search stops paying off around 50k.)
- beyond: ``IVF{nlist},SQfp16``: an inverted file whose lists hold the float16 vectors
  themselves, so the only approximation is which ``nprobe`` lists get scanned. With a memory
  budget too small for 2 bytes a dimension, 8-bit scalar codes (``SQ8``) or PQ codes are used.
  (PQ fast-scan with float16 re-ranking was tried first: FAISS cannot remove ids from it.)

Filtered searches: a selection of at most SCAN_MAX_SELECTED ids is scanned exactly (its vectors
reconstructed and scored); larger selections search the index restricted by an ID selector,
which is exact for Flat and as good as unfiltered search for IVF.
"""

from __future__ import annotations

import logging
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from objsearch.store.layout import durable_write

logger = logging.getLogger(__name__)

DEFAULT_INDEX_TYPE = "IDMap2,Flat"
EXACT_MAX_OBJECTS = 50_000
SCAN_MAX_SELECTED = 20_000
MIN_NPROBE = 32
SEGMENT_MIN_NPROBE = 8  # lists scanned at least in each inverted file of a multi-segment index (share_nprobe)
MAX_DEFAULT_NPROBE = 128  # 16384 lists of a 1M collection: ~8k vectors scanned, ~1.3 ms
IVF_MAX_NLIST = 16384  # a float16 coarse quantizer this size is 16 MiB: about 0.8 ms per query
KMEANS_ITERATIONS = 10  # FAISS' default is 25
KMEANS_POINTS_PER_LIST = 20  # training vectors per list (FAISS asks for 39, and samples 256 at most)
ENCODER_TRAIN_POINTS = 65_536  # for 8-bit and PQ codes (FAISS' PQ training samples 256 a centroid)
MMAP_MIN_BYTES = 256 << 20  # larger index files are memory-mapped when the index type allows it


def _faiss():
    import faiss  # imported lazily: `objsearch --help` should not pay for it

    return faiss


def choose_index_type(n_objects: int, embed_dim: int, max_memory_bytes: int | None = None, *, exact_max: int | None = None,
                      collection_objects: int | None = None) -> str:
    """The factory string for ``n_objects`` vectors of ``embed_dim`` within a memory budget (bytes);
    exact search up to ``exact_max`` vectors (default EXACT_MAX_OBJECTS). ``collection_objects``:
    the size of the whole collection when these vectors are one segment of it (``ivf_nlist``)."""
    if n_objects <= (EXACT_MAX_OBJECTS if exact_max is None else exact_max) and (not max_memory_bytes or n_objects * estimated_bytes_per_vector(DEFAULT_INDEX_TYPE, embed_dim) <= max_memory_bytes):
        return DEFAULT_INDEX_TYPE
    candidates = ivf_index_types(n_objects, embed_dim, collection_objects=collection_objects)
    for index_type in candidates:
        if not max_memory_bytes or n_objects * estimated_bytes_per_vector(index_type, embed_dim) <= max_memory_bytes:
            return index_type
    return candidates[-1]


def ivf_nlist(n_objects: int, *, collection_objects: int | None = None) -> int:
    """Inverted lists for ``n_objects`` vectors: about 16 sqrt(n) (at least 256, at most
    IVF_MAX_NLIST, a power of two), and at least 39 vectors per list (FAISS' k-means minimum).

    A segment of a larger collection (``collection_objects`` vectors in all) gets the collection's
    list density instead: its share of the lists one index over the whole collection would have.
    Every segment's coarse quantizer is scanned for every query, so the segments of a collection
    then rank about as many centroids together as one index would (at 1M objects in three 320k
    segments, 12k instead of 27k: the 16 sqrt(n) rule gives small indexes more lists per vector)."""
    whole = max(n_objects, collection_objects or 0, 1)
    nlist = 2 ** round(math.log2(max(256, min(IVF_MAX_NLIST, 16 * math.sqrt(whole)))))
    if whole > n_objects:
        nlist = 2 ** round(math.log2(max(1.0, nlist * n_objects / whole)))
    while nlist > 1 and nlist * 39 > n_objects:
        nlist //= 2
    return nlist


def ivf_index_types(n_objects: int, embed_dim: int, *, collection_objects: int | None = None) -> list[str]:
    """The IVF factory strings for ``n_objects`` vectors, largest codes first: float16, 8-bit, PQ,
    with ``ivf_nlist`` lists.

    The coarse quantizer holds the centroids in float16 (``IVF{n}(SQfp16)``), which halves the
    memory a query's list ranking reads (16384 lists: 0.8 ms instead of 3-7 ms for a float32 Flat
    quantizer, with the same ranking of lists to 0.9997).
    """
    nlist = ivf_nlist(n_objects, collection_objects=collection_objects)
    m = next(m for m in (embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim) if m and embed_dim % m == 0)
    ivf = f"IVF{nlist}(SQfp16)"
    return [f"{ivf},SQfp16", f"{ivf},SQ8", f"{ivf},PQ{m}"]


def estimated_bytes_per_vector(index_type: str, embed_dim: int) -> int:
    """In-memory bytes per vector of a factory string: codes, id, and id-map overhead."""
    code = {"Flat": 4 * embed_dim, "SQfp16": 2 * embed_dim, "SQ8": embed_dim}.get(index_type.rsplit(",", 1)[-1])
    if code is None:
        pq = re.search(r"PQ(\d+)", index_type)
        code = int(pq.group(1)) if pq else 4 * embed_dim
    return code + 8 + 32  # + the id + the id map (IDMap2 arrays or the IVF direct-map hash table)


def new_index(embed_dim: int, index_type: str = DEFAULT_INDEX_TYPE):
    """An empty inner-product index for ``embed_dim``-d vectors, built from a factory string.

    IVF types keep object ids natively (with a hash-table direct map, so vectors can be
    reconstructed by id); other types are wrapped in IDMap2.
    """
    faiss = _faiss()
    index = faiss.index_factory(embed_dim, index_type, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexIVF):
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
    elif not isinstance(index, faiss.IndexIDMap2):
        index = faiss.IndexIDMap2(index)
    tune(index)
    return index


def build(ids: np.ndarray, embeddings: np.ndarray, index_type: str, *, seed: int = 0):
    """A new index of ``index_type`` holding (N, D) ``embeddings`` under ``ids``, trained on a
    sample of them when the type needs training."""
    index = new_index(embeddings.shape[1], index_type)
    if not index.is_trained:
        train_on_sample(index, embeddings, index_type, seed=seed)
    add_bulk(index, ids, embeddings)
    return index


def train_on_sample(index, embeddings: np.ndarray, index_type: str, *, seed: int = 0) -> None:
    """Train ``index`` on a random sample of (N, D) ``embeddings`` (``training_sample_size``)."""
    sample_size = training_sample_size(index_type, len(embeddings))
    sample = np.sort(np.random.default_rng(seed).choice(len(embeddings), sample_size, replace=False))
    logger.info("training %s on %d of %d vectors", index_type, sample_size, len(embeddings))
    train(index, embeddings[sample])


def training_sample_size(index_type: str, n_vectors: int) -> int:
    """How many of ``n_vectors`` ``build`` trains ``index_type`` on: KMEANS_POINTS_PER_LIST a list
    (at least 100k), at most all of them."""
    return min(n_vectors, max(KMEANS_POINTS_PER_LIST * _nlist(index_type), 100_000))


def train(index, sample: np.ndarray) -> None:
    """Train ``index`` on (S, D) ``sample``. IVF: the coarse centroids by spherical k-means (FAISS'
    choice for inner product) of KMEANS_ITERATIONS rounds over all of the sample, assignments by
    BLAS; then the codes on at most ENCODER_TRAIN_POINTS of it (none for float16 codes, which
    learn nothing: FAISS would assign every training vector to a list through the float16
    quantizer, without BLAS, for nothing: measured, 230 s of 343 at 16384 lists)."""
    faiss = _faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    ivf = ivf_of(index)
    if ivf is None:
        index.train(sample)
        return
    if not (ivf.quantizer.is_trained and ivf.quantizer.ntotal == ivf.nlist):
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.cp.max_points_per_centroid = max(256, -(-len(sample) // ivf.nlist))  # no subsampling
        ivf.cp.min_points_per_centroid = min(39, KMEANS_POINTS_PER_LIST)  # FAISS warns below this
        kmeans = faiss.Clustering(ivf.d, ivf.nlist, ivf.cp)  # cp.spherical is set for inner product
        kmeans.train(sample, faiss.IndexFlat(ivf.d, ivf.metric_type))
        ivf.quantizer.reset()
        ivf.quantizer.add(faiss.vector_to_array(kmeans.centroids).reshape(ivf.nlist, ivf.d))
    learns = not (isinstance(ivf, faiss.IndexIVFFlat) or (isinstance(ivf, faiss.IndexIVFScalarQuantizer) and ivf.sq.qtype == faiss.ScalarQuantizer.QT_fp16))
    index.train(sample[: ENCODER_TRAIN_POINTS if learns else 1])  # the IVF sees its quantizer trained


def add_bulk(index, ids: np.ndarray, embeddings: np.ndarray, *, chunk: int = 100_000) -> None:
    """Add (N, D) embeddings under int64 ids, ``chunk`` float32 rows at a time. An IVF index
    whose coarse quantizer is not Flat (the float16 one) has its vectors assigned to lists by a
    Flat copy of its centroids, with BLAS: the same lists, ~4x faster for many vectors."""
    faiss = _faiss()
    ivf = faiss.downcast_index(index)
    assigner = None
    if isinstance(ivf, faiss.IndexIVF) and len(ids) > 1000 and not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
        assigner = faiss.IndexFlat(ivf.d, ivf.quantizer.metric_type)
        assigner.add(ivf.quantizer.reconstruct_n(0, ivf.quantizer.ntotal))
    for start in range(0, len(ids), chunk):
        x = np.ascontiguousarray(embeddings[start : start + chunk], dtype=np.float32)
        part = np.ascontiguousarray(ids[start : start + chunk], dtype=np.int64)
        if assigner is None:
            add(index, part, x)
            continue
        _, lists = assigner.search(x, 1)
        index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(part), faiss.swig_ptr(np.ascontiguousarray(lists[:, 0])))


def ivf_of(index):
    """The IndexIVF inside ``index`` (itself, or under IDMap2/Refine/PreTransform), or None."""
    return _faiss().try_extract_index_ivf(index)


def trainable(index_type: str, n_vectors: int) -> bool:
    """Whether ``n_vectors`` are enough to train ``index_type`` (FAISS k-means needs one per list)."""
    return n_vectors >= _nlist(index_type) and (n_vectors > 0 or "IVF" not in index_type)


def _nlist(index_type: str) -> int:
    match = re.search(r"IVF(\d+)", index_type)
    return int(match.group(1)) if match else 1


def tune(index, nprobe: int | None = None) -> None:
    """Set the search-time parameters an index type has. IVF: lists scanned per query, by default
    1/16 of them, at least MIN_NPROBE and at most MAX_DEFAULT_NPROBE. Measured at 1M x 512-d,
    IVF16384(SQfp16),SQfp16 (benchmarks/ann.py, one query at a time): on weakly clustered data
    (20k clusters, noise 1.2) recall@10 is 0.964 at nprobe 32 (0.7 ms), 0.972 at 128 (1.3 ms) and
    0.984 at 512 (3.1 ms); on clustered data (1k clusters, noise 0.8) it is ~1.0 from nprobe 16.
    (IVF4096,SQfp16 at nprobe 256, the choice before: 0.87 and 3.9 ms on the weakly clustered
    data, 0.96 at nprobe 1024 but 13.6 ms.)"""
    faiss = _faiss()
    ivf = faiss.downcast_index(index)
    if isinstance(ivf, faiss.IndexIVF):
        ivf.nprobe = nprobe or default_nprobe(ivf.nlist)


def default_nprobe(nlist: int) -> int:
    """Lists a query scans in an index of ``nlist`` lists by default (see ``tune``)."""
    return min(nlist, max(MIN_NPROBE, min(MAX_DEFAULT_NPROBE, nlist // 16)))


def scan_share(n_objects: int) -> float:
    """The share of ``n_objects`` vectors one query scans in the inverted file the automatic choice
    builds for them (default nprobe over nlist): 1/128 at 1M, 1/16 at 100k."""
    nlist = ivf_nlist(n_objects)
    return default_nprobe(nlist) / nlist


def share_nprobe(nlist: int, share: float) -> int:
    """Lists to scan in an inverted file of ``nlist`` lists that is one part of a larger collection,
    so that the query scans ``share`` of it, as one index over the whole collection would
    (SEGMENT_MIN_NPROBE at least: a small part's few, coarse lists need a margin)."""
    return min(nlist, max(SEGMENT_MIN_NPROBE, math.ceil(share * nlist)))


def add(index, ids: np.ndarray, embeddings: np.ndarray) -> None:
    """Add (N, D) embeddings under int64 ids."""
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(embeddings, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def remove(index, ids: np.ndarray) -> int:
    """Remove the given ids; returns how many were present."""
    if not len(ids):
        return 0
    return int(index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))


def all_ids(index) -> np.ndarray:
    """Every id in the index, int64."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(lists.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def write(index, path: Path) -> None:
    """Serialise durably (see ``layout.durable_write``)."""
    durable_write(path, lambda tmp: _faiss().write_index(index, tmp))


def load(path: Path, *, mmap: bool | None = None):
    """Read an index; large ones are memory-mapped where FAISS can (``mmap=None``: decide by size)."""
    faiss = _faiss()
    if mmap is None:
        mmap = path.stat().st_size >= MMAP_MIN_BYTES
    if mmap:
        try:
            # MMAP_IFC maps the codes in place (ArrayInvertedLists over the mapping); plain MMAP
            # would give OnDiskInvertedLists, measured 6x slower a query (1.7 vs 0.28 ms, 320k x 512-d).
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
            tune(index)
            return index
        except RuntimeError:
            logger.debug("%s cannot be memory-mapped; reading it", path)
    index = faiss.read_index(str(path))
    tune(index)
    return index


BITMAP_MAX_ID = 1 << 30  # ids below this are selected with a bitmap (at most 128 MiB), else a hash set


def _selector(ids: np.ndarray):
    """A FAISS ID selector for sorted unique int64 ``ids``. A bitmap is much cheaper to build and
    to probe than IDSelectorBatch's hash set for large selections (measured: 500k ids)."""
    faiss = _faiss()
    if ids[-1] < BITMAP_MAX_ID and ids[0] >= 0:
        mask = np.zeros(int(ids[-1]) + 1, dtype=bool)
        mask[ids] = True
        return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))  # the wrapper keeps the array alive
    return faiss.IDSelectorBatch(ids)


GPU_MAX_K = 2048  # FAISS GPU indexes refuse larger k (and nprobe)


def gpu_count() -> int:
    """GPUs this FAISS build can use (0 for faiss-cpu)."""
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else 0


def gpu_search_enabled() -> bool:
    """Whether searches should use the GPUs: asked for with OBJSEARCH_FAISS_GPU=1, and GPUs present."""
    return os.environ.get("OBJSEARCH_FAISS_GPU", "0") == "1" and gpu_count() > 0


def to_gpus(index):
    """A copy of ``index`` on every GPU (sharded across several), with the CPU index's nprobe, or
    None when FAISS cannot put this index type on a GPU."""
    faiss = _faiss()
    try:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # several GPUs each hold a part, rather than a full replica
        gpu = faiss.index_cpu_to_all_gpus(index, co=options)
        ivf = ivf_of(index)
        if ivf is not None:
            faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", min(ivf.nprobe, GPU_MAX_K))
    except (RuntimeError, AttributeError) as exc:
        logger.warning("the vector index stays on the CPU: FAISS cannot copy it to the GPU (%s)", exc)
        return None
    logger.info("vector index copied to %d GPU(s)", gpu_count())
    return gpu


@contextmanager
def one_thread(n_queries: int):
    """Run FAISS on the calling thread alone while searching a single query.

    One query gains nothing from FAISS's OpenMP threads, and once torch is loaded in the process
    (as it is whenever a text query is embedded) entering an OpenMP parallel region can cost a
    scheduler tick: measured here, a 5,000-vector Flat search took 8.0 ms on 2 threads and 0.13 ms
    on 1. ``omp_set_num_threads`` sets the calling thread's own setting, so other threads keep theirs.
    """
    if n_queries > 1:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class Searcher:
    """Searches one loaded (read-only) index; caches the sorted ids that filtered scans use.

    ``excluded``: sorted unique ids never returned (the tombstones of a segment); searches leave
    them out with an ID selector, so the result is the top-k of the other vectors, exactly for
    Flat. use_gpu: None = ``gpu_search_enabled()``; unfiltered searches then run on a GPU copy.
    """

    def __init__(self, index, *, excluded: np.ndarray | None = None, use_gpu: bool | None = None) -> None:
        self.index = index
        self._sorted_ids: np.ndarray | None = None
        self.excluded = np.zeros(0, np.int64) if excluded is None else np.asarray(excluded, np.int64)
        self._not_excluded = None
        if len(self.excluded):
            inner = _faiss().IDSelectorBatch(self.excluded)  # tombstones are few; a bitmap would span every id
            self._not_excluded = (_faiss().IDSelectorNot(inner), inner)  # the tuple keeps ``inner`` alive
        if use_gpu is None:
            use_gpu = gpu_search_enabled()
        # Searches with tombstones need an ID selector, which GPU indexes lack: those stay on the CPU.
        self.gpu_index = to_gpus(index) if use_gpu and index.ntotal and self._not_excluded is None else None

    @property
    def live_count(self) -> int:
        """Vectors that searches can return."""
        return int(self.index.ntotal) - len(self.excluded)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product -> (scores (Q, k') float32, ids (Q, k') int64), k' <= k; id -1 = empty slot.

        ``allowed_ids`` (unique object ids, none of them excluded) restricts the search to them;
        the result is the top-k among them. One query runs on one OpenMP thread (``one_thread``).
        """
        with one_thread(len(np.asarray(queries).reshape(-1, self.index.d))):
            return self.search_unguarded(queries, k, allowed_ids)

    def search_unguarded(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``search`` under the caller's OpenMP setting: a caller searching many indexes for one
        query enters ``one_thread`` once around them all."""
        index = self.index
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d)
        if self.live_count <= 0 or (allowed_ids is not None and len(allowed_ids) == 0):
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if allowed_ids is None:
            k = max(1, min(k, self.live_count))
            if self._not_excluded is None:
                on_gpu = self.gpu_index is not None and k <= GPU_MAX_K
                return (self.gpu_index if on_gpu else index).search(queries, k)
            return index.search(queries, k, params=self._params(self._not_excluded[0]))
        allowed_ids = np.sort(np.asarray(allowed_ids, dtype=np.int64))  # np.unique costs 10x more here
        k = max(1, min(k, len(allowed_ids)))
        if len(allowed_ids) <= SCAN_MAX_SELECTED:
            return self._scan(queries, k, allowed_ids)
        selector = _selector(allowed_ids)
        return index.search(queries, k, params=self._params(selector))

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every live vector with inner product >= ``threshold`` with each query (IVF: in the lists
        it scans) -> FAISS's (lims (Q+1,), scores, ids): query i's results are [lims[i]:lims[i+1]]."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.index.d)
        if self.live_count <= 0:
            return np.zeros(len(queries) + 1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        params = None if self._not_excluded is None else self._params(self._not_excluded[0])
        return self.index.range_search(queries, float(threshold), params=params)

    def _params(self, selector):
        faiss = _faiss()
        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=inner.nprobe)
        return faiss.SearchParameters(sel=selector)  # IDMap2 translates it to internal ids

    def _scan(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray):
        """Score every allowed vector, reconstructed from the index (exact for Flat and SQfp16)."""
        present = allowed_ids[np.isin(allowed_ids, self._ids())]
        if len(present) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        vectors = self.index.reconstruct_batch(present)  # (S, D)
        scores = queries @ vectors.T  # (Q, S)
        k = min(k, len(present))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, axis=1).astype(np.float32), present[np.take_along_axis(top, order, axis=1)]

    def _ids(self) -> np.ndarray:
        """Sorted ids that searches can return (excluded ones left out)."""
        if self._sorted_ids is None:
            ids = np.sort(all_ids(self.index))
            self._sorted_ids = ids[~np.isin(ids, self.excluded)] if len(self.excluded) else ids
        return self._sorted_ids
