"""A small ObjEmbed for the training tests: its config, random boxes and the ``training.train`` flags of a
seconds-long run (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import torch

from objsearch.model.config import preset

CATEGORIES = ["star", "ring", "square"]

#: A small ObjEmbed (about 1.5M parameters besides the frozen MiniLM) whose forward takes milliseconds.
SMALL_OVERRIDES: dict[str, Any] = {
    "backbone_kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 48, "num_heads": 2},
    "image_size": 64,
    "hidden_dim": 32,
    "decoder_layers": 2,
    "decoder_heads": 2,
    "decoder_ffn_dim": 64,
    "num_queries": 6,
    "mask_size": 16,
    "embed_dim": 64,
    "caption_layers": 1,
}


def small_config(categories: list[str] | None = None):
    """The ``tiny`` preset shrunk further (shared by the training tests)."""
    return preset("tiny", **SMALL_OVERRIDES, categories=list(CATEGORIES if categories is None else categories))


def random_boxes(batch: int, count: int, seed: int) -> torch.Tensor:
    """(batch, count, 4) valid cxcywh boxes in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, count, 2, generator=gen) * 0.6 + 0.2
    sizes = torch.rand(batch, count, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([centres, sizes], dim=-1)


def tiny_run_arguments(tmp_path, steps: int) -> list[str]:
    """``training.train`` flags for a seconds-long run of the small model on a 12/4/4-image synthetic set."""
    model = [item for key, value in SMALL_OVERRIDES.items()
             for item in (f"--model.{key}", json.dumps(value) if isinstance(value, dict) else str(value))]
    return [
        "--data.synthetic_dir", str(tmp_path / "synthetic"), "--data.synthetic_train", "12",
        "--data.synthetic_val", "4", "--data.synthetic_test", "4", *model,
        "--optim.steps", str(steps), "--optim.batch_size", "2", "--optim.warmup_steps", "1",
        "--eval_every", "0", "--checkpoint_every", "2", "--output_dir", str(tmp_path / "run"),
    ]
