"""ANN benchmark: objsearch's automatic index choice vs exact FAISS vs LanceDB IVF_PQ, in one run.

    python -m benchmarks.ann [--sizes 100000 1000000] [--queries 200]
    python -m benchmarks.ann --real runs/tiny/final [--synthetic runs/synthetic]

Data: random-but-clustered unit vectors (``--clusters`` Gaussian clusters, per-dimension noise
``--noise``), rounded to float16 as objsearch stores them; queries are fresh draws from the same
distribution. Recall@10 is measured against exact inner-product search (FAISS knn), latency is
one query at a time in-process (the way a user's query runs), after a warm-up.
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
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from objsearch.store import vectors

K = 10


def clustered_vectors(n: int, dim: int, clusters: int, noise: float, seed: int) -> np.ndarray:
    """(n, dim) float32 unit vectors around ``clusters`` shared centres, float16-rounded."""
    centres = np.random.default_rng(12345).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        chunk = centres[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim)).astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + m] = chunk.astype(np.float16)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / K (the faiss.contrib knn_intersection_measure idea)."""
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


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


def row(name, build_s, size_bytes, n, found, truth, latencies) -> dict:
    return {
        "system": name, "build_s": build_s, "bytes_per_object": size_bytes / n, "recall@10": recall_at_k(found, truth),
        "p50_ms": statistics.median(latencies), "p99_ms": float(np.percentile(latencies, 99)),
    }


def bench_faiss(name, index_type, ids, data, queries, truth, work: Path, query_limit=None) -> dict:
    t0 = time.perf_counter()
    index = vectors.build(ids, data, index_type)
    build_s = time.perf_counter() - t0
    path = work / f"{name}.faiss"
    vectors.write(index, path)
    searcher = vectors.Searcher(index)
    qs = queries[:query_limit] if query_limit else queries
    found, lat = timed_queries(lambda q: searcher.search(q[None], K)[1][0], qs)
    return row(f"{name} ({index_type})", build_s, path.stat().st_size, len(ids), found, truth[: len(qs)], lat)


def bench_lancedb(ids, data, queries, truth, work: Path, settings=((20, 10), (50, 50))) -> list[dict]:
    """One IVF_PQ index (sqrt(n) partitions, dim/8 sub-vectors), searched with each (nprobes, refine_factor)."""
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfPq

    n, dim = data.shape
    db = lancedb.connect(str(work / "lancedb"))
    table = db.create_table(
        "objects",
        pa.table({"id": pa.array(ids), "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), dim)}),
        mode="overwrite",
    )
    t0 = time.perf_counter()
    table.create_index("vector", config=IvfPq(distance_type="dot", num_partitions=max(1, int(np.sqrt(n))), num_sub_vectors=dim // 8))
    build_s = time.perf_counter() - t0

    rows = []
    for nprobes, refine in settings:
        def search(q, nprobes=nprobes, refine=refine):
            result = table.search(q).distance_type("dot").nprobes(nprobes).refine_factor(refine).limit(K).select(["id"]).to_arrow()
            return result.column("id").to_numpy()

        found, lat = timed_queries(search, queries)
        rows.append(row(f"LanceDB IVF_PQ (nprobes {nprobes}, refine {refine})", build_s, dir_bytes(work / "lancedb"), n, found, truth, lat))
    return rows


def real_embeddings(checkpoint: Path, synthetic: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(objects (N, E), text queries (T, E), held-out object queries (H, E)) float16-rounded, from
    an ObjEmbed checkpoint over every image of a synthetic set; H = min(100, N / 10)."""
    import json

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


def real_benchmark(checkpoint: Path, synthetic: Path, use_lancedb: bool) -> None:
    import faiss

    data, texts, held_out = real_embeddings(checkpoint, synthetic)
    n, dim = data.shape
    ids = np.arange(n, dtype=np.int64) * 3 + 11
    work = Path(tempfile.mkdtemp(prefix="objsearch-ann-real-"))
    try:
        for kind, queries in (("text queries", texts), ("object queries", held_out)):
            _, positions = faiss.knn(queries, data, K, metric=faiss.METRIC_INNER_PRODUCT)
            truth = ids[positions]
            rows = [bench_faiss("exact FAISS", vectors.DEFAULT_INDEX_TYPE, ids, data, queries, truth, work),
                    bench_faiss("objsearch auto", vectors.choose_index_type(n, dim), ids, data, queries, truth, work),
                    bench_faiss("objsearch IVF", vectors.ivf_index_types(n, dim)[0], ids, data, queries, truth, work)]
            if use_lancedb:
                rows += bench_lancedb(ids, data, queries, truth, work)
            print_table(f"{n:,} real object embeddings ({checkpoint}), {dim}-d, {len(queries)} {kind}", rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print("| system | recall@10 | p50 ms | p99 ms | build s | bytes/object |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['build_s']:.1f} | {r['bytes_per_object']:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.8)
    parser.add_argument("--no-lancedb", action="store_true")
    parser.add_argument("--real", type=Path, help="ObjEmbed checkpoint: benchmark its real object embeddings instead")
    parser.add_argument("--synthetic", type=Path, default=Path("runs/synthetic"), help="synthetic set for --real")
    args = parser.parse_args()
    if args.real:
        real_benchmark(args.real, args.synthetic, not args.no_lancedb)
        return
    import faiss

    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="objsearch-ann-"))
        try:
            data = clustered_vectors(n, args.dim, args.clusters, args.noise, seed=1)
            queries = clustered_vectors(args.queries, args.dim, args.clusters, args.noise, seed=2)
            ids = np.arange(n, dtype=np.int64) * 3 + 11  # object ids are not positions
            _, positions = faiss.knn(queries, data, K, metric=faiss.METRIC_INNER_PRODUCT)
            truth = ids[positions]
            rows = [
                bench_faiss("objsearch auto", vectors.choose_index_type(n, args.dim), ids, data, queries, truth, work),
                bench_faiss("exact FAISS", vectors.DEFAULT_INDEX_TYPE, ids, data, queries, truth, work, query_limit=50),
            ]
            if not args.no_lancedb:
                rows += bench_lancedb(ids, data, queries, truth, work)
            print_table(f"{n:,} vectors, {args.dim}-d, {args.clusters} clusters, noise {args.noise}, {args.queries} queries (exact: 50)", rows)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
