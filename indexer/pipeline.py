"""decode -> embed -> write: the indexing loop. Batched, resumable, with a progress bar.

Decoding runs in worker processes a bounded distance ahead of the model, so file I/O and
decoding overlap with inference and memory stays flat however large the collection. Work is
committed every ``commit_every`` images; a run that is killed loses at most that much work, and
the next run picks up exactly where the last commit left off.

A run first commits the parts (``parts``) that an earlier run or other processes finished and left
in the index's staging folder; with ``IndexOptions.ray`` the rest is decoded and embedded on Ray
(``ray_runner``), whose actors write parts, and this process commits them (``staged``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from indexer.decode import MAX_PIXELS, MAX_SIDE, DecodeResult, load_file
from indexer.discover import FileStat, IndexPlan, discover, plan
from indexer.parts import staging_dir
from indexer.staged import PartCommitter
from indexer.work import embed_decoded, image_record
from objsearch.embedders.base import DEFAULT_EMBEDDER, ObjectEmbedder, load_embedder
from objsearch.embedders.batch_size import choose_batch_size
from objsearch.errors import IndexNotFound, ObjsearchError
from objsearch.store.commit import ImageRecord, IndexWriter
from objsearch.store.layout import resolve_index_path
from objsearch.store.manifest import EmbedderInfo, check_embedder, read_manifest

logger = logging.getLogger(__name__)


@dataclass
class IndexOptions:
    exclude: Sequence[str] = ()
    batch_size: int = 0  # images per forward pass; 0 = the embedder's choice for its device
    workers: int = 0  # decoding processes; 0 = one per core, at most 4, none on a single core
    commit_every: int = 64  # images per commit (the most a kill can lose)
    max_pixels: int = MAX_PIXELS  # larger images are skipped as likely decompression bombs
    max_side: int = MAX_SIDE  # images are downscaled to this many pixels a side for the model
    progress: bool = True
    index_type: str | None = None  # FAISS factory string; "" = automatic; None = keep the index's
    max_index_memory: int | None = None  # bytes for the vector index; 0 = no budget; None = keep
    ray: str | None = None  # run decoding and the model on Ray: "local", "auto" or a cluster address
    ray_actors: int = 0  # model actors on Ray; 0 = one per GPU, or per CPUS_PER_ACTOR CPUs without GPUs


@dataclass
class IndexSummary:
    indexed: int = 0  # images embedded in this run
    objects_added: int = 0
    unchanged: int = 0
    touched: int = 0  # same bytes, new mtime: metadata updated, nothing re-embedded
    removed: int = 0  # files deleted from disk (or now excluded) and removed from the index
    recovered: int = 0  # images committed from parts an earlier run (or another process) staged
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): bad files, recorded
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not indexed, retried next run
    seconds: float = 0.0
    stage_seconds: Counter = field(default_factory=Counter)  # decode_wait, embed, write

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0


def index_folders(
    roots: Iterable[str | os.PathLike],
    index_path: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    embedder: ObjectEmbedder | None = None,
    options: IndexOptions | None = None,
) -> IndexSummary:
    """Bring the index at ``index_path`` up to date with the image files below ``roots``.

    ``model`` defaults to the one that built the index, or ``bundled`` for a new index.
    """
    options = options or IndexOptions()
    roots = [os.path.abspath(r) for r in roots]
    missing = [r for r in roots if not os.path.exists(r)]
    if missing:
        raise ObjsearchError(f"no such file or folder: {', '.join(missing)}")
    started = time.perf_counter()
    summary = IndexSummary()
    root = resolve_index_path(index_path)
    recorded = _recorded_embedder(root)
    if embedder is None and model is None and recorded is not None:
        info = recorded  # the index's own model; it loads only if there is something to embed
    else:
        model = model or DEFAULT_EMBEDDER
        if os.path.exists(model):  # a checkpoint directory: record it so it loads from anywhere
            model = os.path.abspath(model)
        embedder = embedder or load_embedder(model)
        info = EmbedderInfo.of(embedder, source=model)
    with IndexWriter(root, info, index_type=options.index_type, max_index_memory=options.max_index_memory) as writer:
        found = discover(roots, options.exclude)
        summary.skipped += [(path, f"unreadable folder: {reason}") for path, reason in found.unreadable_dirs]
        todo = plan(found, writer.known_images(), roots)
        summary.unchanged = todo.unchanged
        _apply_metadata_changes(writer, todo, summary)
        replaces = {file.path: record.image_id for file, record in todo.changed}
        work = todo.new + [file for file, _ in todo.changed]
        logger.info("%d files: %d new, %d changed, %d unchanged, %d touched, %d deleted", len(found.files), len(todo.new), len(todo.changed), todo.unchanged, len(todo.touched), len(todo.deleted))
        committer = PartCommitter(writer, work, replaces, summary, options.commit_every)
        staging = staging_dir(root)
        committer.take_staged(staging)  # finished work of a run that was killed before committing it
        work = committer.remaining
        if work and options.ray is not None:
            from indexer.ray_runner import index_on_ray  # Ray is an optional extra

            index_on_ray(options.ray, work, committer, staging, info, options)
            committer.take_staged(staging, recovered=False)  # parts of retried tasks that arrived twice or late
        elif work:
            if embedder is None:
                embedder = load_embedder(info.source or info.name)
                check_embedder(writer.manifest, EmbedderInfo.of(embedder))
            if caveat := getattr(embedder, "indexing_caveat", None):  # e.g. a model trained on synthetic data only
                logger.warning("%s", caveat)
            _embed_locally(committer, embedder, work, options, summary)
        committer.commit()
    summary.seconds = time.perf_counter() - started
    return summary


def _recorded_embedder(root: Path) -> EmbedderInfo | None:
    try:
        return read_manifest(root).embedder
    except IndexNotFound:
        return None


def _apply_metadata_changes(writer: IndexWriter, todo: IndexPlan, summary: IndexSummary) -> None:
    writer.remove_images([record.image_id for record in todo.deleted])
    for file, record in todo.touched:
        writer.remove_images([record.image_id], keep_objects=True)
        writer.add_image(ImageRecord(**{**record.__dict__, "file_size": file.file_size, "mtime_ns": file.mtime_ns}))
    summary.removed, summary.touched = len(todo.deleted), len(todo.touched)
    writer.commit()


def _embed_locally(committer: PartCommitter, embedder, work: list[FileStat], options: IndexOptions, summary: IndexSummary) -> None:
    """Decode ``work`` in worker processes and embed it here, batch by batch, into ``committer``."""
    if not options.batch_size:
        options = dataclasses.replace(options, batch_size=choose_batch_size(embedder))
    bar = tqdm(total=len(work), unit="img", desc="indexing", disable=not options.progress)
    try:
        for batch in _batches(_decoded(work, options, summary), options.batch_size):
            t0 = time.perf_counter()
            detections = embed_decoded(embedder, batch)
            summary.stage_seconds["embed"] += time.perf_counter() - t0
            for result, found in zip(batch, detections):
                committer.stage(image_record(result), found)
            bar.update(len(batch))
    finally:
        bar.close()


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def default_workers() -> int:
    cores = os.cpu_count() or 1
    return 0 if cores == 1 else min(4, cores)


LOOKAHEAD_BYTES = 1 << 30  # decoded images waiting for the model, at most (worst case: max_side^2 RGB each)


def _lookahead(batch_size: int, workers: int, max_side: int) -> int:
    """Files decoded ahead of the model: four batches of a small batch, two of a large GPU batch, and
    never more than LOOKAHEAD_BYTES of full-size decoded images (but always two per worker)."""
    by_memory = LOOKAHEAD_BYTES // (3 * max_side * max_side)
    return max(min(4 * batch_size, 64, by_memory), min(2 * batch_size, by_memory), 2 * workers)


def _decoded(work: list[FileStat], options: IndexOptions, summary: IndexSummary) -> Iterator[DecodeResult]:
    """Decode ``work`` in order, a bounded number of files ahead of the consumer (``_lookahead``)."""
    workers = options.workers or default_workers()
    args = (options.max_pixels, options.max_side)
    if workers <= 0 or len(work) <= 1:
        for file in work:
            t0 = time.perf_counter()
            result = load_file(file, *args)
            summary.stage_seconds["decode_wait"] += time.perf_counter() - t0
            yield result
        return
    # spawn, not fork: the parent holds model threads (torch, OpenCV, LiteRT) that fork would copy.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: deque[Future] = deque()
        upcoming = iter(work)
        ahead = _lookahead(options.batch_size, workers, options.max_side)
        for file in upcoming:
            pending.append(pool.submit(load_file, file, *args))
            if len(pending) >= ahead:
                break
        while pending:
            t0 = time.perf_counter()
            result = pending.popleft().result()
            summary.stage_seconds["decode_wait"] += time.perf_counter() - t0
            next_file = next(upcoming, None)
            if next_file is not None:
                pending.append(pool.submit(load_file, next_file, *args))
            yield result
