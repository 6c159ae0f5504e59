"""ObjEmbedConfig: everything needed to rebuild an ObjEmbed model, saved inside every checkpoint.

Presets are data (``PRESETS``): ``tiny`` trains on a CPU in minutes, ``base`` is ViT-B/16 + BERT-base,
``large`` is the paper's ViT-L/16 + BERT-Large with a 512-d object embedding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ObjEmbedConfig:
    # --- image encoder (timm) ---
    backbone: str = "vit_tiny_patch16_224"  # any timm ViT name
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides, e.g. depth, patch_size
    backbone_pretrained: bool = False  # timm pretrained=True (needs the model hub; off in tests/offline)
    conv_stem: bool = False  # replace the patchify conv by a stride-p conv stem (Xiao et al. 2021)
    conv_stem_blocks: int = 0  # residual blocks after each stride-2 stem convolution
    image_size: int = 128  # square input side in pixels; images are letterboxed to it
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # --- text encoder (transformers) ---
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"  # AutoModel name or local dir
    text_pooling: str = "mean"  # "mean" over tokens or "cls"
    text_max_length: int = 32  # tokens per phrase
    freeze_text: bool = True  # keep the text encoder fixed, train only its projection
    text_config: dict[str, Any] | None = None  # the encoder's HF config, filled in when built
    # --- detection transformer ---
    hidden_dim: int = 128  # decoder width
    num_queries: int = 20  # learned anchor queries per image
    decoder_layers: int = 4
    decoder_heads: int = 4
    decoder_ffn_dim: int = 512
    dropout: float = 0.0
    # --- heads ---
    embed_dim: int = 512  # the object embedding stored in the index
    roi_size: int = 4  # RoIAlign output side for the embedding head
    roi_sampling_ratio: int = 2  # RoIAlign samples per output cell along each axis (Mask R-CNN's 2 x 2)
    mask_pooling: bool = True  # the embedding also averages the features under the query's predicted mask
    mask_size: int = 32  # side of the mask logits grid over the whole (square) input
    caption_layers: int = 2  # autoregressive caption decoder depth
    caption_max_length: int = 16  # tokens generated per caption
    categories: list[str] = field(default_factory=list)  # fixed label set of the classification head
    logit_scale_init: float = 14.3  # 1 / temperature of the object-text similarity (CLIP: 1/0.07)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ObjEmbedConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ObjEmbedConfig fields {unknown}")
        values = dict(values)
        for key in ("pixel_mean", "pixel_std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def patch_size(self) -> int:
        return int(self.backbone_kwargs.get("patch_size", _patch_size_from_name(self.backbone)))

    @property
    def feature_size(self) -> int:
        """Side of the backbone's feature grid (tokens per row)."""
        return self.image_size // self.patch_size


def _patch_size_from_name(name: str) -> int:
    for part in name.split("_"):
        if part.startswith("patch") and part[5:].isdigit():
            return int(part[5:])
    raise ValueError(f"cannot read the patch size from backbone name {name!r}; set backbone_kwargs.patch_size")


PRESETS: dict[str, dict[str, Any]] = {
    # ~CPU minutes: a 4-layer ViT with an 8-px conv stem on 128-px images, frozen MiniLM text encoder.
    "tiny": dict(
        backbone="vit_tiny_patch16_224",
        backbone_kwargs=dict(patch_size=8, depth=4, embed_dim=192, num_heads=3),
        conv_stem=True,
        conv_stem_blocks=1,
        image_size=128,
        text_model="sentence-transformers/all-MiniLM-L6-v2",
        hidden_dim=128,
        num_queries=20,
        decoder_layers=4,
        decoder_heads=4,
        decoder_ffn_dim=512,
        embed_dim=512,
        caption_layers=2,
    ),
    "base": dict(
        backbone="vit_base_patch16_224",
        backbone_pretrained=True,
        image_size=512,
        text_model="bert-base-uncased",
        text_pooling="cls",
        freeze_text=False,
        hidden_dim=256,
        num_queries=100,
        decoder_layers=6,
        decoder_heads=8,
        decoder_ffn_dim=2048,
        embed_dim=512,
        roi_size=7,
        mask_size=128,
        caption_layers=3,
    ),
    # The paper's model: ViT-L + BERT-Large, 512-d object embeddings.
    "large": dict(
        backbone="vit_large_patch16_224",
        backbone_pretrained=True,
        image_size=640,
        text_model="bert-large-uncased",
        text_pooling="cls",
        freeze_text=False,
        hidden_dim=256,
        num_queries=300,
        decoder_layers=6,
        decoder_heads=8,
        decoder_ffn_dim=2048,
        embed_dim=512,
        roi_size=7,
        mask_size=160,
        caption_layers=6,
    ),
}


def preset(name: str, **overrides: Any) -> ObjEmbedConfig:
    """The named preset with ``overrides`` applied; ValueError naming the presets for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown ObjEmbed preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ObjEmbedConfig.from_dict({**PRESETS[name], **overrides})
