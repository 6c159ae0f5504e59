"""The coco-search benchmark: every model on the same COCO-format split, side by side.

    objsearch bench coco-search [--data DIR] [--model NAME ...] [--split NAME] [--max-images N] [--out DIR]

For each model, ``objsearch.evaluation.evaluate_embedder`` measures detection / mask AP, text- and
object-to-object retrieval, zero-shot accuracy, kNN purity and caption CIDEr-D; then the same images
are really indexed (``indexer.pipeline.index_folders``, timed: images/s end to end) and the
category-name queries are run through ``objsearch.search`` (timed: latency p50 / p95).

Writes into the output directory:

    results.json   everything: the command, dataset, date, machine, and per model its metrics and speed
    results.md     one row per model (``benchmarks.report.markdown_table``)
    pr_curve.png   precision-recall of the category-name text queries, one curve per model

Every number except the speed figures depends only on the data, the models and ``seed``.
Without ``--data`` the synthetic shapes set (``objsearch.datasets.synthetic``) is generated once into
the user cache (``$XDG_CACHE_HOME/objsearch`` or ``~/.cache/objsearch``) and its test split is used.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from objsearch.embedders import ObjectEmbedder, load_embedder
from objsearch.datasets.coco_files import load_coco_instances
from objsearch.errors import ObjsearchError
from objsearch.evaluation import CocoSplit, evaluate_embedder

logger = logging.getLogger(__name__)

DEFAULT_MODELS = ("bundled",)
DEFAULT_OUT = Path("bench-results")
#: The default benchmark set. The test split is what is measured; the train split is only read for
#: its category frequencies (the rare / common / frequent groups behind APr).
SYNTHETIC_SIZES = {"num_train": 400, "num_val": 0, "num_test": 200}
#: --split unset: the first of these that the data holds (with images) is measured.
SPLIT_PREFERENCE = ("test", "val", "minival")
QUERY_TOP_K = 10  # results per timed query (the `objsearch query` default)
MIN_TIMED_QUERIES = 50  # the category queries are repeated until at least this many are timed
INDEX_BATCH_SIZE = 8
INDEX_WORKERS = 1  # decoding processes while timing indexing


class NotCocoDataset(ObjsearchError):
    """--data is not a COCO-format directory (or lacks the split / images asked for)."""


@dataclasses.dataclass
class BenchData:
    """The split measured, and how to describe it in the results."""

    split: CocoSplit
    description: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------


def run_coco_search(data: Path | None, models: list[str], out_dir: Path, max_images: int | None,
                    seed: int = 0, *, split: str | None = None) -> dict[str, Any]:
    """Benchmark every model in ``models`` (names, ``module:factory`` paths or checkpoint dirs) on
    one split of ``data`` (a COCO-format directory; None = the synthetic set), the first
    ``max_images`` images by id (None = all). Writes results.json, results.md and pr_curve.png into
    ``out_dir`` and returns what results.json holds::

        {"command": str, "date": ISO 8601 UTC, "machine": {...}, "dataset": {...},
         "models": [{"model": str, "embedder": {"name", "version", "embed_dim"},
                     "metrics": evaluate_embedder(...)'s dict (fractions in [0, 1]),
                     "speed": {"index_images_per_second", "query_p50_ms", "query_p95_ms", ...}}]}

    Raises NotCocoDataset for a directory that is not COCO-format, BadDataset for a malformed
    instances or refs file, UnknownModel for a bad model.
    """
    # First: fails early, before any measuring, if matplotlib is missing.
    from benchmarks.report import plot_pr_curves, write_markdown

    models = list(models) or list(DEFAULT_MODELS)
    bench = synthetic_split(seed) if data is None else find_coco_split(Path(data), split)
    images = sorted(bench.split.gt["images"], key=lambda r: r["id"])[:max_images]
    _check_images_exist(bench.split, images)
    dataset = {**bench.description, "images_measured": len(images), "max_images": max_images}
    embedders = [load_embedder(model) for model in models]  # all first: a bad --model fails before minutes of work
    rows = []
    with tqdm(total=3 * len(models), desc="coco-search", unit="step", disable=None) as progress:
        for model, embedder in zip(models, embedders):
            rows.append(benchmark_model(model, embedder, bench.split, images, seed, progress))
    results = {
        "command": command_line(data, models, out_dir, max_images, seed, split),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "dataset": dataset,
        "seed": seed,
        "models": rows,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    write_markdown(results, out_dir / "results.md")
    plot_pr_curves(rows, out_dir / "pr_curve.png")
    logger.info("coco-search results in %s", out_dir)
    return results


def benchmark_model(model: str, embedder: ObjectEmbedder, split: CocoSplit, images: list[dict], seed: int,
                    progress: tqdm) -> dict[str, Any]:
    """One row of the results: evaluate the embedder loaded from ``model`` on ``images`` of ``split``, time it."""
    progress.set_postfix_str(f"{model}: evaluating")
    logger.info("%s: evaluating on %d images", model, len(images))
    metrics = evaluate_embedder(embedder, split, max_images=len(images), seed=seed)
    progress.update()
    speed = measure_speed(embedder, split, images, split.category_names, progress, model)
    return {
        "model": model,
        "embedder": {"name": embedder.name, "version": embedder.version, "embed_dim": int(embedder.embed_dim)},
        "metrics": metrics,
        "speed": speed,
    }


def measure_speed(embedder: ObjectEmbedder, split: CocoSplit, images: list[dict], queries: list[str], progress: tqdm,
                  model: str = "") -> dict[str, Any]:
    """Index ``images`` into a throwaway index with the real pipeline (images/s, wall clock, the
    model already loaded), then time ``queries`` through ``Index.search_text``: each is run once to
    warm up, then all of them in rounds until at least MIN_TIMED_QUERIES are timed (ms)."""
    from indexer.pipeline import IndexOptions, index_folders
    from objsearch.search import open_index

    files = [split.image_dir / r["file_name"] for r in images]
    with tempfile.TemporaryDirectory(prefix="objsearch-bench-") as work:
        progress.set_postfix_str(f"{model}: indexing")
        options = IndexOptions(progress=False, batch_size=INDEX_BATCH_SIZE, workers=INDEX_WORKERS)
        started = time.perf_counter()
        summary = index_folders(files, Path(work) / "index", embedder=embedder, options=options)
        seconds = time.perf_counter() - started
        progress.update()
        progress.set_postfix_str(f"{model}: querying")
        latencies = []
        with open_index(Path(work) / "index", model=embedder) as index:
            for text in queries:
                index.search_text(text, QUERY_TOP_K)  # warm-up: lazy loading, caches
            for _ in range(-(-MIN_TIMED_QUERIES // max(len(queries), 1))):
                for text in queries:
                    t0 = time.perf_counter()
                    index.search_text(text, QUERY_TOP_K)
                    latencies.append((time.perf_counter() - t0) * 1e3)
        progress.update()
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"), float("nan"))
    return {
        "index_images_per_second": summary.indexed / seconds if seconds > 0 else None,
        "index_seconds": seconds,
        "indexed_images": summary.indexed,
        "indexed_objects": summary.objects_added,
        "index_skipped": len(summary.skipped),
        "index_batch_size": INDEX_BATCH_SIZE,
        "index_workers": INDEX_WORKERS,
        "query_p50_ms": float(p50),
        "query_p95_ms": float(p95),
        "queries_timed": len(latencies),
        "query_top_k": QUERY_TOP_K,
    }


# ----------------------------------------------------------------------------------------------
# Data: a COCO-format directory, or the synthetic set
# ----------------------------------------------------------------------------------------------


def find_coco_split(root: Path, split: str | None = None) -> BenchData:
    """The split of a COCO-format directory to measure.

    Instances: ``annotations/instances_{split}.json`` (or ``instances_{split}.json`` in ``root``);
    ``split`` may be the exact name (``val2017``) or a prefix of exactly one (``val``). Without
    ``split``: the first split with images, trying SPLIT_PREFERENCE, then the others, train last.
    Images: the first of ``images/{split}``, ``{split}``, ``images/{split}2017``, ``{split}2017``,
    ``images``, ``root`` that holds the split's first image. Referring expressions (optional):
    ``refs_{split}.json`` beside the instances file, or ``refs.json``.
    """
    if not root.is_dir():
        raise NotCocoDataset(f"--data {root}: no such directory")
    found = {p.name[len("instances_"):-len(".json")]: p for folder in (root, root / "annotations")  # annotations/ wins
             for p in sorted(folder.glob("instances_*.json"))}
    if not found:
        raise NotCocoDataset(f"--data {root} is not a COCO-format directory: no annotations/instances_*.json in it")
    if split is not None:
        name = _match_split(split, found, root)
        coco = load_coco_instances(found[name])
        if not coco["images"]:
            raise NotCocoDataset(f"split {name!r} of {root} has no images")
    else:
        name, coco = _default_split(found, root)
    image_dir = _image_dir(root, name, coco["images"][0]["file_name"])
    refs = next((p for p in (found[name].parent / f"refs_{name}.json", found[name].parent / "refs.json") if p.is_file()), None)
    coco_split = CocoSplit(image_dir, found[name], refs)
    description = {"source": str(root.resolve()), "split": name, "instances": str(found[name].resolve()),
                   "image_dir": str(image_dir.resolve()), "refs": str(refs.resolve()) if refs else None,
                   **_counts(coco_split)}
    return BenchData(coco_split, description)


def _match_split(split: str, found: dict[str, Path], root: Path) -> str:
    if split in found:
        return split
    prefixed = [name for name in found if name.startswith(split)]
    if len(prefixed) == 1:
        return prefixed[0]
    raise NotCocoDataset(f"--split {split!r}: {root} has {'several matching' if prefixed else 'no such'} "
                         f"split (instances files for: {', '.join(sorted(found))})")


def _default_split(found: dict[str, Path], root: Path) -> tuple[str, dict]:
    ordered = [n for p in SPLIT_PREFERENCE for n in sorted(found) if n.startswith(p)]
    ordered += [n for n in sorted(found) if n not in ordered and not n.startswith("train")]
    ordered += [n for n in sorted(found) if n not in ordered]
    for name in ordered:
        coco = load_coco_instances(found[name])
        if coco["images"]:
            return name, coco
    raise NotCocoDataset(f"--data {root}: every instances file is empty (no images)")


def _image_dir(root: Path, split: str, first_file: str) -> Path:
    candidates = [root / "images" / split, root / split, root / "images" / f"{split}2017", root / f"{split}2017",
                  root / "images", root]
    for folder in candidates:
        if (folder / first_file).is_file():
            return folder
    raise NotCocoDataset(f"--data {root}: the images of split {split!r} are not in images/{split}/, {split}/ or "
                         f"images/ (looked for {first_file})")


def _check_images_exist(split: CocoSplit, images: list[dict]) -> None:
    missing = [r["file_name"] for r in images if not (split.image_dir / r["file_name"]).is_file()]
    if missing:
        raise NotCocoDataset(f"{len(missing)} of {len(images)} images named in {split.instances_json} are missing "
                             f"from {split.image_dir} (first: {missing[0]})")


def _counts(split: CocoSplit) -> dict[str, Any]:
    categories = split.gt["categories"]
    return {"images": len(split.gt["images"]), "annotations": len(split.gt["annotations"]),
            "categories": len(categories), "frequency_groups": any("frequency" in c for c in categories)}


def synthetic_cache_root() -> Path:
    """Where generated benchmark sets are kept: ``$XDG_CACHE_HOME/objsearch`` or ``~/.cache/objsearch``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "objsearch"


def synthetic_split(seed: int = 0) -> BenchData:
    """The test split of the synthetic shapes set (SYNTHETIC_SIZES, ``seed``), generated on first use
    into ``synthetic_cache_root()/bench-synthetic-<hash of the config>`` and reused after that."""
    from objsearch.datasets.synthetic import GENERATOR_VERSION, SyntheticConfig, generate

    config = SyntheticConfig(seed=seed, **SYNTHETIC_SIZES)
    identity = json.dumps({"config": dataclasses.asdict(config), "generator_version": GENERATOR_VERSION}, sort_keys=True)
    target = synthetic_cache_root() / f"bench-synthetic-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    if not (target / "dataset.json").is_file():
        logger.info("generating the synthetic benchmark set into %s", target)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Generate beside the target and rename into place: an interrupted or concurrent run never
        # leaves a half-written set where the next run would look.
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            generate(staging, config)
            try:
                os.replace(staging, target)
            except OSError:
                if not (target / "dataset.json").is_file():
                    raise  # not a concurrent run that got there first
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    bench = find_coco_split(target, "test")
    bench.description.update(source="synthetic", synthetic_config=dataclasses.asdict(config),
                             generator_version=GENERATOR_VERSION)
    return bench


# ----------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------


def command_line(data: Path | None, models: list[str], out_dir: Path, max_images: int | None, seed: int,
                 split: str | None) -> str:
    """The `objsearch bench coco-search` command that reproduces these results."""
    args = ["objsearch", "bench", "coco-search"]
    if data is not None:
        args += ["--data", str(data)]
    if split is not None:
        args += ["--split", split]
    for model in models:
        args += ["--model", model]
    if max_images is not None:
        args += ["--max-images", str(max_images)]
    if seed:
        args += ["--seed", str(seed)]
    return shlex.join(args + ["--out", str(out_dir)])


def machine_info() -> dict[str, Any]:
    """CPU, Python, torch and accelerator of this machine (the speed figures depend on them)."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "processor": platform.processor() or platform.machine(), "python": platform.python_version()}
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except ImportError:
        info["torch"] = None
    return info


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to results.json")
