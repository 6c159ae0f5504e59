"""The data-scaling curve, in shape, on the synthetic set (tiny preset, CPU): the full multi-task
model trained on several training-set sizes at the same step budget, evaluated on the same test split.

    python -m benchmarks.data_scaling --sizes 250 1000 4000 --steps 300 --seeds 0 1 --out benchmarks/results/data_scaling.md
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.provenance import commit, utc_now
from benchmarks.training_runs import train_rows, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000], help="training images per run")
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps per run (equal budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds: one run of each row per seed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data_scaling.md"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/scaling"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    rows, started, code = [], utc_now(), commit()
    raw_dir = args.out.with_suffix("")
    for size in args.sizes:
        # Each size is its own synthetic set (same seed): the test split is identical across them,
        # since image content depends only on (seed, split, index).
        overrides = ["--optim.steps", str(args.steps), "--data.synthetic_train", str(size),
                     "--data.synthetic_dir", str(args.work_dir / f"synthetic-{size}")]
        rows += train_rows(f"{size} images", overrides, args.seeds, args.work_dir, raw_dir)
    print(write_report(f"Data scaling ({args.steps} steps each, tiny preset, synthetic test split)",
                       rows, "training set", args.out, "benchmarks.data_scaling", started, code))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
