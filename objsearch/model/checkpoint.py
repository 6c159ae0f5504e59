"""Self-contained checkpoint directories: ``config.json`` + ``model.safetensors`` + tokenizer files.

The layout follows ``save_pretrained`` / ``from_pretrained`` so a checkpoint can be pushed to and
pulled from a model hub unchanged. The config alone rebuilds the architecture (no network needed).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from objsearch.errors import UnknownModel
from objsearch.model.config import ObjEmbedConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_TYPE = "objembed"


def save_checkpoint(model, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` (an ObjEmbed) to ``directory``; files are written to temporary names and renamed,
    so an interrupted save never leaves a half-written checkpoint under the final names."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_weights = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format": "pt", "model_type": MODEL_TYPE})
    model.text.tokenizer.save_pretrained(str(directory))
    payload = {"model_type": MODEL_TYPE, **model.config.to_dict(), **({"training": extra} if extra else {})}
    tmp_config = directory / (CONFIG_FILE + ".tmp")
    tmp_config.write_text(json.dumps(payload, indent=2))
    os.replace(tmp_weights, directory / WEIGHTS_FILE)
    os.replace(tmp_config, directory / CONFIG_FILE)
    logger.info("checkpoint written to %s", directory)
    return directory


def read_config(directory: str | Path) -> ObjEmbedConfig:
    path = Path(directory) / CONFIG_FILE
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UnknownModel(f"{path} is not a readable ObjEmbed config: {exc}") from exc
    if payload.pop("model_type", None) != MODEL_TYPE:
        raise UnknownModel(f"{path} is not an ObjEmbed checkpoint (model_type != {MODEL_TYPE!r})")
    payload.pop("training", None)
    payload.setdefault("mask_pooling", False)  # written before the embedding head pooled under masks
    return ObjEmbedConfig.from_dict(payload)


def read_training_info(directory: str | Path) -> dict:
    """The ``training`` section of a checkpoint's config.json (steps, time, the calibrated
    ``score_threshold``, ...); empty for a checkpoint saved without one."""
    payload = json.loads((Path(directory) / CONFIG_FILE).read_text())
    info = payload.get("training")
    return dict(info) if isinstance(info, dict) else {}


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model from ``config.json`` and load ``model.safetensors``; nothing is downloaded."""
    from safetensors.torch import load_file

    from objsearch.model.objembed import ObjEmbed

    directory = Path(directory)
    config = read_config(directory)
    config.backbone_pretrained = False  # the weights come from the checkpoint
    model = ObjEmbed(config, tokenizer_dir=str(directory))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise UnknownModel(f"{weights} is missing")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise UnknownModel(f"{weights} is not a readable safetensors file ({exc}); re-save or re-download it") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UnknownModel(f"{weights} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval()
