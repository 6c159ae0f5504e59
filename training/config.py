"""TrainConfig: one dataclass tree, JSON presets in ``training/presets/``, ``--key value`` overrides.

Dotted keys reach nested fields: ``--optim.lr 3e-4 --loss.giou 2 --model.num_queries 30``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class LossWeights:
    """Fixed coefficients of the loss terms inside each task; GradNorm balances the tasks themselves."""

    objectness: float = 2.0  # sigmoid focal loss of every query (DETR's class term)
    box_l1: float = 5.0  # L1 of matched normalised cxcywh boxes
    giou: float = 2.0  # 1 - generalised IoU of matched boxes
    quality: float = 1.0  # BCE of the predicted IoU against the real IoU
    align: float = 1.0  # object-phrase InfoNCE (in-batch + cross-image negatives)
    zeroshot: float = 1.0  # object vs category-name text embeddings
    mask_bce: float = 1.0
    mask_dice: float = 1.0
    caption: float = 1.0  # token cross-entropy of the caption head
    classify: float = 1.0  # cross-entropy of the linear classification head


#: Which loss terms make up each task (the unit GradNorm weights).
TASK_TERMS: dict[str, tuple[str, ...]] = {
    "detection": ("objectness", "box_l1", "giou", "quality"),
    "grounding": ("align", "zeroshot"),
    "mask": ("mask_bce", "mask_dice"),
    "caption": ("caption",),
    "classification": ("classify",),
}


@dataclass
class GradNormConfig:
    enabled: bool = True
    alpha: float = 1.5  # restoring force towards equal training rates (Chen et al. use 0.5-3)
    lr: float = 0.01  # learning rate of the task weights (Adam on their logs)
    min_weight: float = 0.5  # weights stay within [min_weight, max_weight]; they sum to the number of tasks
    max_weight: float = 2.0
    every: int = 1  # update the weights every N steps (each update costs one backward per task)
    #: First step GradNorm updates at; its L(0) are the losses of that step and the weights stay at 1
    #: before it. The very first losses reflect the initialisation (objectness falls 5x in 20 steps),
    #: and a task measured from them looks fast-learning and is held at min_weight.
    start_step: int = 0


@dataclass
class DataConfig:
    synthetic_dir: str = "runs/synthetic"  # generated here when missing
    synthetic_train: int = 2000
    synthetic_val: int = 100
    synthetic_test: int = 200
    synthetic_seed: int = 0
    #: Sources and their share of every batch; "synthetic" is the generated COCO-format set,
    #: "synthetic_refs" its referring expressions. Other names need a path in ``sources``.
    mix: dict[str, float] = field(default_factory=lambda: {"synthetic": 0.8, "synthetic_refs": 0.2})
    #: Extra sources: name -> {"format": "coco"|"lvis"|"refcoco"|"cc3m"|"imagenet", ...loader kwargs}.
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 0  # DataLoader workers (0: load in the training process)
    #: LVIS repeat-factor sampling: an image whose rarest category is in a fraction f < t of the
    #: images is drawn max(1, sqrt(t / f)) times as often (sources that list their images' categories). 0: off.
    repeat_factor_threshold: float = 0.0
    #: Chance that a training image is mirrored left to right (boxes, masks, and "left"/"right" in its
    #: phrases and caption with it; see training/data/augment.py), as DETR-family detectors train. 0: off.
    flip_probability: float = 0.5


@dataclass
class OptimConfig:
    lr: float = 4e-4
    backbone_lr: float = 4e-4  # ViT from scratch: same rate; lower it for a pretrained backbone
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 0.5
    batch_size: int = 16
    steps: int = 1400  # total optimisation steps
    #: Time budget in minutes (0: none): the run stops when it is spent, and the LR anneals towards the
    #: step it is projected to end at when that comes before ``steps`` (see engine.lr_factor).
    max_minutes: float = 0.0


@dataclass
class TrainConfig:
    preset: str = "tiny"  # ObjEmbed preset the model starts from
    model: dict[str, Any] = field(default_factory=dict)  # ObjEmbedConfig overrides
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    gradnorm: GradNormConfig = field(default_factory=GradNormConfig)
    tasks: list[str] = field(default_factory=lambda: list(TASK_TERMS))  # ablations drop tasks here
    denoising_groups: int = 3  # noised copies of the ground truth per image (0: no denoising)
    box_noise: float = 0.4  # DN-DETR box noise scale (fraction of width/height)
    ohem_keep: float = 0.7  # OHEM: fraction of hardest objects kept in the class losses
    ohem_tail_power: float = 0.5  # up-weighting of rare categories
    #: Alignment loss: each object is also contrasted with the last N distinct phrases of its source
    #: from earlier batches (cross-batch negatives; 0: in-batch negatives only). See training.phrase_bank.
    phrase_bank: int = 0
    output_dir: str = "runs/tiny"
    seed: int = 0
    device: str = ""  # "" = cuda when present, else cpu
    #: bfloat16 autocast of the forward pass and losses where the device runs bf16 natively (CUDA, and
    #: CPUs with AVX512-BF16 or AMX; see training.engine.fast_bfloat16); elsewhere, and when false, float32.
    amp: bool = True
    eval_every: int = 350  # steps between evaluations on the val split (0: only at the end)
    checkpoint_every: int = 350  # steps between resumable checkpoints
    resume: bool = True  # continue from output_dir/last when it exists

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown config key {prefix + key!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            _apply(current, value, prefix + key + ".")
        elif isinstance(current, dict) and isinstance(value, dict):  # free-form maps merge
            setattr(obj, key, {**current, **{k: _parse_loose(v) for k, v in value.items()}})
        else:
            setattr(obj, key, _coerce(value, current, prefix + key))


def _coerce(value: Any, current: Any, key: str) -> Any:
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON's 27 for a float field stays a float (later overrides parse as float)
    if not isinstance(value, str) or isinstance(current, str):
        return value
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--{key} expects true/false, got {value!r}")
    if isinstance(current, (int, float)):
        try:
            return type(current)(value)
        except ValueError:
            raise ValueError(f"--{key} expects {type(current).__name__}, got {value!r}") from None
    try:
        return json.loads(value)  # lists and dicts as JSON
    except json.JSONDecodeError:
        raise ValueError(f"--{key} expects JSON here (a list or object), got {value!r}") from None


def _parse_loose(value: Any) -> Any:
    """A command-line string as JSON when it parses (numbers, lists, true), else the string itself."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def load_config(preset_file: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults <- a JSON preset file <- ``--dotted.key value`` pairs; ValueError on any unknown key."""
    config = TrainConfig()
    if preset_file is not None:
        path = Path(preset_file)
        if not path.is_file() and (PRESET_DIR / f"{preset_file}.json").is_file():
            path = PRESET_DIR / f"{preset_file}.json"
        _apply(config, json.loads(path.read_text()))
    pairs = list(overrides)
    if len(pairs) % 2:
        raise ValueError(f"overrides come in '--key value' pairs; {pairs[-1]!r} has no value")
    for flag, value in zip(pairs[::2], pairs[1::2]):
        if not flag.startswith("--"):
            raise ValueError(f"expected --key, got {flag!r}")
        nested: dict[str, Any] = {}
        cursor = nested
        parts = flag[2:].replace("-", "_").split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        _apply(config, nested)
    unknown_tasks = set(config.tasks) - set(TASK_TERMS)
    if unknown_tasks:
        raise ValueError(f"unknown tasks {sorted(unknown_tasks)}; known: {', '.join(TASK_TERMS)}")
    for key, value, least in (("gradnorm.every", config.gradnorm.every, 1),
                              ("gradnorm.start_step", config.gradnorm.start_step, 0),
                              ("phrase_bank", config.phrase_bank, 0),
                              ("data.repeat_factor_threshold", config.data.repeat_factor_threshold, 0)):
        if value < least:
            raise ValueError(f"{key} must be >= {least}, got {value}")
    if not 0 <= config.data.flip_probability <= 1:
        raise ValueError(f"data.flip_probability must be in [0, 1], got {config.data.flip_probability}")
    return config
