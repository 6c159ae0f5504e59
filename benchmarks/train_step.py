"""Training-step speed of the default (tiny) run, side by side in one process: float32 against
bfloat16 autocast (with and without PyTorch's fused attention in the ViT), and the embedding head's
RoIAlign (one grid_sample) against torchvision's.

    python -m benchmarks.train_step [--rounds 6] [--steps 5]

The variants alternate in rounds of ``--steps`` training steps on the same model and data
stream, so machine noise falls on all of them; medians of the per-step times are printed with their ratio.
Needs the synthetic set in ``runs/synthetic`` (generated on first use, a few minutes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def _median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def time_training_steps(rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per training step of the default config: float32, bfloat16 as a training run sets it up
    (on CPU: explicit ViT attention) and bfloat16 with PyTorch's fused attention."""
    from training.config import load_config
    from training.engine import Trainer

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(load_config("tiny", ["--output_dir", scratch, "--resume", "false", "--eval_every", "0"]))
    batches = iter(trainer.loader())
    trainer.step = trainer.config.gradnorm.start_step  # GradNorm updates every other step, as in a run
    times: dict[str, list[float]] = {"float32": [], "bfloat16, fused attention": [], "bfloat16": []}
    for round_index in range(rounds + 1):  # round 0 warms all up and is not counted
        for name in times:
            trainer.set_mixed_precision(name.startswith("bfloat16"))  # the run's choice of attention
            if name == "bfloat16, fused attention":
                trainer.explicit_attention = False
            for _ in range(steps):
                batch = next(batches)
                started = time.perf_counter()
                trainer.train_step(batch)
                trainer.step += 1
                if round_index:
                    times[name].append(time.perf_counter() - started)
    return times


def time_roi_align(repeats: int) -> dict[str, list[float]]:
    """Seconds per forward + backward of 16 x 32 boxes on a (16, 192, 16, 16) map (the tiny preset's)."""
    from torchvision.ops import roi_align

    from objsearch.model.roi import roi_align_grid

    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(16, 32, 2, generator=generator) * 16
    sizes = torch.rand(16, 32, 2, generator=generator) * 12 + 1
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1).clamp(0, 16)
    feature_map = torch.randn(16, 192, 16, 16, generator=generator, requires_grad=True)
    variants = {
        "torchvision roi_align (adaptive sampling)":
            lambda: roi_align(feature_map, list(boxes.unbind(0)), output_size=4, aligned=True),
        "torchvision roi_align (sampling_ratio 2)":
            lambda: roi_align(feature_map, list(boxes.unbind(0)), output_size=4, aligned=True, sampling_ratio=2),
        "roi_align_grid (sampling_ratio 2)": lambda: roi_align_grid(feature_map, boxes, 4, sampling_ratio=2),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats + 1):
        for name, pool in variants.items():
            started = time.perf_counter()
            pool().sum().backward()
            if repeat:
                times[name].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per precision (default 6)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per round (default 5)")
    parser.add_argument("--roi-repeats", type=int, default=20, help="RoIAlign timings per variant (default 20)")
    args = parser.parse_args()
    if min(args.rounds, args.steps, args.roi_repeats) < 1:
        parser.error("--rounds, --steps and --roi-repeats must be >= 1")

    from training.engine import fast_bfloat16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native bfloat16 on this CPU: {fast_bfloat16(torch.device('cpu'))}")
    roi = time_roi_align(args.roi_repeats)
    baseline = _median_ms(next(iter(roi.values())))
    print(f"\nRoIAlign forward + backward, median of {args.roi_repeats}:")
    for name, times in roi.items():
        print(f"  {name:42s} {_median_ms(times):7.1f} ms  ({baseline / _median_ms(times):.2f}x)")

    steps = time_training_steps(args.rounds, args.steps)
    full = _median_ms(steps["float32"])
    print(f"\nTraining step (tiny preset, batch 16), median of {args.rounds * args.steps} steps each:")
    for name, times in steps.items():
        print(f"  {name:26s} {_median_ms(times):7.1f} ms  ({full / _median_ms(times):.2f}x)")


if __name__ == "__main__":
    main()
