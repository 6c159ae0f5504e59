"""Shared machinery of the paper-shaped training experiments (multi-task ablation, data scaling).

Each experiment trains the tiny preset several times on the synthetic set at an equal step budget,
evaluates every run on the same synthetic test split, and writes a Markdown table + JSON with the
command and the machine it ran on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

COLUMNS = [
    ("box_AP", "box AP"),
    ("box_AP50", "AP50"),
    ("agnostic_AP50", "class-agnostic AP50"),
    ("ranked_AP", "ranked AP"),
    ("ranked_AP50", "ranked AP50"),
    ("mask_AP", "mask AP"),
    ("colour_shape_R@5", "colour-shape R@5"),
    ("referring_R@1", "referring R@1"),
    ("zero_shot_acc", "zero-shot acc"),
    ("caption_CIDEr", "CIDEr-D"),
]


def train_and_evaluate(name: str, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    """One training run with ``--key value`` overrides; returns its headline test figures and timing."""
    from training.config import load_config
    from training.engine import Trainer, headline

    config = load_config(None, [*overrides, "--output_dir", str(out_dir / name), "--resume", "false",
                                "--eval_every", "0", "--checkpoint_every", "0"])
    started = time.perf_counter()
    summary = Trainer(config).fit()
    row = {"run": name, **headline(summary["test"]), "steps": summary["steps"],
           "train_minutes": summary["train_seconds"] / 60, "wall_minutes": (time.perf_counter() - started) / 60,
           "images_per_second": summary["images_per_second"], "overrides": overrides}
    logger.info("%s: %s", name, row)
    return row


def machine() -> dict[str, Any]:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "platform": platform.platform(), "processor": platform.processor()}


def markdown(rows: list[dict[str, Any]], first_column: str) -> str:
    header = [first_column] + [title for _, title in COLUMNS] + ["train min", "img/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["run"]] + [_fmt(row.get(key)) for key, _ in COLUMNS]
        cells += [f"{row['train_minutes']:.1f}", f"{row['images_per_second']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or math.isnan(value) or value < 0:  # NaN or COCOeval's -1: nothing to measure
        return "-"
    return f"{value:.3f}"


LEGEND = (
    "box AP / AP50: COCOeval on the test split, each detection labelled with the nearest category-name "
    "embedding (open-vocabulary), so a run whose text alignment is untrained scores ~0 however good its "
    "boxes; class-agnostic AP50: all categories merged, i.e. how well objects are found and boxed. "
    "colour-shape R@5: text queries like \"red star\", a hit has IoU >= 0.5 with such an object. "
    "zero-shot acc: ground-truth boxes embedded as region queries, nearest category name. "
    "CIDEr-D: region captions vs the annotation captions (pycocoevalcap scale, max 10). "
    "train min includes the final test evaluation; '-' = nothing to measure."
)


def write_report(title: str, rows: list[dict[str, Any]], first_column: str, out_file: Path, module: str) -> str:
    """Writes ``out_file`` (.md) and its .json twin; returns the Markdown. ``module``: the experiment's
    module name, to record the command that made the table."""
    command = " ".join(["python -m", module, *sys.argv[1:]])
    text = (f"# {title}\n\nCommand: `{command}`  \nMachine: {json.dumps(machine())}  \n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n{markdown(rows, first_column)}\n\n{LEGEND}\n")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text)
    out_file.with_suffix(".json").write_text(json.dumps({"title": title, "command": command, "machine": machine(),
                                                         "rows": rows}, indent=2, default=float))
    return text
