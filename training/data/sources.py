"""Build the training sources named in ``DataConfig``: the synthetic set and any real-format datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from training.config import DataConfig

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
SYNTHETIC_REFS = "synthetic_refs"


def synthetic_paths(root: Path, split: str) -> dict[str, Path]:
    """Where the generator puts a split's files."""
    return {
        "image_dir": root / "images" / split,
        "instances_json": root / "annotations" / f"instances_{split}.json",
        "refs_json": root / "annotations" / f"refs_{split}.json",
        "captions_json": root / "annotations" / f"captions_{split}.json",
    }


def data_record(data: DataConfig) -> dict[str, Any]:
    """What a run trains on, for its checkpoint (``config.json``, ``training.data``): every source with a
    share of the batches, its format ("synthetic" for the generated set) and share, and whether all of
    them are synthetic (``objsearch index`` then warns that the model is not one for real photos)."""
    sources = {}
    for name, share in data.mix.items():
        if share > 0:
            kind = "synthetic" if name in (SYNTHETIC, SYNTHETIC_REFS) else data.sources.get(name, {}).get("format")
            sources[name] = {"format": kind, "share": share}
    synthetic_only = bool(sources) and all(source["format"] == "synthetic" for source in sources.values())
    return {"sources": sources, "synthetic_only": synthetic_only}


def ensure_synthetic(data: DataConfig) -> Path:
    """Generate the synthetic set when missing (the generator refuses a directory holding another set)."""
    from objsearch.datasets.synthetic import SyntheticConfig, generate

    root = Path(data.synthetic_dir)
    config = SyntheticConfig(seed=data.synthetic_seed, num_train=data.synthetic_train, num_val=data.synthetic_val,
                             num_test=data.synthetic_test)
    return generate(root, config)


def build_source(name: str, spec: dict[str, Any]):
    """One real-format dataset from ``{"format": ..., **loader kwargs}``."""
    spec = dict(spec)
    kind = spec.pop("format", None)
    if kind == "coco":
        from training.data.coco import CocoDetection as loader
    elif kind == "lvis":
        from training.data.lvis import LvisDetection as loader
    elif kind == "refcoco":
        from training.data.refcoco import RefCocoGrounding as loader
    elif kind == "imagenet":
        from training.data.imagenet import ImageFolderClassification as loader
    elif kind == "cc3m":
        from training.data.cc3m import Cc3mCaptions

        return Cc3mCaptions.from_webdataset(spec["tars"]) if "tars" in spec else Cc3mCaptions.from_tsv(**spec)
    else:
        raise ValueError(f"source {name!r}: unknown format {kind!r} (coco, lvis, refcoco, cc3m, imagenet)")
    return loader(**spec)


def build_sources(data: DataConfig) -> dict[str, Any]:
    """name -> map-style dataset of Samples, for every source with a share in ``data.mix``.

    Each dataset's ``source`` is set to its mix name, so targets know which label set they use.
    """
    sources: dict[str, Any] = {}
    for name in data.mix:
        if name in (SYNTHETIC, SYNTHETIC_REFS):
            paths = synthetic_paths(ensure_synthetic(data), "train")
            if name == SYNTHETIC:
                from training.data.coco import CocoDetection

                dataset = CocoDetection(paths["image_dir"], paths["instances_json"])
            else:
                from training.data.refcoco import RefCocoGrounding

                dataset = RefCocoGrounding(paths["image_dir"], paths["refs_json"], paths["instances_json"], split=None)
        elif name in data.sources:
            dataset = build_source(name, data.sources[name])
        else:
            raise ValueError(f"data.mix names {name!r}, which is neither synthetic nor in data.sources")
        dataset.source = name
        sources[name] = dataset
        logger.info("source %s: %d samples", name, len(dataset))
    return sources
