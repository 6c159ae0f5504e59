"""The sentence encoder on ONNX Runtime: a text query without torch or transformers.

Loading torch, transformers and the MiniLM weights is most of a cold ``objsearch query``. The same
weights exported to ONNX once (``export``, with torch, at first use) run on ONNX Runtime with the
``tokenizers`` library reading the model's own ``tokenizer.json``. An export is kept only when its
embeddings match the torch model's on PROBE_TEXTS to ``MIN_COSINE``; it is cached under
``cache_dir()`` by the weights' size and modification time, written durably (temp + rename).
Anything that fails here (no onnxruntime, an unwritable cache, a mismatch) leaves the caller on
the torch encoder, with a warning.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from objsearch.store.layout import durable_write

logger = logging.getLogger(__name__)

EXPORT_VERSION = "1"  # raise when ``export`` or the checks change: older cached exports are then not used
MAX_TOKENS = 128  # as the torch path truncates
MIN_COSINE = 1 - 1e-4
PROBE_TEXTS = ("a dog", "A Red UMBRELLA on the Beach", "café crème, naïve Zoë", "赤い傘", "a red umbrella on the beach", "person riding a horse", "t-shirt", "an hourglass",
               "a small yellow star next to a large blue square, seen from above", "",
               "a brown dog " * 60)  # past MAX_TOKENS: truncated as torch truncates


def cache_dir() -> Path:
    """``$OBJSEARCH_CACHE``, else ``$XDG_CACHE_HOME/objsearch``, else ``~/.cache/objsearch``."""
    explicit = os.environ.get("OBJSEARCH_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "objsearch"


def onnx_path_for(model_dir: Path) -> Path:
    """Where the export of the model in ``model_dir`` is cached: a new name when its weights, config
    or tokenizer change, or the way it is exported (EXPORT_VERSION)."""
    parts = [EXPORT_VERSION, str(model_dir.resolve())]
    for name in ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json"):
        if (model_dir / name).is_file():
            stat = (model_dir / name).stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return cache_dir() / "onnx" / f"{model_dir.name}-{key}.onnx"


class OnnxTextModel:
    """texts -> (N, dim) float32 L2-normalised mean-pooled embeddings, on ONNX Runtime."""

    def __init__(self, onnx_path: Path, tokenizer_json: Path) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(list(texts))
        feeds = {"input_ids": np.array([e.ids for e in encoded], np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
                 "token_type_ids": np.array([e.type_ids for e in encoded], np.int64)}
        hidden = self.session.run(None, feeds)[0]  # (B, T, dim)
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_or_export(model_dir: Path, torch_model) -> OnnxTextModel | None:
    """The ONNX model of the weights in ``model_dir``, exported and checked at first use against
    ``torch_model()`` (the torch encoder, built only when an export is needed). None when ONNX
    cannot serve these weights here: a warning says why once, and a failed export is remembered
    (``<name>.failed`` beside it) so that later starts do not try again."""
    tokenizer_json = model_dir / "tokenizer.json"
    missing = [name for name in ("onnxruntime", "tokenizers") if importlib.util.find_spec(name) is None]
    if missing:
        logger.warning("text encoder on torch: %s not installed", " and ".join(missing))
        return None
    if not tokenizer_json.is_file():
        return None
    target = onnx_path_for(model_dir)
    failed = target.with_suffix(".failed")
    if target.is_file():
        try:
            return OnnxTextModel(target, tokenizer_json)
        except Exception as exc:  # a damaged cache file: export it again
            logger.warning("cached ONNX text model %s unusable (%s); exporting again", target, exc)
    elif failed.is_file():
        logger.info("text encoder on torch: exporting it to ONNX failed before (%s)", failed)
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning("text encoder on torch: no cache folder for its ONNX export (%s)", exc.strerror or exc)
        return None
    try:
        durable_write(target, lambda tmp: _export_checked(model_dir, Path(tmp), torch_model()))
        return OnnxTextModel(target, tokenizer_json)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.warning("text encoder on torch: exporting it to ONNX failed (%s)", reason)
        try:
            failed.write_text(reason + "\n")
        except OSError:
            pass
        return None


def _export_checked(model_dir: Path, out: Path, torch_encode) -> None:
    """Export to ``out`` and raise unless it matches ``torch_encode`` on PROBE_TEXTS (the file is
    published by the caller only after this returns)."""
    export(model_dir, out)
    model = OnnxTextModel(out, model_dir / "tokenizer.json")
    cosine = float((model(PROBE_TEXTS) * torch_encode(list(PROBE_TEXTS))).sum(axis=1).min())
    if cosine < MIN_COSINE:
        raise ValueError(f"its ONNX export differs from torch (cosine {cosine:.6f} < {MIN_COSINE:.6f})")
    logger.info("text encoder exported to ONNX (cosine to torch >= %.7f)", cosine)


def export(model_dir: Path, out: Path) -> None:
    """Write the transformer of ``model_dir`` as ONNX to ``out`` (inputs: input_ids,
    attention_mask, token_type_ids, (B, T) int64; output: the last hidden state (B, T, dim))."""
    import torch
    from transformers import AutoModel

    class LastHidden(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    example = torch.ones((1, 4), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on indexing and constant folding
        torch.onnx.export(LastHidden(model), (example, example, torch.zeros_like(example)), str(out), input_names=names,
                          output_names=["hidden"], dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "hidden"]},
                          opset_version=17, dynamo=False)
