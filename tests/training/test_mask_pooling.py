"""The embedding head's mask pooling: features averaged under each query's own predicted mask."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from objsearch.model.checkpoint import load_checkpoint, save_checkpoint
from objsearch.model.heads import EmbeddingHead, mask_pool
from objsearch.model.objembed import ObjEmbed
from tests.training.small_model import small_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mask_pool_averages_the_features_under_a_hard_mask():
    generator = torch.Generator().manual_seed(0)
    feature_map = torch.randn(2, 5, 4, 4, generator=generator)
    logits = torch.full((2, 3, 8, 8), -1e4)  # mask grid at twice the feature grid's resolution
    logits[0, 0, 0:4, 2:6] = 1e4  # feature cells (0..1, 1..2)
    logits[1, 2, :, :] = 1e4  # the whole map
    pooled = mask_pool(feature_map, logits)
    assert pooled.shape == (2, 3, 5)
    torch.testing.assert_close(pooled[0, 0], feature_map[0, :, 0:2, 1:3].mean(dim=(1, 2)))
    torch.testing.assert_close(pooled[1, 2], feature_map[1].mean(dim=(1, 2)))
    # A query whose mask is empty everywhere pools (almost) nothing rather than dividing by zero.
    assert pooled[0, 1].abs().max() == 0 and torch.isfinite(pooled).all()


def test_the_mask_view_sees_the_object_through_its_mask_not_its_box():
    torch.manual_seed(0)
    head = EmbeddingHead(dim=16, feature_channels=6, embed_dim=8, roi_size=2, sampling_ratio=2, mask_pooling=True)
    features = torch.randn(1, 1, 16)
    box = torch.tensor([[[0.25, 0.25, 0.5, 0.5]]])  # cxcywh: the top-left quarter of the input
    feature_map = torch.randn(1, 6, 8, 8, requires_grad=True)
    mask_logits = torch.full((1, 1, 8, 8), -1e4)  # sigmoid: exactly 0
    mask_logits[0, 0, 6:, 6:] = 1e4  # the bottom-right corner, far outside the box
    mask_logits.requires_grad_()
    head(features, box, feature_map, mask_logits).sum().backward()
    assert feature_map.grad[0, :, 6:, 6:].abs().sum() > 0  # the masked pixels reach the embedding
    assert feature_map.grad[0, :, 5, :6].abs().sum() == 0  # outside both the box and the mask: unseen
    assert mask_logits.grad is None  # the mask head is trained by its own losses only

    box_only = EmbeddingHead(dim=16, feature_channels=6, embed_dim=8, roi_size=2, sampling_ratio=2, mask_pooling=False)
    feature_map.grad = None
    box_only(features, box, feature_map).sum().backward()
    assert feature_map.grad[0, :, 6:, 6:].abs().sum() == 0
    with pytest.raises(ValueError, match="mask_logits"):
        head(features, box, feature_map)


def test_a_checkpoint_written_before_mask_pooling_loads_as_box_only(tmp_path):
    torch.manual_seed(0)
    old = ObjEmbed(dataclasses.replace(small_config(), mask_pooling=False)).eval()
    directory = save_checkpoint(old, tmp_path / "old")
    payload = json.loads((directory / "config.json").read_text())
    del payload["mask_pooling"]  # as config.json files written before the field existed
    (directory / "config.json").write_text(json.dumps(payload))
    loaded = load_checkpoint(directory)
    assert loaded.config.mask_pooling is False and loaded.embedding_head.mask_proj is None
    images = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(loaded.normalize(images))["embeddings"],
                                   old(old.normalize(images))["embeddings"])
    assert small_config().mask_pooling  # while new models pool under their masks by default
