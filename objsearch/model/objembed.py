"""ObjEmbed: one backbone, one decoder, and one L2-normalised embedding per object for every task."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from objsearch.model.backbone import ViTBackbone
from objsearch.model.config import ObjEmbedConfig
from objsearch.model.heads import CaptionHead, EmbeddingHead, MaskHead
from objsearch.model.text import TextEncoder
from objsearch.model.transformer import (
    MLP,
    AnchorDecoder,
    grid_positions,
    inverse_sigmoid,
)


def extra_query_mask(num_queries: int, num_extra: int, groups: int, device: torch.device) -> torch.Tensor:
    """(Q + K, Q + K) bool self-attention mask, True = may not attend.

    The Q matching queries never see the K extra queries (noised ground truth must not leak into
    matching); the extra queries form ``groups`` equal groups that see the matching queries and their
    own group only.
    """
    total = num_queries + num_extra
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    if num_extra == 0:
        return mask
    if num_extra % groups:
        raise ValueError(f"{num_extra} extra queries do not split into {groups} groups")
    size = num_extra // groups
    mask[:num_queries, num_queries:] = True
    group = torch.arange(num_extra, device=device) // size
    mask[num_queries:, num_queries:] = group[:, None] != group[None, :]
    return mask


class ObjEmbed(nn.Module):
    """The model. Build it with ``ObjEmbed(config)``; load a checkpoint with
    ``objsearch.model.checkpoint.load_checkpoint``.

    forward(images (B, 3, S, S) normalised, extra_boxes (B, K, 4) cxcywh in [0, 1] or None,
            extra_groups int) -> dict, L = decoder layers, Q = num_queries:
        "boxes":        (L, B, Q, 4) predicted boxes after each layer, cxcywh in [0, 1]
        "objectness":   (L, B, Q) logits (sigmoid = probability the query is an object)
        "quality":      (B, Q) logits of the predicted IoU with the object (last layer)
        "embeddings":   (B, Q, E) L2-normalised object embeddings (last layer)
        "mask_logits":  (B, Q, M, M) logits over the whole square input
        "class_logits": (B, Q, C) logits over ``config.categories`` (absent when C = 0)
        "proposals":    {"boxes": (B, HW, 4), "objectness": (B, HW)}: the dense per-cell proposals
                        whose top Q (by objectness) became the queries' anchors
        "extra":        the same keys for the K extra queries (box queries: denoising in training,
                        given regions at inference), present only when extra_boxes is given
    """

    def __init__(self, config: ObjEmbedConfig, tokenizer_dir: str | None = None) -> None:
        super().__init__()
        if config.num_queries > config.feature_size ** 2:
            raise ValueError(f"num_queries {config.num_queries} exceeds the {config.feature_size ** 2} feature-map "
                             "cells the queries are selected from")
        self.config = config
        dim = config.hidden_dim
        self.backbone = ViTBackbone(config)
        channels = self.backbone.num_channels
        self.input_proj = nn.Conv2d(channels, dim, 1)
        self.decoder = AnchorDecoder(dim, config.decoder_heads, config.decoder_ffn_dim, config.decoder_layers,
                                     config.dropout)
        self.query_content = nn.Embedding(config.num_queries, dim)
        self.box_query_content = nn.Parameter(torch.zeros(dim))  # content of given-box queries
        self.objectness = nn.Linear(dim, 1)
        nn.init.constant_(self.objectness.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior 0.01
        # Query selection (two-stage Deformable DETR / DINO): every feature-map cell proposes a box
        # around itself; the Q most object-like proposals become the decoder's anchors.
        self.proposal_norm = nn.LayerNorm(dim)
        self.proposal_box = MLP(dim, dim, 4, 3)
        nn.init.zeros_(self.proposal_box.layers[-1].weight)
        nn.init.zeros_(self.proposal_box.layers[-1].bias)
        self.proposal_objectness = nn.Linear(dim, 1)
        nn.init.constant_(self.proposal_objectness.bias, -math.log((1 - 0.01) / 0.01))
        self.quality = nn.Linear(dim, 1)
        self.embedding_head = EmbeddingHead(dim, channels, config.embed_dim, config.roi_size, config.roi_sampling_ratio,
                                            mask_pooling=config.mask_pooling)
        self.mask_head = MaskHead(dim, channels, config.mask_size)
        self.classifier = nn.Linear(config.embed_dim, len(config.categories)) if config.categories else None
        self.text = TextEncoder(config, tokenizer_dir)
        tokenizer = self.text.tokenizer
        self.caption_head = CaptionHead(config.embed_dim, dim, len(tokenizer), config.caption_layers,
                                        config.caption_max_length)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.query_content.weight.device

    def propose(self, memory: torch.Tensor, grid: int) -> dict[str, torch.Tensor]:
        """Dense proposals, one per feature-map cell: (B, HW, 4) cxcywh boxes, each a refinement of a
        cell-centred box of side 2 cells, and (B, HW) objectness logits."""
        cells = (torch.arange(grid, device=memory.device, dtype=torch.float32) + 0.5) / grid
        cy, cx = torch.meshgrid(cells, cells, indexing="ij")
        side = torch.full_like(cx, 2.0 / grid)
        cell_boxes = inverse_sigmoid(torch.stack([cx, cy, side, side], dim=-1).view(1, -1, 4))
        hidden = self.proposal_norm(memory)
        return {"boxes": (cell_boxes + self.proposal_box(hidden)).sigmoid(),
                "objectness": self.proposal_objectness(hidden).squeeze(-1)}

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 or [0, 255] floats -> the backbone's normalised input."""
        return (images_uint8.float() / 255.0 - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor, extra_boxes: torch.Tensor | None = None,
                extra_groups: int = 1) -> dict:
        feature_map = self.backbone(images)  # (B, C, H, W)
        batch = feature_map.shape[0]
        memory = self.input_proj(feature_map).flatten(2).transpose(1, 2)  # (B, HW, D)
        memory_pos = grid_positions(feature_map.shape[-2], feature_map.shape[-1], self.config.hidden_dim,
                                    feature_map.device)
        proposals = self.propose(memory, feature_map.shape[-1])
        top = proposals["objectness"].topk(self.config.num_queries, dim=1).indices  # (B, Q)
        anchors = torch.gather(proposals["boxes"], 1, top[..., None].expand(-1, -1, 4)).detach()
        content = self.query_content.weight.unsqueeze(0).expand(batch, -1, -1)
        num_extra = 0
        if extra_boxes is not None and extra_boxes.shape[1] > 0:
            num_extra = extra_boxes.shape[1]
            anchors = torch.cat([anchors, extra_boxes.clamp(1e-4, 1 - 1e-4)], dim=1)
            content = torch.cat([content, self.box_query_content.expand(batch, num_extra, -1)], dim=1)
        mask = extra_query_mask(self.config.num_queries, num_extra, extra_groups, feature_map.device)
        decoded = self.decoder(memory, memory_pos, anchors, content, mask if num_extra else None)
        outputs = self._heads(decoded["features"], decoded["boxes"], feature_map)
        outputs["proposals"] = proposals
        if not num_extra:
            return outputs
        q = self.config.num_queries
        per_query = {k: v for k, v in outputs.items() if k != "proposals"}
        main = {k: (v[:, :, :q] if k in ("boxes", "objectness") else v[:, :q]) for k, v in per_query.items()}
        main["extra"] = {k: (v[:, :, q:] if k in ("boxes", "objectness") else v[:, q:]) for k, v in per_query.items()}
        main["proposals"] = proposals
        return main

    def _heads(self, features: torch.Tensor, boxes: torch.Tensor, feature_map: torch.Tensor) -> dict:
        last, last_boxes = features[-1], boxes[-1]
        mask_logits = self.mask_head(last, feature_map)
        embeddings = self.embedding_head(last, last_boxes, feature_map, mask_logits)
        outputs = {
            "boxes": boxes,
            "objectness": self.objectness(features).squeeze(-1),
            "quality": self.quality(last).squeeze(-1),
            "embeddings": embeddings,
            "mask_logits": mask_logits,
        }
        if self.classifier is not None:
            outputs["class_logits"] = self.classify(embeddings)
        return outputs

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(..., E) unit embeddings -> (..., C) logits over ``config.categories``.

        A cosine classifier: each category's weight row is L2-normalised and the cosine is scaled by
        the object-text temperature, so the head works in the same geometry as zero-shot
        classification. A plain linear layer over unit vectors starts with logits near 0 and needs
        its weight norm to grow ~10x before it can be confident; it learned so slowly that GradNorm
        gave it the largest weight and starved the grounding task (measured: its loss was still 1.0
        at the end of the default run, against 0.15 for zero-shot).
        """
        prototypes = F.normalize(self.classifier.weight, dim=-1)
        return self.similarity_scale() * embeddings @ prototypes.T + self.classifier.bias

    def encode_text(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """(N, E) text embeddings in the object space."""
        return self.text(texts, normalize=normalize)

    def similarity(self, object_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Scaled cosine logits (..., N_obj) x (N_text, E) -> (..., N_text)."""
        return self.similarity_scale() * object_embeddings @ text_embeddings.T

    def similarity_scale(self) -> torch.Tensor:
        """The trained inverse temperature of object-text cosines (at most 100, as in CLIP)."""
        return self.logit_scale.exp().clamp(max=100)
