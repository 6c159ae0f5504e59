"""The DETR-style decoder: anchor-box queries, iterative box refinement, and room for denoising queries.

Plain DETR converges slowly; this decoder uses the three remedies that matter on a CPU budget:
- **anchor queries** (DAB-DETR): each query owns a 4-d anchor box; its positional query is an MLP of
  the anchor's sine encoding, so cross-attention knows where to look from the first step;
- **iterative box refinement** (Deformable DETR): every layer predicts a delta in logit space and the
  refined, detached box becomes the next layer's anchor;
- **query denoising** (DN-DETR): noised ground-truth boxes are added as extra queries that must
  reconstruct their box; the caller passes them in with an attention mask that hides them from the
  matching queries (see ``training.denoising``).

Boxes inside the model are normalised (cx, cy, w, h) in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def sine_encoding(coords: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """(..., K) coordinates in [0, 1] -> (..., K * num_feats) interleaved sin/cos features."""
    dim_t = torch.arange(num_feats // 2, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * dim_t / num_feats)
    scaled = coords[..., None] * (2 * math.pi) / dim_t  # (..., K, num_feats/2)
    encoded = torch.stack([scaled.sin(), scaled.cos()], dim=-1).flatten(-2)  # (..., K, num_feats)
    return encoded.flatten(-2)


def grid_positions(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """(H*W, dim) sine encoding of the centre of each feature-map cell (x then y halves)."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)
    return sine_encoding(coords, dim // 2)


class MLP(nn.Module):
    """A few linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class DecoderLayer(nn.Module):
    """Self-attention among queries, cross-attention to image features, FFN (post-norm, like DETR)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, content: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, self_attn_mask: torch.Tensor | None) -> torch.Tensor:
        q = k = content + query_pos
        content = self.norm1(content + self.dropout(self.self_attn(q, k, content, attn_mask=self_attn_mask)[0]))
        attended = self.cross_attn(content + query_pos, memory + memory_pos, memory)[0]
        content = self.norm2(content + self.dropout(attended))
        return self.norm3(content + self.dropout(self.ffn(content)))


class AnchorDecoder(nn.Module):
    """Decodes object queries into per-layer features and refined boxes.

    forward(memory (B, HW, D), memory_pos (HW, D), anchors (B, Q, 4) cxcywh in [0, 1],
            content (B, Q, D), self_attn_mask (Q, Q) bool or None: True = may NOT attend)
    -> dict:
        "features": (L, B, Q, D) normalised query features after each of the L layers,
        "boxes":    (L, B, Q, 4) refined boxes after each layer, cxcywh in [0, 1].
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(num_layers))
        self.anchor_to_pos = MLP(2 * dim, dim, dim, 2)  # sine(anchor) -> positional query
        self.box_heads = nn.ModuleList(MLP(dim, dim, 4, 3) for _ in range(num_layers))
        for head in self.box_heads:  # start as the identity refinement
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        self.dim = dim

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor, anchors: torch.Tensor,
                content: torch.Tensor, self_attn_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features, boxes = [], []
        reference = anchors
        memory_pos = memory_pos.unsqueeze(0)
        for layer, box_head in zip(self.layers, self.box_heads):
            query_pos = self.anchor_to_pos(sine_encoding(reference, self.dim // 2))
            content = layer(content, query_pos, memory, memory_pos, self_attn_mask)
            refined = (inverse_sigmoid(reference) + box_head(content)).sigmoid()
            features.append(content)
            boxes.append(refined)
            reference = refined.detach()  # gradients do not flow across layers through the boxes
        return {"features": torch.stack(features), "boxes": torch.stack(boxes)}
