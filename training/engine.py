"""The training loop: build everything from a TrainConfig, train, evaluate, checkpoint, resume."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from objsearch.model.checkpoint import save_checkpoint
from objsearch.model.config import preset
from objsearch.model.objembed import ObjEmbed
from objsearch.model.pretrained import check_pretrained
from training import distributed
from training.config import TrainConfig
from training.criterion import SetCriterion, task_losses
from training.data.augment import FlipBatchSampler, FlippingDataset
from training.data.collate import Collator
from training.data.mixing import MixedBatchSampler, MixedDataset
from training.data.repeat_factors import image_repeat_factors
from training.data.sources import (
    SYNTHETIC,
    build_sources,
    data_record,
    ensure_synthetic,
    synthetic_paths,
)
from training.denoising import build_denoising_queries
from training.gradnorm import GradNorm
from training.matcher import HungarianMatcher
from training.ohem import tail_category_weights
from training.phrase_bank import PhraseBank

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


class ResumeMismatch(Exception):
    """output_dir/last holds a run whose model config differs from the one asked for."""


def lr_factor(step: int, warmup: int, total: int, spent: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps to 1, then cosine decay to 0.05 at the end of the run.

    The run ends at ``total`` steps or when its time budget is spent, whichever comes first.
    ``spent`` is the fraction of the budget used so far (0 without one). At the current rate the
    budget lasts ``step / spent`` steps: when that is at least ``total`` the decay goes by steps alone,
    so the schedule (and, on a deterministic device, the whole run) does not depend on the clock;
    when it is fewer, the decay aims at that projected end, so a run that a slower machine cuts
    short still anneals fully instead of stopping at a high learning rate.
    """
    if step < warmup:
        return (step + 1) / warmup
    end = total
    if spent > 0:
        end = min(total, step / spent)  # the step the budget is projected to run out at
    progress = 1.0 if spent >= 1 else min(1.0, (step - warmup) / max(1.0, end - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_device(requested: str) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively: CUDA GPUs that support it, and CPUs
    with AVX512-BF16 or AMX (there a bf16 matmul of the tiny preset's ViT MLP runs ~3x faster than
    float32; on other CPUs bf16 is emulated and slower)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, present since torch 2.3
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def build_optimizer(model: ObjEmbed, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; the backbone gets its own rate; no weight decay on biases and norms (1-d tensors)."""
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = config.optim.backbone_lr if name.startswith("backbone.") else config.optim.lr
        decay = 0.0 if param.ndim <= 1 else config.optim.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW([{"params": p, "lr": lr, "base_lr": lr, "weight_decay": wd}
                              for (lr, wd), p in groups.items()])


def category_counts(dataset) -> np.ndarray | None:
    """(C,) training instances per category, when the loader can tell without decoding images."""
    counts = getattr(dataset, "category_instance_counts", None)
    return np.asarray(counts(), dtype=np.int64) if callable(counts) else None


class ModelWithLoss(torch.nn.Module):
    """The model and its criterion as one module: under DDP every parameter the losses touch (text
    encoder, caption and classification heads, logit scale) is used inside one forward call."""

    def __init__(self, model: ObjEmbed, criterion: SetCriterion) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, images: torch.Tensor, targets: list, extra: torch.Tensor | None, groups: int,
                pairs: list) -> dict[str, torch.Tensor]:
        return self.criterion(self.model(images, extra_boxes=extra, extra_groups=groups), targets, pairs)


class Trainer:
    """Owns the model, the optimiser, GradNorm and the data stream for one training run."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        distributed.init_from_environment(self.device.type)
        _seed_everything(config.seed + distributed.rank())
        self.output = Path(config.output_dir)
        # The hub's pretrained parts first: offline, this fails in seconds rather than after the data
        # is generated and the hub client's retries (PretrainedUnavailable, one line in training.train).
        check_pretrained(preset(config.preset, **config.model))
        if distributed.rank() == 0:
            ensure_synthetic(config.data) if SYNTHETIC in config.data.mix else None
        if distributed.is_distributed():
            torch.distributed.barrier()
        self.sources = build_sources(config.data)
        primary = next(iter(self.sources.values()))
        model_config = preset(config.preset, **{"categories": list(primary.categories), **config.model})
        self.model = ObjEmbed(model_config).to(self.device)
        self.criterion = SetCriterion(
            self.model, HungarianMatcher(config.loss.objectness, config.loss.box_l1, config.loss.giou),
            config.tasks, _tail_weights(primary, config.ohem_tail_power), ohem_keep=config.ohem_keep,
            phrase_bank=PhraseBank(config.phrase_bank) if config.phrase_bank else None)
        self.gradnorm = GradNorm(config.tasks, alpha=config.gradnorm.alpha, lr=config.gradnorm.lr,
                                 min_weight=config.gradnorm.min_weight,
                                 max_weight=config.gradnorm.max_weight).to(self.device)
        self.optimizer = build_optimizer(self.model, config)
        self.set_mixed_precision(config.amp and fast_bfloat16(self.device))
        self.collate = Collator(model_config.image_size, model_config.mask_size,
                                {name: list(ds.categories) for name, ds in self.sources.items()})
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.spent = 0.0  # fraction of the time budget used (see budget_spent)
        self.clock_from_step: int | None = None  # first step whose learning rate the time budget set
        self.images_seen = 0
        self._last_val: tuple[int, dict] | None = None  # (step, results) of the latest val evaluation
        self.wrapped: torch.nn.Module = ModelWithLoss(self.model, self.criterion)
        if distributed.is_distributed():
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.wrapped, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

    def set_mixed_precision(self, enabled: bool) -> None:
        """bfloat16 autocast of the training forward pass (True) or float32. On CPU, bfloat16 also
        runs the ViT's attention explicitly in the training forward pass: PyTorch's fused CPU attention
        is slower in bfloat16 (``python -m benchmarks.train_step``: a tiny-preset step ~10 % slower).
        Evaluation and inference keep timm's fused attention."""
        self.mixed_precision = enabled
        self.explicit_attention = enabled and self.device.type == "cpu"  # in the training forward only
        logger.info("mixed precision: %s", "bfloat16 autocast" if enabled else "off (float32)")

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_state(self) -> None:
        """A resumable state in ``output/last`` (written beside, then swapped in: never half-written)."""
        if distributed.rank() != 0:
            return
        staging = self.output / "last.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        save_checkpoint(self.model, staging, extra={"data": data_record(self.config.data)})
        torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                    "gradnorm": self.gradnorm.state_dict(), "history": self.history,
                    "train_seconds": self.train_seconds, "images_seen": self.images_seen,
                    "clock_from_step": self.clock_from_step,
                    "phrase_bank": None if self.criterion.phrase_bank is None else self.criterion.phrase_bank.state_dict(),
                    "text_config": self.model.config.text_config}, staging / STATE_FILE)
        final = self.output / "last"
        old = self.output / "last.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def try_resume(self) -> bool:
        state_dir = self.output / "last"
        if not (self.config.resume and (state_dir / STATE_FILE).is_file()):
            return False
        from safetensors.torch import load_file

        from objsearch.model.checkpoint import read_config

        saved, current = read_config(state_dir).to_dict(), self.model.config.to_dict()
        ignored = ("backbone_pretrained", "text_config")  # neither changes the architecture being resumed
        differing = sorted(k for k in current if saved.get(k) != current[k] and k not in ignored)
        if differing:
            raise ResumeMismatch(f"{state_dir} holds a run of another model (differs in {', '.join(differing)}): "
                                 "pass --resume false to start over, or another --output_dir")
        self.model.load_state_dict(load_file(str(state_dir / "model.safetensors")))
        state = torch.load(state_dir / STATE_FILE, map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradnorm.load_state_dict(state["gradnorm"])
        self.step, self.history = state["step"], state["history"]
        self.train_seconds, self.images_seen = state["train_seconds"], state["images_seen"]
        self.clock_from_step = state.get("clock_from_step")
        if self.criterion.phrase_bank is not None and state.get("phrase_bank"):
            self.criterion.phrase_bank.load_state_dict(state["phrase_bank"])
        logger.info("resumed from %s at step %d", state_dir, self.step)
        return True

    # ---- one step -------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict[str, float]:
        config = self.config
        images = self.model.normalize(batch["images"].to(self.device))
        targets = batch["targets"]
        extra, pairs = build_denoising_queries([t.boxes for t in targets], config.denoising_groups, config.box_noise)
        if extra is not None:
            extra = extra.to(self.device)
        warmup, steps = config.optim.warmup_steps, config.optim.steps
        factor = lr_factor(self.step, warmup, steps, self.spent)
        if self.clock_from_step is None and factor != lr_factor(self.step, warmup, steps):
            self.clock_from_step = self.step
            logger.warning("from step %d the time budget sets the learning rate: at this speed it ends the run near "
                           "step %d of %d, so the schedule depends on the machine's speed", self.step,
                           self.step / self.spent, steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        with (torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision),
              self.model.backbone.explicit_attention(self.explicit_attention)):
            terms = self.wrapped(images, targets, extra, max(1, config.denoising_groups), pairs)
        tasks = task_losses(terms, config.loss)
        diagnostics: dict[str, float] = {}
        # Every rank calls update (it all-reduces under DDP), even with fewer than two tasks present.
        if (config.gradnorm.enabled and self.step >= config.gradnorm.start_step
                and (self.step - config.gradnorm.start_step) % config.gradnorm.every == 0):
            diagnostics = self.gradnorm.update(tasks, self.model.decoder.layers[-1].norm3.weight)
        total = self.gradnorm.weighted_total(tasks) if config.gradnorm.enabled else sum(tasks.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at step {self.step}: { {k: float(v) for k, v in terms.items()} }")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
        self.optimizer.step()
        return {"loss": total.item(), **{k: v.item() for k, v in terms.items()}, **diagnostics}

    def budget_spent(self) -> float:
        """The fraction of ``optim.max_minutes`` used so far (0 without a budget). Under DDP it is the
        slowest rank's clock on every rank, so all ranks anneal alike and stop at the same step."""
        budget = self.config.optim.max_minutes * 60
        return distributed.max_over_ranks(self.train_seconds) / budget if budget > 0 else 0.0

    # ---- the run --------------------------------------------------------------------------------
    def loader(self) -> torch.utils.data.DataLoader:
        mixed = MixedDataset(self.sources)
        sampler = MixedBatchSampler(mixed.source_sizes, self.config.data.mix, self.config.optim.batch_size,
                                    num_batches=self.config.optim.steps - self.step, seed=self.config.seed,
                                    rank=distributed.rank(), world_size=distributed.world_size(),
                                    repeat_factors=self.repeat_factors())
        dataset = mixed
        if self.config.data.flip_probability > 0:
            sampler = FlipBatchSampler(sampler, self.config.data.flip_probability, seed=self.config.seed,
                                       rank=distributed.rank())
            dataset = FlippingDataset(mixed)
        sampler.set_epoch(self.step)  # a resumed run draws a fresh stream rather than replaying
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=self.collate,
                                           num_workers=self.config.data.workers)

    def repeat_factors(self) -> dict[str, np.ndarray]:
        """Per-image repeat factors of every source that lists its images' categories (empty when off)."""
        threshold = self.config.data.repeat_factor_threshold
        factors = {}
        for name, dataset in self.sources.items() if threshold > 0 else ():
            if callable(getattr(dataset, "image_category_ids", None)):
                factors[name] = image_repeat_factors(dataset.image_category_ids(), len(dataset.categories), threshold)
                logger.info("source %s: repeat factors up to %.2f, %.0f draws per pass of %d images", name,
                            factors[name].max(), factors[name].sum(), len(factors[name]))
        return factors

    def fit(self) -> dict[str, Any]:
        self.try_resume()
        self.output.mkdir(parents=True, exist_ok=True)
        config = self.config
        started = time.perf_counter() - self.train_seconds
        log_every = 20
        self.spent = self.budget_spent()
        finished = self.step >= config.optim.steps or self.spent >= 1.0
        batches = [] if finished else self.loader()  # a finished run resumes to its end
        for batch in batches:
            stats = self.train_step(batch)
            self.step += 1
            self.images_seen += len(batch["targets"]) * distributed.world_size()
            self.train_seconds = time.perf_counter() - started
            if self.step % log_every == 0 or self.step == 1:
                logger.info("step %d/%d %.0fs loss %.3f %s", self.step, config.optim.steps, self.train_seconds,
                            stats["loss"], " ".join([f"{k}={v:.3f}" for k, v in stats.items() if k != "loss" and "/" not in k]
                                                    + [f"w_{k}={v:.2f}" for k, v in self.gradnorm.weights.items()]))
            if config.eval_every and self.step % config.eval_every == 0 and self.step < config.optim.steps:
                self.record_evaluation("val")
            self.train_seconds = time.perf_counter() - started  # with the evaluation just run
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save_state()
            self.spent = self.budget_spent()
            if self.spent >= 1.0 and self.step < config.optim.steps:
                logger.warning("stopping at step %d of %d: the %.1f-minute budget is spent", self.step,
                               config.optim.steps, config.optim.max_minutes)
                break
        threshold = self.calibrated_score_threshold()  # before saving: the curve's last point is resumed too
        self.save_state()
        final = self.output / "final"
        extra = {"steps": self.step, "train_seconds": round(self.train_seconds, 1), "images_seen": self.images_seen,
                 "data": data_record(config.data)}
        if threshold is not None:
            extra["score_threshold"] = threshold
        if distributed.rank() == 0:
            save_checkpoint(self.model, final, extra=extra)
        result = self.record_evaluation("test", score_threshold=threshold)
        summary = {"steps": self.step, "train_seconds": self.train_seconds, "images_seen": self.images_seen,
                   "images_per_second": self.images_seen / max(self.train_seconds, 1e-9),
                   "lr_schedule_clock_from_step": self.clock_from_step,  # None: set by steps alone
                   "checkpoint": str(final), "test": result, "curve": self.history}
        if distributed.rank() == 0:
            (self.output / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        return summary

    def calibrated_score_threshold(self) -> float | None:
        """The store threshold of best detection F1 on the val split at the current weights (rank 0;
        None elsewhere, without a synthetic val split, or when nothing is found). Only thresholds >= the
        evaluation's AP_SCORE_THRESHOLD (0.05) can come out, since lower-scored detections are not
        evaluated. It evaluates val now (the learning curve's last point) unless the latest val
        evaluation was at this very step."""
        if self._last_val is None or self._last_val[0] != self.step:
            self.record_evaluation("val")
        best = self._last_val[1].get("best_f1_score_threshold") if self._last_val else None
        if best is None:
            return None
        logger.info("store threshold %.3f: detection precision %.3f, recall %.3f on the val split",
                    best["threshold"], best["precision"], best["recall"])
        return round(best["threshold"], 4)

    def record_evaluation(self, split: str, score_threshold: float | None = None) -> dict[str, Any]:
        """Evaluate on a synthetic split (rank 0 only), storing objects that score >= ``score_threshold``
        (None: the embedder's default) for the retrieval figures; val results go into the learning curve."""
        if distributed.rank() != 0 or SYNTHETIC not in self.config.data.mix:
            return {}
        from objsearch.embedders.objembed import ObjEmbedEmbedder
        from objsearch.evaluation import CocoSplit, evaluate_embedder

        paths = synthetic_paths(Path(self.config.data.synthetic_dir), split)
        coco_split = CocoSplit(paths["image_dir"], paths["instances_json"], paths["refs_json"])
        embedder = ObjEmbedEmbedder(self.model, version="training")
        if score_threshold is not None:
            embedder.score_threshold = score_threshold
        self.model.eval()
        try:
            results = evaluate_embedder(embedder, coco_split)
        finally:
            self.model.train()
        point = {"step": self.step, "minutes": round(self.train_seconds / 60, 2), **headline(results)}
        logger.info("%s evaluation: %s", split, point)
        if split == "val":  # one point per step: a finished run resumed evaluates its last step again
            self.history = [p for p in self.history if p["step"] != self.step] + [point]
            self._last_val = (self.step, results)
        return results


def headline(results: dict[str, Any]) -> dict[str, float]:
    """The few figures the learning curve tracks."""
    t2o = results.get("text_to_object", {})
    return {
        "box_AP": results.get("detection", {}).get("AP", float("nan")),
        "box_AP50": results.get("detection", {}).get("AP50", float("nan")),
        "agnostic_AP50": results.get("detection_class_agnostic", {}).get("AP50", float("nan")),
        "ranked_AP": results.get("detection_ranked_labels", {}).get("AP", float("nan")),
        "ranked_AP50": results.get("detection_ranked_labels", {}).get("AP50", float("nan")),
        "mask_AP": results.get("mask", {}).get("AP", float("nan")),
        "colour_shape_R@5": t2o.get("attribute", {}).get("R@5", float("nan")),
        "referring_R@1": t2o.get("referring", {}).get("R@1", float("nan")),
        "zero_shot_acc": results.get("zero_shot_accuracy", float("nan")),
        "caption_CIDEr": results.get("caption_cider", {}).get("CIDEr-D", float("nan")),
        "best_f1_threshold": (results.get("best_f1_score_threshold") or {}).get("threshold", float("nan")),
    }


def _tail_weights(dataset, power: float) -> torch.Tensor | None:
    counts = category_counts(dataset)
    if counts is None:
        logger.warning("source %s cannot count its categories: OHEM runs without tail weights", dataset.source)
        return None
    return tail_category_weights(counts, power=power)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
