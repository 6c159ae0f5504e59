"""The text encoder: a transformers BERT-family model, pooled, projected to the object-embedding space."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from objsearch.model.config import ObjEmbedConfig
from objsearch.model.sentence_encoder import MINILM_ID, packaged_minilm_dir

logger = logging.getLogger(__name__)


def resolve_text_source(name: str) -> str:
    """Where to load ``name`` from: the copy of all-MiniLM-L6-v2 shipped in a PyPI package when that is
    the model asked for and it is installed (this works offline), else the name itself (the hub or a dir)."""
    if name == MINILM_ID and packaged_minilm_dir() is not None:
        return str(packaged_minilm_dir())
    return name


class TextEncoder(nn.Module):
    """texts -> (N, E) embeddings in the object space.

    With ``config.text_config`` set (a checkpoint), the encoder is rebuilt from that config and its
    weights come from the checkpoint; otherwise ``from_pretrained(config.text_model)``. When the
    encoder is frozen its pooled outputs are cached per string: phrases repeat a lot in training.
    """

    def __init__(self, config: ObjEmbedConfig, tokenizer_dir: str | Path | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        if config.text_config is not None:
            hf_config = AutoConfig.for_model(**config.text_config)
            self.encoder = AutoModel.from_config(hf_config)
            # A checkpoint's config.json describes ObjEmbed, not a transformers model; transformers
            # peeks at it while finding the tokenizer class and warns. The tokenizer files are complete.
            verbosity = transformers_logging.get_verbosity()
            transformers_logging.set_verbosity_error()
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or resolve_text_source(config.text_model)))
            finally:
                transformers_logging.set_verbosity(verbosity)
        else:
            source = resolve_text_source(config.text_model)
            try:
                self.encoder = AutoModel.from_pretrained(source)
                self.tokenizer = AutoTokenizer.from_pretrained(source)
            except OSError as exc:  # transformers' "couldn't connect"/"not a valid model identifier", hub errors
                from objsearch.model.pretrained import short_reason, text_encoder_unavailable

                raise text_encoder_unavailable(config, short_reason(exc)) from exc
            config.text_config = self.encoder.config.to_dict()
        self.pooling = config.text_pooling
        self.max_length = config.text_max_length
        self.frozen = config.freeze_text
        if self.frozen:
            self.encoder.requires_grad_(False)
        hidden = int(self.encoder.config.hidden_size)
        self.projection = nn.Linear(hidden, config.embed_dim)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, hidden) pooled encoder outputs (before the projection)."""
        if not self.frozen:
            return self._pool(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with torch.no_grad():
                self._cache.update(zip(missing, self._pool(missing)))
        return torch.stack([self._cache[t] for t in texts]) if texts else self._pool([])

    def _pool(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.encoder.config.hidden_size, device=self.device)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        if self.frozen:
            self.encoder.eval()
        hidden = self.encoder(**batch).last_hidden_state  # (N, T, hidden)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def forward(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        embeddings = self.projection(self.pooled(texts))
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    encode_text = forward

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # a frozen encoder never uses dropout
        return self
