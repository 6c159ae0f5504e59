"""Per-shard figures for a sharded index (the 1B-object design in docs/architecture.md), in one run.

    python -m benchmarks.sharded_index [--objects 2000000] [--shards 4] [--nlist 4096] [--codes PQ64]
                                       [--reranks 100 1000] [--queries 200] [--out FILE]

A collection too large for one machine's memory is stored as shards that share one trained
coarse quantizer and codec (``IVF{nlist},{codes}``: PQ64 = 64 bytes an object, SQ8 = one byte a
dimension; trained once on a sample), each
shard filled with its own objects. This benchmark builds such shards at a scale this machine
holds, on the weakly clustered 512-d vectors of ``benchmarks.ann`` (float16-rounded unit
vectors, 20,000 clusters, noise 1.2), and measures what the design's arithmetic needs:

- training (once) and adding (seconds per million objects), bytes per object on disk;
- one shard searched alone, one query at a time (one thread), p50 ms at each ``--nprobes``;
- the shards fanned out with FAISS ``IndexShards`` (one thread per shard; results merged into an
  exact top-k of the shards' answers) against the same objects in one index;
- the shards merged into one index whose inverted lists are one memory-mapped file
  (``faiss.contrib.ondisk.merge_ondisk``, FAISS's ``OnDiskInvertedLists``): merge time, p50;
- recall@10 against exact search, before and after re-ranking the top ``--reranks`` candidates
  with the stored float16 embeddings (what objsearch keeps in its objects shards).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.ann import K, clustered_chunks, exact_top, object_ids, recall_at_k, timed_queries
from benchmarks.provenance import commit, report

RESULTS = Path(__file__).parent / "results" / "sharded_index"


def _p50(latencies: list[float]) -> float:
    return round(statistics.median(latencies), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=2_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--codes", default="PQ64", help="FAISS codec after the IVF: PQ64, PQ128, SQ8, ...")
    parser.add_argument("--reranks", type=int, nargs="+", default=[100, 1000], help="candidates re-ranked exactly")
    parser.add_argument("--train", type=int, default=200_000, help="training sample")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--out", type=Path, default=None, help="default: results/sharded_index/<objects>_<shards>shards_<codes>.json")
    args = parser.parse_args()
    code = commit()

    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    faiss.omp_set_num_threads(1)  # a query runs on one thread, as objsearch's do
    stream = dict(n=args.objects, dim=args.dim, clusters=20_000, noise=1.2)
    data = np.concatenate([c.astype(np.float32) for c in clustered_chunks(**stream, seed=1)])
    ids = object_ids(0, args.objects)
    queries = np.concatenate([c.astype(np.float32) for c in clustered_chunks(**{**stream, "n": args.queries}, seed=99)])
    truth = exact_top(queries, clustered_chunks(**stream, seed=1))
    work = Path(tempfile.mkdtemp(prefix="objsearch-shards-"))
    result: dict = {"objects": args.objects, "shards": args.shards, "dim": args.dim, "index_type": f"IVF{args.nlist},{args.codes}",
                    "queries": args.queries, "data": "benchmarks.ann clustered_chunks: 20,000 clusters, noise 1.2, float16-rounded"}
    try:
        faiss.omp_set_num_threads(2)  # building uses the machine
        trained = faiss.index_factory(args.dim, f"IVF{args.nlist},{args.codes}", faiss.METRIC_INNER_PRODUCT)
        started = time.perf_counter()
        trained.train(data[: args.train])
        result["train_s"] = round(time.perf_counter() - started, 1)
        faiss.write_index(trained, str(work / "trained.index"))

        per_shard = args.objects // args.shards
        shards, add_s = [], 0.0
        for s in range(args.shards):
            shard = faiss.read_index(str(work / "trained.index"))
            rows = slice(s * per_shard, (s + 1) * per_shard if s < args.shards - 1 else args.objects)
            started = time.perf_counter()
            shard.add_with_ids(data[rows], ids[rows])
            add_s += time.perf_counter() - started
            faiss.write_index(shard, str(work / f"shard{s}.index"))
            shards.append(shard)
        shard_bytes = sum((work / f"shard{s}.index").stat().st_size for s in range(args.shards))
        result["add_s_per_million"] = round(add_s / args.objects * 1e6, 1)
        result["disk_bytes_per_object"] = round(shard_bytes / args.objects, 1)

        started = time.perf_counter()
        merged = faiss.read_index(str(work / "trained.index"))
        merge_ondisk(merged, [str(work / f"shard{s}.index") for s in range(args.shards)], str(work / "merged.ivfdata"))
        result["merge_ondisk_s"] = round(time.perf_counter() - started, 1)
        faiss.write_index(merged, str(work / "merged.index"))
        # OnDiskInvertedLists map their .ivfdata file themselves; IO_FLAG_MMAP on top crashes FAISS 1.15 at search.
        ondisk = faiss.read_index(str(work / "merged.index"))
        result["ondisk_lists_bytes_per_object"] = round((work / "merged.ivfdata").stat().st_size / args.objects, 1)

        fanout = faiss.IndexShards(args.dim, True, False)  # threaded; ids are the objects' own
        for shard in shards:
            fanout.add_shard(shard)

        faiss.omp_set_num_threads(1)
        rows = []
        for nprobe in args.nprobes:
            for index in (*shards, merged, ondisk):
                faiss.extract_index_ivf(index).nprobe = nprobe
            one_shard_ids, one_shard = timed_queries(lambda q: shards[0].search(q[None], K)[1][0], queries)
            fanout_ids, fanned = timed_queries(lambda q: fanout.search(q[None], K)[1][0], queries)
            ondisk_ids, on_disk = timed_queries(lambda q: ondisk.search(q[None], K)[1][0], queries)
            _, candidates = ondisk.search(queries, max(args.reranks))
            rows.append({
                "nprobe": nprobe,
                "one_shard_p50_ms": _p50(one_shard), "one_shard_objects": per_shard,
                "fanout_p50_ms": _p50(fanned), "fanout_recall@10": round(recall_at_k(fanout_ids, truth), 4),
                "ondisk_merged_p50_ms": _p50(on_disk), "ondisk_recall@10": round(recall_at_k(ondisk_ids, truth), 4),
                "same_top10_fanout_vs_merged": float(np.mean(np.all(np.sort(fanout_ids, 1) == np.sort(ondisk_ids, 1), axis=1))),
                **{f"rerank_top{n}_float16_recall@10": round(recall_at_k(_rerank(queries, candidates[:, :n], data, ids), truth), 4)
                   for n in args.reranks},
            })
            print(json.dumps(rows[-1]))
        result["rows"] = rows
        report(args.out or RESULTS / f"{args.objects // 1_000_000}M_{args.shards}shards_{args.codes}.json", result, code=code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rerank(queries: np.ndarray, candidates: np.ndarray, data: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The top K of each query's candidates by exact inner product with the stored vectors."""
    out = []
    for query, row in zip(queries, candidates):
        row = row[row >= 0]
        positions = np.searchsorted(ids, row)  # ids are sorted (benchmarks.ann.object_ids)
        order = np.argsort(-(data[positions] @ query), kind="stable")[:K]
        out.append(np.pad(row[order], (0, K - len(order)), constant_values=-1))
    return np.array(out)


if __name__ == "__main__":
    main()
