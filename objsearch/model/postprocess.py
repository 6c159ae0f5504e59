"""Raw ObjEmbed outputs -> per-image objects in original pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import nms

from objsearch.model.heads import cxcywh_to_xyxy


@dataclass
class ImageObjects:
    """The kept objects of one image.

    boxes_xyxy: (N, 4) float32 original-image pixels; scores: (N,) float32 in [0, 1] =
    objectness x predicted quality (IoU); embeddings: (N, E) float32 L2-normalised;
    query_index: (N,) int64 decoder query of each object; masks: (N, H, W) bool or None.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray
    query_index: np.ndarray
    masks: np.ndarray | None = None


def object_scores(objectness_logits: torch.Tensor, quality_logits: torch.Tensor) -> torch.Tensor:
    """(..., Q) -> (..., Q) detection score: the object probability times the predicted IoU, so a
    well-localised object outranks a sloppy box of the same object."""
    return objectness_logits.sigmoid() * quality_logits.sigmoid()


def postprocess(outputs: dict, scales: list[float], original_sizes: list[tuple[int, int]],
                score_threshold: float = 0.05, max_objects: int = 100, with_masks: bool = False,
                input_size: int | None = None, nms_iou: float | None = None) -> list[ImageObjects]:
    """Select and convert each image's queries: those scoring at least ``score_threshold``, then
    class-agnostic NMS at ``nms_iou`` (None: off), then the ``max_objects`` best.

    outputs: the model's dict (last decoder layer used); scales: model-input pixels per original pixel;
    original_sizes: (height, width) per image; input_size: the square input side (needed for masks).
    The one-to-one matching of training should leave one query per object, but a briefly trained
    model still puts two queries on one object; NMS keeps the better-scored of such a pair.
    """
    boxes = outputs["boxes"][-1].float()  # (B, Q, 4) cxcywh in [0, 1]
    scores = object_scores(outputs["objectness"][-1].float(), outputs["quality"].float())
    side = boxes.new_tensor(float(input_size or 1))
    results = []
    for b, (scale, (height, width)) in enumerate(zip(scales, original_sizes)):
        order = scores[b].argsort(descending=True)
        order = order[scores[b, order] >= score_threshold]
        if nms_iou is not None and len(order) > 1:
            order = order[nms(cxcywh_to_xyxy(boxes[b, order]), scores[b, order], nms_iou)]
        order = order[:max_objects]
        xyxy = cxcywh_to_xyxy(boxes[b, order]) * side / scale
        xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
        xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
        masks = None
        if with_masks:
            masks = _masks_to_image(outputs["mask_logits"][b, order].float(), scale, int(side), height, width)
        results.append(ImageObjects(
            boxes_xyxy=xyxy.cpu().numpy().astype(np.float32),
            scores=scores[b, order].cpu().numpy().astype(np.float32),
            embeddings=outputs["embeddings"][b, order].float().cpu().numpy(),
            query_index=order.cpu().numpy(),
            masks=masks,
        ))
    return results


def _masks_to_image(logits: torch.Tensor, scale: float, input_size: int, height: int, width: int) -> np.ndarray:
    """(N, M, M) logits over the square input -> (N, height, width) bool in original pixels."""
    if len(logits) == 0:
        return np.zeros((0, height, width), dtype=bool)
    full = F.interpolate(logits[:, None], size=(input_size, input_size), mode="bilinear", align_corners=False)
    valid_h, valid_w = max(1, round(height * scale)), max(1, round(width * scale))
    cropped = full[:, :, :valid_h, :valid_w]
    resized = F.interpolate(cropped, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return (resized > 0).cpu().numpy()
