"""The per-object heads on top of the decoder: objectness, quality, embedding, mask, classification, caption.

Shapes: B images, Q queries, D decoder width, E embed_dim, M mask side, V vocabulary size.
Boxes are normalised (cx, cy, w, h) in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from objsearch.model.roi import roi_align_grid
from objsearch.model.transformer import MLP, sine_encoding


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


class EmbeddingHead(nn.Module):
    """query features (B, Q, D) + boxes (B, Q, 4) + feature map (B, C, H, W) [+ mask logits (B, Q, M, M)]
    -> (B, Q, E) L2-normalised.

    Mixes views of an object, as the published ObjEmbed does: the decoder's query feature, the
    RoIAlign-pooled feature-map content inside the predicted box, and a sine encoding of the box.
    With ``mask_pooling``, a fourth view: the feature map averaged under the query's own predicted
    mask (the mask head's sigmoid, area-resized to the feature grid, gradient stopped), i.e. the
    object's visible pixels without the occluders and background its box also holds (the mask
    pooling of open-vocabulary segmenters such as FC-CLIP).
    """

    def __init__(self, dim: int, feature_channels: int, embed_dim: int, roi_size: int,
                 sampling_ratio: int, mask_pooling: bool) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.sampling_ratio = sampling_ratio
        self.roi_proj = nn.Linear(feature_channels * roi_size * roi_size, dim)
        self.box_proj = nn.Linear(4 * (dim // 4), dim)
        self.mask_proj = nn.Linear(feature_channels, dim) if mask_pooling else None
        self.mlp = MLP((4 if mask_pooling else 3) * dim, 2 * dim, embed_dim, 2)
        self.dim = dim

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, feature_map: torch.Tensor,
                mask_logits: torch.Tensor | None = None) -> torch.Tensor:
        batch, queries, _ = features.shape
        grid = feature_map.shape[-1]
        xyxy = cxcywh_to_xyxy(boxes.detach()).clamp(0, 1) * grid  # feature-map cells
        rois = self.pool(feature_map, xyxy)  # (B*Q, C, R, R)
        views = [features, self.roi_proj(rois.flatten(1)).view(batch, queries, self.dim),
                 self.box_proj(sine_encoding(boxes.detach(), self.dim // 4))]
        if self.mask_proj is not None:
            if mask_logits is None:
                raise ValueError("this embedding head pools under the predicted masks: pass mask_logits")
            views.append(self.mask_proj(mask_pool(feature_map, mask_logits.detach())))
        return F.normalize(self.mlp(torch.cat(views, dim=-1)), dim=-1)

    def pool(self, feature_map: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """RoIAlign of (B, Q, 4) boxes in feature-map cells -> (B*Q, C, R, R). Both branches compute the
        same function: on CPU one batched grid_sample (faster there), elsewhere torchvision's kernel
        (which does not hold every sample in memory, as the grid_sample version does)."""
        if feature_map.device.type == "cpu":
            return roi_align_grid(feature_map, boxes_xyxy, self.roi_size, self.sampling_ratio)
        return roi_align(feature_map, list(boxes_xyxy.unbind(0)), output_size=self.roi_size, aligned=True,
                         sampling_ratio=self.sampling_ratio)


def mask_pool(feature_map: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """The feature map averaged under each query's soft mask: (B, C, H, W) features and (B, Q, M, M)
    mask logits over the same square input -> (B, Q, C). The mask probabilities are area-resized to
    H x W and normalised to sum to 1 per query (a query with an all-zero mask gets zeros)."""
    height, width = feature_map.shape[-2:]
    batch, queries = mask_logits.shape[:2]
    weights = F.interpolate(mask_logits.flatten(0, 1)[:, None].float().sigmoid(), size=(height, width), mode="area")
    weights = weights.view(batch, queries, height * width)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-6)
    return torch.einsum("bqn,bcn->bqc", weights.to(feature_map.dtype), feature_map.flatten(2))


class MaskHead(nn.Module):
    """Per-query masks: a query's mask embedding dotted with per-pixel features.

    forward(query features (B, Q, D), feature map (B, C, H, W)) -> mask logits (B, Q, M, M) over the
    whole square input (M = mask_size).
    """

    def __init__(self, dim: int, feature_channels: int, mask_size: int) -> None:
        super().__init__()
        self.mask_size = mask_size
        self.pixel_proj = nn.Conv2d(feature_channels, dim, 1)
        self.pixel_refine = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(8, dim), nn.ReLU(), nn.Conv2d(dim, dim, 1)
        )
        self.query_proj = MLP(dim, dim, dim, 3)

    def pixel_features(self, feature_map: torch.Tensor) -> torch.Tensor:
        pixels = F.interpolate(self.pixel_proj(feature_map), size=self.mask_size, mode="bilinear", align_corners=False)
        return self.pixel_refine(pixels)

    def forward(self, features: torch.Tensor, feature_map: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bqd,bdhw->bqhw", self.query_proj(features), self.pixel_features(feature_map))


class CaptionHead(nn.Module):
    """A small autoregressive transformer decoder that describes an object from its embedding.

    Uses the text tokenizer's vocabulary (V tokens); the object embedding (N, E) becomes a short
    prefix memory the decoder cross-attends to. Token embeddings and output logits share weights.
    """

    def __init__(self, embed_dim: int, dim: int, vocab_size: int, num_layers: int, max_length: int,
                 heads: int = 4) -> None:
        super().__init__()
        self.prefix_tokens = 4
        self.prefix = nn.Linear(embed_dim, self.prefix_tokens * dim)
        self.token_embedding = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # tied output: keep initial logits small
        self.position_embedding = nn.Parameter(torch.zeros(max_length + 2, dim))
        nn.init.normal_(self.position_embedding, std=0.02)
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(dim)
        self.dim = dim
        self.max_length = max_length

    def hidden(self, object_embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, E) embeddings + (N, T) input token ids -> (N, T, D) causal decoder states."""
        length = tokens.shape[1]
        memory = self.prefix(object_embeddings).view(-1, self.prefix_tokens, self.dim)
        x = self.token_embedding(tokens) + self.position_embedding[:length]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tokens.device), diagonal=1)
        return self.norm(self.decoder(x, memory, tgt_mask=causal))

    def vocabulary_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) decoder states -> (..., V) logits (the tied token embeddings; the head's largest product)."""
        return hidden @ self.token_embedding.weight.T

    def forward(self, object_embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, E) embeddings + (N, T) input token ids -> (N, T, V) next-token logits (causal)."""
        return self.vocabulary_logits(self.hidden(object_embeddings, tokens))

    def next_token_logits(self, object_embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, V) logits of the token after ``tokens``: only the last position meets the vocabulary."""
        return self.vocabulary_logits(self.hidden(object_embeddings, tokens)[:, -1])

    @torch.no_grad()
    def generate(self, object_embeddings: torch.Tensor, start_id: int, end_id: int,
                 beam_size: int = 1, max_length: int | None = None) -> list[list[int]]:
        """Token ids (without start/end) per object: greedy when beam_size == 1, else beam search
        with length-normalised log-probability."""
        max_length = max_length or self.max_length
        return [self._beam(e[None], start_id, end_id, beam_size, max_length) for e in object_embeddings] \
            if beam_size > 1 else self._greedy(object_embeddings, start_id, end_id, max_length)

    def _greedy(self, embeddings: torch.Tensor, start_id: int, end_id: int, max_length: int) -> list[list[int]]:
        tokens = torch.full((len(embeddings), 1), start_id, dtype=torch.long, device=embeddings.device)
        finished = torch.zeros(len(embeddings), dtype=torch.bool, device=embeddings.device)
        for _ in range(max_length):
            next_token = self.next_token_logits(embeddings, tokens).argmax(-1)
            next_token = torch.where(finished, torch.full_like(next_token, end_id), next_token)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            finished |= next_token == end_id
            if finished.all():
                break
        return [_strip(row.tolist()[1:], end_id) for row in tokens]

    def _beam(self, embedding: torch.Tensor, start_id: int, end_id: int, beam_size: int,
              max_length: int) -> list[int]:
        beams: list[tuple[list[int], float]] = [([start_id], 0.0)]
        done: list[tuple[list[int], float]] = []
        for _ in range(max_length):
            tokens = torch.tensor([b[0] for b in beams], device=embedding.device)
            log_probs = self.next_token_logits(embedding.expand(len(beams), -1), tokens).log_softmax(-1)
            top = log_probs.topk(beam_size, dim=-1)
            candidates = [
                (beams[i][0] + [int(t)], beams[i][1] + float(lp))
                for i in range(len(beams))
                for lp, t in zip(top.values[i], top.indices[i])
            ]
            candidates.sort(key=lambda c: c[1], reverse=True)
            beams = []
            for seq, score in candidates:
                (done if seq[-1] == end_id else beams).append((seq, score))
                if len(beams) == beam_size:
                    break
            # Stop once no live beam can still beat the best finished one (log-probs only fall).
            best_done = max((score / math.sqrt(len(seq)) for seq, score in done), default=-math.inf)
            if not beams or max(score for _, score in beams) < best_done * math.sqrt(max_length + 1):
                break
        pool = done or beams
        best = max(pool, key=lambda c: c[1] / math.sqrt(len(c[0])))
        return _strip(best[0][1:], end_id)


def _strip(ids: list[int], end_id: int) -> list[int]:
    return ids[: ids.index(end_id)] if end_id in ids else ids
