"""The paper's multi-task ablation, in shape, on the synthetic set (tiny preset, CPU):
detection only, retrieval (grounding) only, detection + retrieval, and full multi-task, each at the
same step budget and evaluated on the same synthetic test split.

    python -m benchmarks.multitask_ablation --steps 300 --seeds 0 1 --out benchmarks/results/multitask_ablation.md

Note: with retrieval only, nothing trains the boxes, so objects are whatever the untrained decoder
proposes: that row shows what detection supervision contributes to retrieval.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.provenance import commit, utc_now
from benchmarks.training_runs import train_rows, write_report

RUNS = {
    "detection only": ["detection"],
    "retrieval only": ["grounding"],
    "detection + retrieval": ["detection", "grounding"],
    "full multi-task": ["detection", "grounding", "mask", "caption", "classification"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps per run (equal budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds: one run of each row per seed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/multitask_ablation.md"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/ablation"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    rows, started, code = [], utc_now(), commit()
    raw_dir = args.out.with_suffix("")
    for name, tasks in RUNS.items():
        overrides = ["--optim.steps", str(args.steps), "--tasks", '["' + '", "'.join(tasks) + '"]']
        rows += train_rows(name, overrides, args.seeds, args.work_dir, raw_dir)
    print(write_report(f"Multi-task ablation ({args.steps} steps each, tiny preset, synthetic test split)",
                       rows, "tasks", args.out, "benchmarks.multitask_ablation", started, code))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
