"""Shared machinery of the paper-shaped training experiments (multi-task ablation, data scaling).

Each experiment trains the tiny preset several times on the synthetic set at an equal step budget,
once per seed for every row, evaluates every run on the same synthetic test split, and writes a
Markdown table (each figure the mean of the seeds, with their range) + JSON with the command, the
commit, the date and the machine it ran on, and each run's raw ``metrics.json`` beside them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.provenance import utc_now

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


def train_rows(row_name: str, overrides: list[str], seeds: list[int], work_dir: Path, raw_dir: Path) -> list[dict[str, Any]]:
    """One run of ``overrides`` per seed; each run's ``metrics.json`` is copied to ``raw_dir/<run>/``."""
    runs = []
    for seed in seeds:
        name = f"{row_name.replace(' ', '_').replace('+', 'and')}-seed{seed}"
        run = train_and_evaluate(name, [*overrides, "--seed", str(seed)], work_dir)
        run.update(row=row_name, seed=seed)
        (raw_dir / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work_dir / name / "metrics.json", raw_dir / name / "metrics.json")
        runs.append(run)
    return runs


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


def markdown(runs: list[dict[str, Any]], first_column: str) -> str:
    """One line per row name: the mean over its seeds, and the range (min-max) where there are several."""
    header = [first_column, "seeds"] + [title for _, title in COLUMNS] + ["train min", "img/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row_name in dict.fromkeys(run["row"] for run in runs):
        group = [run for run in runs if run["row"] == row_name]
        cells = [row_name, ", ".join(str(run["seed"]) for run in group)]
        cells += [_fmt_spread([run.get(key) for run in group]) for key, _ in COLUMNS]
        cells += [_fmt_spread([run["train_minutes"] for run in group], 1), _fmt_spread([run["images_per_second"] for run in group], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_spread(values: list[Any], digits: int = 3) -> str:
    """'0.512 (0.498-0.526)': the mean and the range; '-' when nothing was measured (NaN or COCOeval's -1)."""
    measured = [v for v in values if v is not None and not math.isnan(v) and v >= 0]
    if not measured:
        return "-"
    mean = sum(measured) / len(measured)
    if len(measured) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(measured):.{digits}f}-{max(measured):.{digits}f})"


LEGEND = (
    "box AP / AP50: COCOeval on the test split, each detection labelled with the nearest category-name "
    "embedding (open-vocabulary), so a run whose text alignment is untrained scores ~0 however good its "
    "boxes; class-agnostic AP50: all categories merged, i.e. how well objects are found and boxed. "
    "colour-shape R@5: text queries like \"red star\", a hit has IoU >= 0.5 with such an object. "
    "zero-shot acc: ground-truth boxes embedded as region queries, nearest category name. "
    "CIDEr-D: region captions vs the annotation captions (pycocoevalcap scale, max 10). "
    "train min includes the final test evaluation; '-' = nothing to measure. Each cell: the mean over "
    "the row's seeds (min-max across them)."
)


def write_report(title: str, runs: list[dict[str, Any]], first_column: str, out_file: Path, module: str,
                 started: str, code: str) -> str:
    """Writes ``out_file`` (.md) and its .json twin; returns the Markdown. ``module``: the experiment's
    module name, to record the command that made the table; ``started``: when the runs began (UTC);
    ``code``: the commit they ran (``commit()`` taken before the first run)."""
    command = " ".join(["python -m", module, *sys.argv[1:]])
    text = (f"# {title}\n\nCommand: `{command}`  \nCommit: {code}  \nMachine: {json.dumps(machine())}  \n"
            f"Started: {started}; finished: {utc_now()}  \nRaw per-run metrics: `{out_file.stem}/<run>/metrics.json`\n\n"
            f"{markdown(runs, first_column)}\n\n{LEGEND}\n")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text)
    out_file.with_suffix(".json").write_text(json.dumps({"title": title, "command": command, "commit": code, "started": started,
                                                         "finished": utc_now(), "machine": machine(), "runs": runs},
                                                        indent=2, default=float))
    return text

