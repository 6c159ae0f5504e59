"""Indexing on Ray Data: decode in CPU tasks, embed in a pool of model actors, commit here.

The driver (the process running ``objsearch index --ray``, which holds the index's writer lock)
plans the work as a local run does and hands the pending files to Ray Data: ``_decode_batch`` reads
and decodes them in CPU tasks with the same safe decoding (``decode.load_file``); a pool of
``_EmbedParts`` actors, each loading the model once (one GPU each where the cluster has GPUs), turns
each batch into one part in the index's staging folder (``parts``) and returns one small row per
file: its part, or why its batch failed. The driver commits parts as they arrive
(``staged.PartCommitter``, every ``commit_every`` images).

What happens on failure:
- a worker process or a node is lost: Ray restarts the actor and reruns its unfinished batches
  (up to BATCH_ATTEMPTS times; a batch that had written its part before dying writes a second
  one, and the driver takes each file once); a batch given up on (a file that crashes the decoder
  every time, say) is dropped and its files are reported as not indexed, for the next run;
- the model raises on a batch: its files are tried one by one; those it fails on come back as
  failed, are reported and not recorded, and the next run embeds them again;
- the driver is killed (its actors die with it): parts written but not committed stay in staging,
  and the next run (on Ray or not) commits them without embedding them again, then does the rest.

Every node must see the photos, the index folder (its staging folder) and the model at the same
paths, and have objsearch installed (``pip install 'objsearch[ray]'``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.decode import DecodeResult, load_file
from indexer.discover import FileStat
from indexer.parts import write_part
from indexer.staged import PartCommitter
from indexer.work import embed_decoded, image_record
from objsearch.embedders.base import load_embedder
from objsearch.embedders.batch_size import DEFAULT_BATCH_SIZE, choose_batch_size
from objsearch.errors import ObjsearchError, first_line
from objsearch.image_decode import DecodedImage
from objsearch.store.manifest import EmbedderInfo, check_same_model

logger = logging.getLogger(__name__)

CPUS_PER_ACTOR = 4  # model actors without GPUs: threads per actor (one CPU is always left for decoding)
ACTOR_START_TIMEOUT_S = 600  # model actors that cannot start (no node fits them) end the run then
BATCH_ATTEMPTS = 3  # a batch whose actor dies this many times (a file that crashes the decoder, say) is given up
GPU_FILES_PER_PART = 64  # files per batch (= per part) when the actors have GPUs; CPU: DEFAULT_BATCH_SIZE


def index_on_ray(address: str, work: list[FileStat], committer: PartCommitter, staging: Path,
                 embedder: EmbedderInfo, options) -> None:
    """Decode and embed ``work`` on the Ray cluster at ``address`` ("local": start one on this
    machine; "auto": the cluster this machine is part of; or "host:port" / "ray://host:port"),
    staging the results through ``committer``. ``options``: the run's ``IndexOptions``."""
    ray = _import_ray()
    started = time.perf_counter()
    owned = _connect(ray, address)
    _configure_data(ray)
    committer.summary.stage_seconds["ray_start"] += time.perf_counter() - started
    try:
        dataset = _dataset(ray, work, staging, embedder, options)
        _commit_as_they_come(ray, dataset, committer, staging, work, options.progress)
    finally:
        if owned:
            ray.shutdown()


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is a separate extra of Ray)
    except ImportError:
        raise ObjsearchError("--ray needs Ray Data: pip install 'objsearch[ray]'") from None
    return ray


def _connect(ray, address: str) -> bool:
    """Join or start a cluster; True when this call started the connection (and must end it)."""
    if ray.is_initialized():
        return False
    # Ray's C++ core logs, on every run, an error line about how Ray Data passes actor arguments
    # (ray-project/ray#53727): keep its log for fatal problems unless the user chose a level; our
    # failures reach the user as exceptions. The token notice is said on every start, with nothing to do.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address not in ("local", "auto"):
        _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ObjsearchError(f"cannot use the Ray cluster at {address!r}: {first_line(exc)}") from None
    return True


def _configure_data(ray) -> None:
    """Ray Data's settings for this run, whoever started Ray."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # this process shows one bar of its own
    context.raise_original_map_exception = True  # not a UserCodeException quoting the whole batch
    context.max_errored_blocks = -1  # a batch given up on is dropped: its files are reported, redone next run
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S  # actors that cannot be placed end the run
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # execution plans; errors, which reach the user as ours


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ObjsearchError unless something listens at ``address`` ("host:port" or "ray://host:port"):
    Ray itself keeps retrying an address where nothing answers, for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ObjsearchError(f"--ray wants 'local', 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ObjsearchError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _plan_actors(ray, options) -> tuple[int, dict, int]:
    """(actors, Ray resources per actor, files per batch) for the cluster's nodes. Without GPUs an
    actor takes up to CPUS_PER_ACTOR CPUs, no more than the smallest node can give while keeping
    one for decoding, and each node gets as many as fit."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus = sum(int(r.get("GPU", 0)) for r in nodes)
    if gpus:
        return options.ray_actors or gpus, {"num_gpus": 1}, options.batch_size or GPU_FILES_PER_PART
    cpus = [max(1, int(r.get("CPU", 1))) for r in nodes] or [1]
    per_actor = max(1, min(CPUS_PER_ACTOR, min(cpus) - 1))
    actors = options.ray_actors or sum(max(1, (c - 1) // per_actor) for c in cpus)
    return actors, {"num_cpus": per_actor}, options.batch_size or DEFAULT_BATCH_SIZE


def _dataset(ray, work: list[FileStat], staging: Path, embedder: EmbedderInfo, options):
    actors, actor_resources, files_per_batch = _plan_actors(ray, options)
    logger.info("Ray: %d model actors (%s each), %d files per batch", actors, actor_resources, files_per_batch)
    items = [{"path": f.path, "fs_path": os.fsencode(f.fs_path), "file_size": f.file_size, "mtime_ns": f.mtime_ns} for f in work]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / files_per_batch)))
    dataset = dataset.map_batches(_decode_batch, fn_kwargs={"max_pixels": options.max_pixels, "max_side": options.max_side},
                                  batch_size=files_per_batch, batch_format="numpy", num_cpus=1)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote arguments (to go in 2.64) with no other way yet to bound
        # the retries of an actor pool's tasks (-1, for ever, by default); the extra pins Ray < 2.64.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return dataset.map_batches(
            _EmbedParts, fn_constructor_kwargs={"embedder": embedder.__dict__, "staging": str(staging)},
            batch_size=files_per_batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            max_task_retries=BATCH_ATTEMPTS - 1, **actor_resources)


def _commit_as_they_come(ray, dataset, committer: PartCommitter, staging: Path, work: list[FileStat], progress: bool) -> None:
    """Commit each part as its rows come back; files that never come back (their batch was given
    up after BATCH_ATTEMPTS) are reported as not indexed."""
    bar = tqdm(total=len(work), unit="img", desc="indexing on Ray", disable=not progress)
    seen_parts: set[str] = set()
    returned: set[str] = set()
    try:
        for row in dataset.iter_rows():
            bar.update(1)
            returned.add(row["path"])
            if row["failure"]:
                committer.fail(row["path"], row["failure"])
            elif row["part"] not in seen_parts:
                seen_parts.add(row["part"])
                committer.add_part(staging / row["part"])
    except ray.exceptions.RayError as exc:
        raise ObjsearchError(f"the Ray run failed: {_reason(exc)}") from None
    finally:
        bar.close()
    for file in work:
        if file.path not in returned:
            committer.fail(file.path, f"its batch failed {BATCH_ATTEMPTS} times on the Ray workers (see Ray's logs)")


def _reason(exc: BaseException) -> str:
    """One line on why a Ray error happened: the exception it wraps, or the last line of its text
    (an actor that died in its constructor carries that exception's traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return _reason(cause)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _decode_batch(batch: dict[str, np.ndarray], *, max_pixels: int, max_side: int) -> dict[str, list]:
    """Ray task: read, hash and decode a batch of files (``load_file``); pixels travel as bytes."""
    out: dict[str, list] = {name: [] for name in ("path", "file_size", "mtime_ns", "content_hash", "error",
                                                  "width", "height", "pixels", "pixel_shape")}
    for path, fs_path, size, mtime in zip(batch["path"], batch["fs_path"], batch["file_size"], batch["mtime_ns"]):
        result = load_file(FileStat(str(path), int(size), int(mtime), os.fsdecode(bytes(fs_path))), max_pixels, max_side)
        image = result.image
        out["path"].append(result.file.path)
        out["file_size"].append(result.file.file_size)
        out["mtime_ns"].append(result.file.mtime_ns)
        out["content_hash"].append(result.content_hash)
        out["error"].append(result.error or "")
        out["width"].append(image.width if image else 0)
        out["height"].append(image.height if image else 0)
        out["pixels"].append(image.pixels.tobytes() if image else b"")
        out["pixel_shape"].append(list(image.pixels.shape[:2]) if image else [0, 0])
    return out


def _decoded(batch: dict[str, np.ndarray], i: int) -> DecodeResult:
    """Row ``i`` of a ``_decode_batch`` result, back as a ``DecodeResult``."""
    file = FileStat(str(batch["path"][i]), int(batch["file_size"][i]), int(batch["mtime_ns"][i]))
    error = str(batch["error"][i]) or None
    image = None
    if error is None:
        height, width = (int(v) for v in batch["pixel_shape"][i])
        pixels = np.frombuffer(batch["pixels"][i], np.uint8).reshape(height, width, 3).copy()  # writable, as decoding gives
        image = DecodedImage(file.path, pixels, int(batch["width"][i]), int(batch["height"][i]))
    return DecodeResult(file, str(batch["content_hash"][i]), image, error)


class _EmbedParts:
    """Ray actor: loads the model once; each call embeds a batch and writes it as one part."""

    def __init__(self, embedder: dict, staging: str) -> None:
        expected = EmbedderInfo(**embedder)
        self.embedder = load_embedder(expected.source or expected.name)
        self.info = EmbedderInfo.of(self.embedder, source=expected.source)
        check_same_model(expected, self.info)  # the same model on every node
        self.forward_batch = choose_batch_size(self.embedder)
        self.staging = Path(staging)
        if caveat := getattr(self.embedder, "indexing_caveat", None):
            logger.warning("%s", caveat)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        results = [_decoded(batch, i) for i in range(len(batch["path"]))]
        rows, failures = [], []
        try:
            found = []
            for start in range(0, len(results), self.forward_batch):
                found += embed_decoded(self.embedder, results[start:start + self.forward_batch])
            rows = list(zip(map(image_record, results), found))
        except Exception:  # find the file(s) the model fails on: the others are indexed
            logger.exception("the model failed on a batch of %d files; trying them one by one", len(results))
            for result in results:
                try:
                    rows.append((image_record(result), embed_decoded(self.embedder, [result])[0]))
                except Exception as exc:
                    failures.append((result.file.path, f"the model failed on it: {first_line(exc)}"))
        part = ""
        if rows:
            try:
                part = write_part(self.staging, self.info, rows).name
            except OSError as exc:
                failures += [(record.path, f"cannot write its part in {self.staging}: {exc.strerror or exc}") for record, _ in rows]
                rows = []
        paths = [record.path for record, _ in rows] + [path for path, _ in failures]
        return {"path": paths, "part": [part] * len(rows) + [""] * len(failures), "failure": [""] * len(rows) + [reason for _, reason in failures]}
