"""The image encoder: a timm Vision Transformer whose patch tokens become a feature map."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from objsearch.model.config import ObjEmbedConfig

logger = logging.getLogger(__name__)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a skip connection (ResNet basic block, same width)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(8, channels), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(8, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x + self.body(x))


def conv_stem(out_channels: int, stride: int, blocks_per_stage: int = 0) -> nn.Sequential:
    """A stack of 3x3 stride-2 convolutions reaching ``stride`` (a power of two >= 2), each followed
    by ``blocks_per_stage`` residual blocks, then a 1x1 to ``out_channels``. Replaces the ViT's single
    patchify convolution: early convolutions make ViTs train faster and more stably (Xiao et al.,
    2021), which matters when training from scratch."""
    if stride < 2 or stride & (stride - 1):
        raise ValueError(f"conv stem stride must be a power of two >= 2, got {stride}")
    layers: list[nn.Module] = []
    channels, width = 3, 32
    while stride > 1:
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, width), nn.GELU()]
        layers += [ResidualBlock(width) for _ in range(blocks_per_stage)]
        channels, width, stride = width, min(width * 2, out_channels), stride // 2
    layers.append(nn.Conv2d(channels, out_channels, 1))
    return nn.Sequential(*layers)


class ViTBackbone(nn.Module):
    """images (B, 3, S, S) normalised -> features (B, C, S/p, S/p), C = the ViT width, p = patch size."""

    def __init__(self, config: ObjEmbedConfig) -> None:
        super().__init__()
        import timm

        try:
            self.vit = timm.create_model(
                config.backbone,
                pretrained=config.backbone_pretrained,
                img_size=config.image_size,
                num_classes=0,
                **config.backbone_kwargs,
            )
        except OSError as exc:  # the hub's LocalEntryNotFoundError, a connection or HTTP error, a missing file
            if not config.backbone_pretrained:
                raise
            from objsearch.model.pretrained import image_encoder_unavailable, short_reason

            raise image_encoder_unavailable(config, short_reason(exc)) from exc
        self.patch_size = config.patch_size
        self.grid = config.image_size // self.patch_size
        self.num_channels = int(self.vit.embed_dim)
        # The conv stem's convolutions run ~10% faster on channels-last input (oneDNN on CPU, cuDNN on GPU).
        self.channels_last = config.conv_stem
        if config.conv_stem:
            self.vit.patch_embed.proj = conv_stem(self.num_channels, self.patch_size, config.conv_stem_blocks)
        logger.info("backbone %s: %d channels, %dx%d grid", config.backbone, self.num_channels, self.grid, self.grid)

    @contextlib.contextmanager
    def explicit_attention(self, enabled: bool = True) -> Iterator[None]:
        """Within the block (when ``enabled``), the ViT computes attention as explicit matrix products
        and softmax instead of ``F.scaled_dot_product_attention``; timm's own choice is restored after.
        The result is the same; which is faster depends on the device and precision
        (``python -m benchmarks.train_step`` times both in bfloat16 on CPU)."""
        modules = [m for m in self.vit.modules() if hasattr(m, "fused_attn")] if enabled else []
        before = [m.fused_attn for m in modules]
        for module in modules:
            module.fused_attn = False
        try:
            yield
        finally:
            for module, fused in zip(modules, before):
                module.fused_attn = fused

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        tokens = self.vit.forward_features(images)  # (B, prefix + grid*grid, C)
        tokens = tokens[:, self.vit.num_prefix_tokens :]
        batch = tokens.shape[0]
        return tokens.transpose(1, 2).reshape(batch, self.num_channels, self.grid, self.grid)
