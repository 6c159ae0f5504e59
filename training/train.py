"""``python -m training.train [PRESET.json] [--key value ...]``: train ObjEmbed.

With no preset: ``training/presets/tiny.json``, the tiny model on a freshly generated synthetic set,
on CPU (or CUDA when present), writing ``runs/tiny/final`` — a checkpoint ``objsearch index --model``
loads. It trains 2000 steps or for 27 minutes, whichever ends first (the budget covers the training
loop and its val evaluations; setup and the final test evaluation add about a minute). On 2 CPU
cores with bfloat16 (AVX512-BF16) the 2000 steps take about 25 minutes, and then the learning rate
anneals by steps alone, so the run does not depend on the clock. On a slower machine the budget
ends the run, and the learning rate anneals towards the step the budget is projected to end at.
``--optim.max_minutes 0`` removes the budget.
Under ``torchrun --nproc_per_node N`` the same command trains with DistributedDataParallel.
"""

from __future__ import annotations

import logging
import sys

from training.config import load_config

DEFAULT_PRESET = "tiny"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("Keys: see training/config.py (TrainConfig); presets: training/presets/*.json")
        return 0
    preset_file = argv.pop(0) if argv and not argv[0].startswith("--") else DEFAULT_PRESET
    try:
        config = load_config(preset_file, argv)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    from objsearch.datasets.synthetic import SyntheticSetConflict
    from objsearch.errors import PretrainedUnavailable
    from training.engine import ResumeMismatch, Trainer, headline

    try:
        summary = Trainer(config).fit()
    except (ResumeMismatch, SyntheticSetConflict, PretrainedUnavailable) as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary.get("test"):
        figures = headline(summary["test"])
        print(f"checkpoint: {summary['checkpoint']}")
        print(f"trained {summary['steps']} steps in {summary['train_seconds'] / 60:.1f} min "
              f"({summary['images_per_second']:.1f} images/s)")
        print("test: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
