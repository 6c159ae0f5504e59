"""Load on a warm `objsearch serve`: requests/s, p50 and p99 latency and errors for 1, 4 and 16
concurrent clients, then the same while another process commits into the index.

    python -m benchmarks.serve_load [--objects 100000 1000000] [--seconds 15] [--clients 1 4 16]

For each size, an index of clustered synthetic vectors is built as ``benchmarks.filtered`` builds
them, but under the bundled embedder's identity, so the server loads the real text encoder and a
text query costs what it costs a user (encode the text, search, fetch the rows, JSON). Clients are
threads of this process, each with its own keep-alive connection, sending `GET /api/v1/search?text=`
with k=10. The HTTP overhead is the ratio of the one-client HTTP p50 to the in-process p50 of
``Index.search_embedding`` (and of ``Index.search_text``), measured in the same run.

Clients, server and the committing process share this machine's cores: figures at 16 clients
measure the machine saturated, not the server alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from benchmarks.ann import clustered_vectors
from benchmarks.provenance import commit, write_result

QUERIES = ["a dog", "red umbrella", "a person on a bicycle", "white horse", "a cup of coffee", "cat on a sofa",
           "yellow car", "a bird in a tree", "laptop", "a boat on the water", "green apple", "a man in a blue jacket",
           "traffic light", "pizza", "sheep in a field", "a child with a kite"]
LABELS = ["person", "dog", "cat", "car", "bicycle", "cup", "horse", "bird", "boat", "chair"]
OBJECTS_PER_IMAGE = 6
COMMIT_IMAGES = 64  # the indexer's cadence


def bundled_info():
    from objsearch.embedders.base import load_embedder
    from objsearch.store.manifest import EmbedderInfo

    embedder = load_embedder("bundled")
    return embedder, EmbedderInfo.of(embedder)


def add_images(writer, rng, first_image: int, images: int, dim: int) -> None:
    """Stage ``images`` synthetic images of OBJECTS_PER_IMAGE objects (clustered vectors)."""
    from objsearch.embedders.base import Detections
    from objsearch.store.commit import ImageRecord

    vectors = clustered_vectors(images * OBJECTS_PER_IMAGE, dim, 1000, 0.8, seed=int(rng.integers(1 << 30)))
    labels = [LABELS[i] for i in rng.integers(len(LABELS), size=images * OBJECTS_PER_IMAGE)]
    boxes = np.tile([10, 10, 200, 150], (OBJECTS_PER_IMAGE, 1)).astype(np.float32)
    for number, image in enumerate(range(first_image, first_image + images)):
        part = slice(number * OBJECTS_PER_IMAGE, (number + 1) * OBJECTS_PER_IMAGE)
        writer.add_image(ImageRecord(f"/synthetic/{image:08d}.jpg", 1, 1, "0", 640, 480),
                         Detections(boxes, np.ones(OBJECTS_PER_IMAGE), labels[part], vectors[part]))


def build(root: Path, objects: int, info) -> float:
    from objsearch.store.commit import IndexWriter

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with IndexWriter(root, info) as writer:
        per_commit = 200_000 // OBJECTS_PER_IMAGE
        for first in range(0, objects // OBJECTS_PER_IMAGE, per_commit):
            add_images(writer, rng, first, min(per_commit, objects // OBJECTS_PER_IMAGE - first), info.embed_dim)
            writer.commit()
    return time.perf_counter() - started


def commit_forever(root: Path, every_s: float, stop_after_s: float) -> None:
    """The committing process: COMMIT_IMAGES new images every ``every_s`` seconds; prints the count."""
    from objsearch.store.commit import IndexWriter
    from objsearch.store.manifest import read_manifest

    manifest = read_manifest(root)
    rng = np.random.default_rng(1)
    first = 10**7
    commits = 0
    deadline = time.monotonic() + stop_after_s
    with IndexWriter(root, manifest.embedder) as writer:
        while time.monotonic() < deadline:
            tick = time.monotonic()
            add_images(writer, rng, first, COMMIT_IMAGES, manifest.embedder.embed_dim)
            writer.commit()
            first += COMMIT_IMAGES
            commits += 1
            time.sleep(max(0.0, every_s - (time.monotonic() - tick)))
    print(json.dumps({"commits": commits}))


def in_process(root: Path, embedder, repeats: int = 5) -> dict:
    from objsearch.search import open_index

    with open_index(root, model=embedder) as index:
        embeddings = embedder.embed_texts(QUERIES)
        index.search_embedding(embeddings[0], 10)
        index.search_text(QUERIES[0], 10)
        by_embedding, by_text = [], []
        for _ in range(repeats):
            for text, embedding in zip(QUERIES, embeddings):
                t0 = time.perf_counter()
                index.search_embedding(embedding, 10)
                by_embedding.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                index.search_text(text, 10)
                by_text.append((time.perf_counter() - t0) * 1e3)
    return {"search_embedding_p50_ms": statistics.median(by_embedding), "search_text_p50_ms": statistics.median(by_text)}


class Server:
    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen([sys.executable, "-m", "objsearch", "serve", "--index", str(root), "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.perf_counter()
        while True:
            try:
                status, _ = request(http.client.HTTPConnection("127.0.0.1", self.port, timeout=5), "/api/v1/info")
                if status == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.perf_counter() - started > 300:
                raise RuntimeError(f"the server did not start: {self.process.stderr.read()[-2000:]}")
            time.sleep(0.2)
        self.start_s = time.perf_counter() - started

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)


def request(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def load(port: int, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad = [], []
        i = number
        while time.monotonic() < deadline:
            path = "/api/v1/search?" + urllib.parse.urlencode({"text": QUERIES[i % len(QUERIES)], "k": 10})
            i += clients
            t0 = time.perf_counter()
            try:
                status, body = request(connection, path)
                if status != 200:
                    bad.append(f"{status} {body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                bad.append(repr(exc))
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append((time.perf_counter() - t0) * 1e3)
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "errors": len(errors), "first_errors": errors[:5]}


def run_size(objects: int, args, embedder, info) -> dict:
    work = Path(tempfile.mkdtemp(prefix="objsearch-serve-load-", dir=args.work))
    try:
        root = work / "idx"
        build_s = build(root, objects, info)
        result: dict = {"objects": objects, "build_s": build_s}
        result.update(in_process(root, embedder))
        server = Server(root)
        result["server_start_s"] = server.start_s
        try:
            request(http.client.HTTPConnection("127.0.0.1", server.port), "/api/v1/search?text=warm")
            result["load"] = [load(server.port, clients, args.seconds) for clients in args.clients]
            writer = subprocess.Popen([sys.executable, "-m", "benchmarks.serve_load", "--commit-into", str(root),
                                       "--commit-every", str(args.commit_every), "--seconds", str(args.seconds * len(args.clients) + 5)],
                                      stdout=subprocess.PIPE, text=True)
            time.sleep(2)  # the writer has opened the index and is committing
            result["load_while_committing"] = [load(server.port, clients, args.seconds) for clients in args.clients]
            output, _ = writer.communicate(timeout=args.seconds * len(args.clients) + 120)
            result["commits_during_load"] = json.loads(output.strip().splitlines()[-1])["commits"]
            status, body = request(http.client.HTTPConnection("127.0.0.1", server.port), "/api/v1/info")
            result["generation_served_at_end"] = json.loads(body)["generation"]
        finally:
            result["server_exit_code"] = server.stop()
        one = next(row for row in result["load"] if row["clients"] == 1) if 1 in args.clients else None
        if one:
            result["http_p50_over_search_embedding_p50"] = one["p50_ms"] / result["search_embedding_p50_ms"]
            result["http_p50_over_search_text_p50"] = one["p50_ms"] / result["search_text_p50_ms"]
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=15.0, help="load duration for each client count")
    parser.add_argument("--commit-every", type=float, default=1.0, help="seconds between the committing process's commits")
    parser.add_argument("--work", type=Path, help="folder for the temporary indexes (deleted after)")
    parser.add_argument("--out", type=Path, help="write the raw figures here (JSON)")
    parser.add_argument("--commit-into", type=Path, help=argparse.SUPPRESS)  # the committing process
    args = parser.parse_args()
    if args.commit_into:
        commit_forever(args.commit_into, args.commit_every, args.seconds)
        return
    code = commit()
    embedder, info = bundled_info()
    sizes = [run_size(objects, args, embedder, info) for objects in args.objects]
    for size in sizes:
        print(f"\n{size['objects']:,} objects: in-process search_embedding p50 {size['search_embedding_p50_ms']:.1f} ms, "
              f"search_text p50 {size['search_text_p50_ms']:.1f} ms; server start {size['server_start_s']:.1f} s")
        print("| clients | while committing | requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
        for key, committing in (("load", "no"), ("load_while_committing", "yes")):
            for row in size[key]:
                print(f"| {row['clients']} | {committing} | {row['requests_per_s']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |")
        if "http_p50_over_search_embedding_p50" in size:
            print(f"HTTP p50 / in-process search_embedding p50: {size['http_p50_over_search_embedding_p50']:.2f}; "
                  f"/ search_text p50: {size['http_p50_over_search_text_p50']:.2f}; commits during load: {size['commits_during_load']}")
    if args.out:
        write_result(args.out, {"command": "python -m benchmarks.serve_load " + " ".join(sys.argv[1:]), "sizes": sizes}, code=code)


if __name__ == "__main__":
    main()
