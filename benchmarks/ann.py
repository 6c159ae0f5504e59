"""ANN benchmark: objsearch's automatic index choice vs other FAISS index types, exact FAISS and
LanceDB (IVF_PQ, IVF_HNSW_SQ, IVF_HNSW_PQ), in one run.

    python -m benchmarks.ann [--sizes 100000 1000000] [--queries 200] [--out results.json]
    python -m benchmarks.ann --sizes 1000000 --clusters 20000 --noise 1.2      # weakly clustered
    python -m benchmarks.ann --sizes 1000000 --candidates "IVF4096,SQfp16@256,1024" --no-lancedb
    python -m benchmarks.ann --sizes 10000000 --chunked --max-memory 12GB --no-lancedb
    python -m benchmarks.ann --real runs/tiny/final [--synthetic runs/synthetic]

Data: random-but-clustered unit vectors (``--clusters`` Gaussian clusters, per-dimension noise
``--noise``), rounded to float16 as objsearch stores them; queries are fresh draws from the same
distribution. Recall@10 is measured against exact inner-product search (FAISS knn), latency is
one query at a time in-process through ``vectors.Searcher`` (the way a user's query runs: one
OpenMP thread), after a warm-up. Build time is training + adding (split in the table and JSON).

Rows: the automatic choice (``vectors.choose_index_type`` within ``--max-memory``; at each of
``--nprobes``, default ``vectors.tune``'s) searched plain, with 1% of the ids deleted
(tombstones: ``Searcher(excluded=...)``, an IDSelectorNot) and restricted to half of the ids (an
ID selector; recall against the exact top-10 of what is allowed); exact FAISS (50 queries);
``--candidates`` (FAISS factory strings, each built the way ``vectors.build`` does and searched
at every ``@nprobe``; the tombstone recall is measured at the first nprobe, or the error FAISS
raises); LanceDB's index types (``--lancedb``), each searched with a few settings.

``--chunked``: for collections that do not fit in memory as float32 (10M x 512 is 20 GB): the
data are generated 100k rows at a time (twice: ground truth, then adds), the ground truth is an
exact search chunk by chunk merged into a top-100, the index is trained on the first rows (the
rows are independent draws, so they are a random sample) and filled chunk by chunk; the peak
resident memory (ru_maxrss) is reported. No exact-FAISS, candidate nor LanceDB rows.

``--out``: the rows, the command line, the git commit and the date as JSON.
Needs the `bench` extra for LanceDB: pip install -e '.[bench]'.

``--real CHECKPOINT``: instead of random vectors, the object embeddings an ObjEmbed checkpoint
stores for every image of the synthetic set (all splits, detection threshold 0.05), queried with
the text embeddings of every "colour shape" phrase (text-to-object, the usual query, which lies
off the object distribution: the modality gap) and with 100 held-out object embeddings
(object-to-object). Rows: exact FAISS, the automatic choice at this size, and the IVF index the
automatic choice takes for larger collections, built on these vectors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import provenance
from objsearch.cli import parse_byte_size
from objsearch.store import vectors

K = 10
TRUTH_K = 100  # exact neighbours kept per query: the tombstone and filter truths are taken from them
CHUNK = 100_000
EXACT_QUERIES = 50


def clustered_chunks(n: int, dim: int, clusters: int, noise: float, seed: int, chunk: int = CHUNK):
    """(m, dim) float16 chunks of unit vectors around ``clusters`` shared centres, in order: the
    same stream whatever is done with it, so it can be generated twice instead of kept."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        part = centres[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim)).astype(np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        yield part.astype(np.float16)


def clustered_vectors(n: int, dim: int, clusters: int, noise: float, seed: int) -> np.ndarray:
    """(n, dim) float32 unit vectors around ``clusters`` shared centres, float16-rounded."""
    out = np.empty((n, dim), np.float32)
    start = 0
    for part in clustered_chunks(n, dim, clusters, noise, seed):
        out[start : start + len(part)] = part
        start += len(part)
    return out


def object_ids(start: int, stop: int) -> np.ndarray:
    return np.arange(start, stop, dtype=np.int64) * 3 + 11  # object ids are not positions


def exact_top(queries: np.ndarray, chunks, k: int = TRUTH_K) -> np.ndarray:
    """Ids of the exact top-k by inner product over a stream of chunks (positions -> object ids)."""
    import faiss

    best_d = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    start = 0
    for part in chunks:
        d, i = faiss.knn(queries, np.ascontiguousarray(part, dtype=np.float32), min(k, len(part)), metric=faiss.METRIC_INNER_PRODUCT)
        best_d = np.concatenate([best_d, d], axis=1)
        best_i = np.concatenate([best_i, object_ids(start, start + len(part))[i]], axis=1)
        order = np.argsort(-best_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_i, order, 1)
        start += len(part)
    return best_i


def allowed_truth(truth: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The top-K among sorted ``allowed`` ids, from the exact top-TRUTH_K."""
    out = []
    for row in truth:
        # membership by binary search: np.isin sorts all of ``allowed`` again for every row
        # (5M ids at 10M objects: ~3 s a row, which made the 10M run's filter row take 10 minutes)
        at = np.minimum(np.searchsorted(allowed, row), len(allowed) - 1)
        keep = row[allowed[at] == row][:K]
        if len(keep) < K:
            raise SystemExit(f"fewer than {K} allowed ids among the exact top-{TRUTH_K}: raise TRUTH_K")
        out.append(keep)
    return np.array(out)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / K (the faiss.contrib knn_intersection_measure idea)."""
    return float(np.mean([len(set(f[f >= 0]) & set(t[:K])) / K for f, t in zip(found, truth)]))


def timed_queries(search, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    search(queries[0])  # warm-up
    found, latencies = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = search(q)
        latencies.append((time.perf_counter() - t0) * 1e3)
        found.append(np.pad(ids[:K], (0, K - len(ids[:K])), constant_values=-1))
    return np.array(found), latencies


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def row(name, build_s, size_bytes, n, found, truth, latencies, **extra) -> dict:
    return {
        "system": name, "build_s": build_s, "bytes_per_object": size_bytes / n, "recall@10": recall_at_k(found, truth),
        "p50_ms": statistics.median(latencies), "p99_ms": float(np.percentile(latencies, 99)), "queries": len(found), **extra,
    }


def error_text(exc: Exception) -> str:
    """FAISS's or LanceDB's message without the C++ signature it starts with."""
    text = " ".join(str(exc).split())
    return text[text.find("Error: ") + 7 :] if "Error: " in text else text[:300]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def set_nprobe(index, nprobe: int | None) -> int | None:
    """nprobe on the IVF inside ``index`` (None: leave ``vectors.tune``'s default); returns it."""
    import faiss

    ivf = vectors.ivf_of(index)
    if ivf is None:
        return None
    if nprobe:
        ivf.nprobe = nprobe
    quantizer = faiss.downcast_index(ivf.quantizer)
    if hasattr(quantizer, "hnsw"):  # an HNSW coarse quantizer must look at least nprobe centroids deep
        quantizer.hnsw.efSearch = max(16, ivf.nprobe)
    return int(ivf.nprobe)


def build_timed(ids, data, index_type: str, *, seed: int = 0, refine_k: float = 10.0):
    """``vectors.build``, step by step, timed: (index, train_s, add_s)."""
    import faiss

    index = vectors.new_index(data.shape[1], index_type)
    t0 = time.perf_counter()
    if not index.is_trained:
        vectors.train_on_sample(index, data, index_type, seed=seed)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors.add_bulk(index, ids, data)
    add_s = time.perf_counter() - t0
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if isinstance(inner, faiss.IndexRefine):
        inner.k_factor = refine_k
    return index, train_s, add_s


def search_rows(label: str, index, index_type: str, nprobes, queries, truth, dead, half, *, build_s, train_s, add_s,
                size_bytes, n) -> list[dict]:
    """Rows for ``index`` searched at each nprobe: plain; at the first nprobe also with ``dead``
    ids excluded (when given) and restricted to ``half`` of the ids (when given)."""
    rows = []
    common = {"index_type": index_type, "train_s": train_s, "add_s": add_s}
    for i, nprobe in enumerate(nprobes):
        probe = set_nprobe(index, nprobe)
        suffix = f", nprobe {probe}" if probe else ""
        searcher = vectors.Searcher(index, use_gpu=False)
        found, lat = timed_queries(lambda q: searcher.search(q[None], K)[1][0], queries)
        rows.append(row(f"{label} ({index_type}{suffix})", build_s, size_bytes, n, found, truth, lat, nprobe=probe, **common))
        if i > 0:
            continue
        if dead is not None:
            try:
                gone = vectors.Searcher(index, excluded=dead, use_gpu=False)
                found, lat = timed_queries(lambda q: gone.search(q[None], K)[1][0], queries)
                alive_truth = allowed_truth(truth, np.setdiff1d(truth.ravel(), dead))
                r = row(f"{label} ({index_type}{suffix}), {len(dead) / n:.0%} deleted (IDSelectorNot)", build_s, size_bytes, n, found,
                        alive_truth, lat, nprobe=probe, **common)
                r["returned_deleted"] = int(np.isin(found, dead).sum())
                rows.append(r)
            except RuntimeError as exc:
                rows.append({"system": f"{label} ({index_type}{suffix}), deleted ids", "error": error_text(exc), **common})
        if half is not None:
            try:
                found, lat = timed_queries(lambda q: searcher.search(q[None], K, allowed_ids=half)[1][0], queries)
                r = row(f"{label} ({index_type}{suffix}), filter to {len(half) / n:.0%} (ID selector)", build_s, size_bytes, n, found,
                        allowed_truth(truth, half), lat, nprobe=probe, **common)
                r["returned_outside_filter"] = int((~np.isin(found[found >= 0], half)).sum())
                rows.append(r)
            except RuntimeError as exc:
                rows.append({"system": f"{label} ({index_type}{suffix}), filtered", "error": error_text(exc), **common})
    return rows


def bench_faiss(label, index_type, ids, data, queries, truth, work: Path, nprobes=(None,), *, dead=None, half=None,
                query_limit=None, refine_k=10.0) -> list[dict]:
    try:
        index, train_s, add_s = build_timed(ids, data, index_type, refine_k=refine_k)
    except RuntimeError as exc:
        return [{"system": f"{label} ({index_type})", "error": error_text(exc)}]
    path = work / "index.faiss"
    vectors.write(index, path)
    size = path.stat().st_size
    path.unlink()
    qs = queries[:query_limit] if query_limit else queries
    return search_rows(label, index, index_type, nprobes, qs, truth[: len(qs)], dead, half, build_s=train_s + add_s,
                       train_s=train_s, add_s=add_s, size_bytes=size, n=len(ids))


LANCEDB_KINDS = ("ivf_pq", "hnsw_sq", "hnsw_pq")


def bench_lancedb(kinds, ids, data, queries, truth, work: Path) -> list[dict]:
    """LanceDB index types on the same vectors (dot product), each searched with a few settings:
    IVF_PQ: sqrt(n) partitions, dim/8 8-bit sub-vectors, (nprobes, refine_factor) pairs;
    IVF_HNSW_SQ / IVF_HNSW_PQ: an HNSW graph per partition (n/50k partitions, 8-bit scalar codes or
    dim/16 8-bit PQ codes, LanceDB's default, as dim/8 took 2.5x longer to build; m 20,
    ef_construction 150), (nprobes, ef, refine_factor) triples, ef >= 10 x refine_factor (LanceDB
    asks ef >= k, and a refine factor multiplies k). Each index gets a fresh table; size: the
    table's directory (the float32 vectors, 4 bytes a dimension, plus the index; the index alone
    is ``index_bytes_per_object`` in the JSON)."""
    import lancedb
    import pyarrow as pa
    from lancedb.index import HnswPq, HnswSq, IvfPq

    n, dim = data.shape
    arrow = pa.table({"id": pa.array(ids), "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(data, np.float32).ravel()), dim)})
    hnsw_partitions = max(1, round(n / 50_000))
    configs = {
        "ivf_pq": ("LanceDB IVF_PQ", IvfPq(distance_type="dot", num_partitions=max(1, int(np.sqrt(n))), num_sub_vectors=dim // 8),
                   [(20, None, 10), (50, None, 50), (200, None, 50)]),
        "hnsw_sq": ("LanceDB IVF_HNSW_SQ", HnswSq(distance_type="dot", num_partitions=hnsw_partitions, m=20, ef_construction=150),
                    [(1, 100, None), (4, 100, None), (8, 300, 10)]),
        "hnsw_pq": ("LanceDB IVF_HNSW_PQ", HnswPq(distance_type="dot", num_partitions=hnsw_partitions, num_sub_vectors=dim // 16, m=20, ef_construction=150),
                    [(1, 100, 10), (4, 200, 10), (8, 500, 50)]),
    }
    rows = []
    for kind in kinds:
        name, config, settings = configs[kind]
        shutil.rmtree(work / "lancedb", ignore_errors=True)  # a fresh table for each index: sizes are its own
        table = lancedb.connect(str(work / "lancedb")).create_table("objects", arrow, mode="overwrite")
        data_bytes = dir_bytes(work / "lancedb")
        t0 = time.perf_counter()
        table.create_index("vector", config=config, replace=True)
        build_s = time.perf_counter() - t0
        size = dir_bytes(work / "lancedb")
        for nprobes, ef, refine in settings:
            def search(q, table=table, nprobes=nprobes, ef=ef, refine=refine):
                query = table.search(q).distance_type("dot").nprobes(nprobes).limit(K).select(["id"])
                if ef:
                    query = query.ef(ef)
                if refine:
                    query = query.refine_factor(refine)
                return query.to_arrow().column("id").to_numpy()

            setting = ", ".join(f"{k} {v}" for k, v in (("nprobes", nprobes), ("ef", ef), ("refine", refine)) if v)
            try:
                found, lat = timed_queries(search, queries)
            except RuntimeError as exc:
                rows.append({"system": f"{name} ({setting})", "error": error_text(exc), "index_type": kind})
                print_row(rows[-1])
                continue
            rows.append(row(f"{name} ({setting})", build_s, size, n, found, truth, lat, index_bytes_per_object=(size - data_bytes) / n,
                            index_type=kind, partitions=hnsw_partitions if kind != "ivf_pq" else int(np.sqrt(n))))
            print_row(rows[-1])
    shutil.rmtree(work / "lancedb", ignore_errors=True)
    return rows


def parse_candidate(text: str) -> tuple[str, list[int | None]]:
    """'IVF4096,SQfp16@256,1024' -> ('IVF4096,SQfp16', [256, 1024]); no '@': the default nprobe."""
    factory, _, probes = text.partition("@")
    return factory, ([int(p) for p in probes.split(",")] if probes else [None])


def synthetic_benchmark(args, n: int) -> list[dict]:
    dim = args.dim
    title = f"{n:,} vectors, {dim}-d, {args.clusters} clusters, noise {args.noise}, {args.queries} queries (exact FAISS: {EXACT_QUERIES})"
    queries = clustered_vectors(args.queries, dim, args.clusters, args.noise, seed=2)
    rng = np.random.default_rng(3)
    dead = np.sort(object_ids(0, n)[rng.choice(n, max(1, n // 100), replace=False)])  # 1% tombstones
    half = object_ids(0, n)[rng.random(n) < 0.5]  # a filter passing half of the objects
    index_type = vectors.choose_index_type(n, dim, args.max_memory)
    print(f"\n{title}: automatic choice {index_type}" + (f" within {args.max_memory:,} bytes" if args.max_memory else ""), flush=True)
    if args.chunked:
        return [chunked_auto(args, n, index_type, queries, dead, half)]
    work = Path(tempfile.mkdtemp(prefix="objsearch-ann-", dir=args.tmp))
    rows: list[dict] = []
    try:
        data = clustered_vectors(n, dim, args.clusters, args.noise, seed=1)
        ids = object_ids(0, n)
        truth = exact_top(queries, [data])
        print_header()
        runs = [("objsearch auto", index_type, args.nprobes or [None], {"dead": dead, "half": half}),
                ("exact FAISS", vectors.DEFAULT_INDEX_TYPE, [None], {"query_limit": EXACT_QUERIES})]
        runs += [("FAISS", *parse_candidate(c), {"dead": dead, "refine_k": args.refine_k}) for c in args.candidates]
        for label, factory, nprobes, options in runs:
            for r in bench_faiss(label, factory, ids, data, queries, truth, work, nprobes, **options):
                rows.append(r)
                print_row(r)
        if args.lancedb:
            rows += bench_lancedb(args.lancedb, ids, data, queries, truth, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(title, rows)
    return rows


def chunked_auto(args, n: int, index_type: str, queries, dead, half) -> dict:
    """The automatic choice built chunk by chunk from regenerated data; see the module docstring."""
    dim = args.dim

    def stream():
        return clustered_chunks(n, dim, args.clusters, args.noise, seed=1)

    rss_start = peak_rss_bytes()
    t0 = time.perf_counter()
    truth = exact_top(queries, stream())
    truth_s = time.perf_counter() - t0
    print(f"  ground truth: {truth_s:.0f} s, peak RSS {peak_rss_bytes() / 2**30:.2f} GiB", flush=True)
    index = vectors.new_index(dim, index_type)
    t0 = time.perf_counter()
    sample_size = vectors.training_sample_size(index_type, n)
    if not index.is_trained:
        parts, have = [], 0
        for part in stream():  # the stream's first rows: independent draws, so a random sample
            parts.append(part[: sample_size - have])
            have += len(parts[-1])
            if have >= sample_size:
                break
        sample = np.concatenate(parts)
        del parts
        vectors.train(index, sample)
        del sample
    train_s = time.perf_counter() - t0
    print(f"  trained on {sample_size:,} vectors: {train_s:.0f} s, peak RSS {peak_rss_bytes() / 2**30:.2f} GiB", flush=True)
    t0 = time.perf_counter()
    start = 0
    for part in stream():
        vectors.add_bulk(index, object_ids(start, start + len(part)), part)
        start += len(part)
        if start % (10 * CHUNK) == 0 or start == n:
            print(f"  added {start:,}: {time.perf_counter() - t0:.0f} s, peak RSS {peak_rss_bytes() / 2**30:.2f} GiB", flush=True)
    add_s = time.perf_counter() - t0
    ivf = vectors.ivf_of(index)
    code_bytes = index.ntotal * (ivf.code_size + 8) if ivf is not None else index.ntotal * 4 * dim
    rows = search_rows("objsearch auto", index, index_type, args.nprobes or [None], queries, truth, dead, half, build_s=train_s + add_s,
                       train_s=train_s, add_s=add_s, size_bytes=code_bytes, n=n)
    result = rows[0]
    result.update({
        "other_rows": rows[1:], "truth_s": truth_s, "peak_rss_bytes": peak_rss_bytes(), "rss_before_bytes": rss_start,
        "estimated_index_bytes": n * vectors.estimated_bytes_per_vector(index_type, dim), "code_and_id_bytes": code_bytes, "chunked": True,
    })
    print_header()
    for r in rows:
        print_row(r)
    print(f"  build {train_s + add_s:.0f} s (train {train_s:.0f} s, add {add_s:.0f} s); peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB "
          f"(estimate for the index {result['estimated_index_bytes'] / 2**30:.2f} GiB, codes + ids {code_bytes / 2**30:.2f} GiB)", flush=True)
    return result


def real_embeddings(checkpoint: Path, synthetic: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(objects (N, E), text queries (T, E), held-out object queries (H, E)) float16-rounded, from
    an ObjEmbed checkpoint over every image of a synthetic set; H = min(100, N / 10)."""
    from PIL import Image

    from objsearch.embedders import load_embedder

    embedder = load_embedder(str(checkpoint))
    embedder.score_threshold, embedder.with_captions, embedder.with_masks = 0.05, False, False
    objects, phrases = [], set()
    for split in ("train", "val", "test"):
        gt = json.loads((synthetic / "annotations" / f"instances_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in gt["categories"]}
        phrases |= {f"{a['colour']} {names[a['category_id']]}" for a in gt["annotations"] if "colour" in a}
        files = [synthetic / "images" / split / r["file_name"] for r in gt["images"]]
        for start in range(0, len(files), 16):
            pixels = [np.asarray(Image.open(f).convert("RGB")) for f in files[start : start + 16]]
            objects += [d.embeddings for d in embedder.detect(pixels)]
    data = np.concatenate(objects).astype(np.float16).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(data))
    held = min(100, len(data) // 10)
    held_out, data = data[order[:held]], data[np.sort(order[held:])]
    texts = embedder.embed_texts(sorted(phrases)).astype(np.float16).astype(np.float32)
    return data, texts, held_out


def real_benchmark(args) -> list[dict]:
    data, texts, held_out = real_embeddings(args.real, args.synthetic)
    n, dim = data.shape
    ids = object_ids(0, n)
    work = Path(tempfile.mkdtemp(prefix="objsearch-ann-real-", dir=args.tmp))
    rows = []
    try:
        for kind, queries in (("text queries", texts), ("object queries", held_out)):
            truth = exact_top(queries, [data], K)
            part = (bench_faiss("exact FAISS", vectors.DEFAULT_INDEX_TYPE, ids, data, queries, truth, work)
                    + bench_faiss("objsearch auto", vectors.choose_index_type(n, dim), ids, data, queries, truth, work)
                    + bench_faiss("objsearch IVF", vectors.ivf_index_types(n, dim)[0], ids, data, queries, truth, work))
            if args.lancedb:
                part += bench_lancedb(args.lancedb, ids, data, queries, truth, work)
            for r in part:
                r["queries_kind"] = kind
            print_table(f"{n:,} real object embeddings ({args.real}), {dim}-d, {len(queries)} {kind}", part)
            rows += part
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def print_header() -> None:
    print("| system | recall@10 | p50 ms | p99 ms | build s (train + add) | bytes/object |\n|---|---|---|---|---|---|", flush=True)


def print_row(r: dict) -> None:
    if "error" in r:
        print(f"| {r['system']} | error: {r['error']} | | | | |", flush=True)
        return
    build = f"{r['build_s']:.0f}" + (f" ({r['train_s']:.0f} + {r['add_s']:.0f})" if "train_s" in r else "")
    print(f"| {r['system']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {build} | {r['bytes_per_object']:.0f} |", flush=True)


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print_header()
    for r in rows:
        print_row(r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.8)
    parser.add_argument("--max-memory", type=parse_byte_size, default=None, help="memory budget for the automatic choice, e.g. 12GB")
    parser.add_argument("--nprobes", type=int, nargs="*", default=[], help="search the automatic choice at these nprobes (default: tune's)")
    parser.add_argument("--candidates", nargs="*", default=[], metavar="FACTORY[@NPROBE,...]",
                        help="more FAISS index types to build and search, e.g. 'IVF4096,SQfp16@256,1024'")
    parser.add_argument("--refine-k", type=float, default=10.0, help="k_factor of candidates with a refine stage")
    parser.add_argument("--lancedb", nargs="*", choices=LANCEDB_KINDS, default=list(LANCEDB_KINDS), help="LanceDB index types")
    parser.add_argument("--no-lancedb", action="store_const", const=[], dest="lancedb")
    parser.add_argument("--chunked", action="store_true", help="generate, search and build chunk by chunk (10M objects)")
    parser.add_argument("--tmp", type=Path, default=None, help="where temporary indexes go (default: the system's)")
    parser.add_argument("--out", type=Path, help="write the rows, the command line, the commit and the date here as JSON")
    parser.add_argument("--real", type=Path, help="ObjEmbed checkpoint: benchmark its real object embeddings instead")
    parser.add_argument("--synthetic", type=Path, default=Path("runs/synthetic"), help="synthetic set for --real")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    code = provenance.commit()  # at the start: the code that runs, whatever is committed meanwhile
    load_before = os.getloadavg()  # other work on the machine skews the timings: recorded
    if args.real:
        results = {"real": real_benchmark(args)}
    else:
        results = {str(n): synthetic_benchmark(args, n) for n in args.sizes}
    if args.out:
        import faiss

        try:
            import lancedb

            lancedb_version = lancedb.__version__
        except ImportError:
            lancedb_version = None
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": ["python", "-m", "benchmarks.ann", *sys.argv[1:]], "commit": code,
            "started": started, "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "faiss": faiss.__version__, "lancedb": lancedb_version,
                        "loadavg_1_5_15min_before": load_before, "loadavg_1_5_15min_after": os.getloadavg()},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rows": results,
        }, indent=1) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
