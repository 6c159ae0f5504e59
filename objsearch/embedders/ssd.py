"""SSD-MobileNet-v2 (COCO) through OpenCV DNN: boxes, scores, labels and backbone features.

OpenCV's classic engine is used because it can return an intermediate layer (the backbone's last
feature map, used for appearance features) together with the detections in one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from objsearch.box_ops import nms
from objsearch.embedders.coco_labels import COCO_LABELS
from objsearch.embedders.packaged_models import SSD_GRAPH, SSD_TEXT_GRAPH, packaged_model_file

INPUT_SIDE = 300  # the network's square input, pixels
FEATURE_LAYER = "FeatureExtractor/MobilenetV2/Conv_1/Relu6"  # (1280, 10, 10) for a 300x300 input
DETECTION_LAYER = "detection_out"
FEATURE_DIM = 1280


@dataclass
class SsdOutput:
    """Detections of one image.

    boxes_norm: (N, 4) float32 xyxy in [0, 1] of the image's width and height.
    scores:     (N,) float32 in [0, 1].  labels: N COCO names.
    features:   (FEATURE_DIM, 10, 10) float32 backbone feature map covering the whole image.
    """

    boxes_norm: np.ndarray
    scores: np.ndarray
    labels: list[str]
    features: np.ndarray


class SsdDetector:
    def __init__(self, *, min_score: float = 0.3, nms_iou: float = 0.5, max_objects: int = 50) -> None:
        import cv2

        self._cv2 = cv2
        self.net = cv2.dnn.readNetFromTensorflow(
            str(packaged_model_file(SSD_GRAPH)),
            str(packaged_model_file(SSD_TEXT_GRAPH)),
            engine=cv2.dnn.ENGINE_CLASSIC,
        )
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.max_objects = max_objects

    def __call__(self, images: Sequence[np.ndarray]) -> list[SsdOutput]:
        """Run one batched forward pass over (H, W, 3) uint8 RGB images."""
        if not images:
            return []
        # The graph normalises pixels itself; the images are RGB already, so no channel swap.
        blob = self._cv2.dnn.blobFromImages(list(images), size=(INPUT_SIDE, INPUT_SIDE), swapRB=False)
        self.net.setInput(blob)
        raw, features = self.net.forward([DETECTION_LAYER, FEATURE_LAYER])
        rows = raw.reshape(-1, 7)  # (image index, class id, score, x1, y1, x2, y2)
        return [self._decode(rows[rows[:, 0] == i], features[i]) for i in range(len(images))]

    def _decode(self, rows: np.ndarray, features: np.ndarray) -> SsdOutput:
        rows = rows[(rows[:, 2] >= self.min_score) & np.isin(rows[:, 1].astype(int), list(COCO_LABELS))]
        boxes = np.clip(rows[:, 3:7], 0.0, 1.0)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        rows, boxes = rows[valid], boxes[valid]
        # The detector often reports one object twice under two classes (dog/cat, car/truck):
        # keep the most confident reading of each box.
        keep = nms(boxes, rows[:, 2], self.nms_iou)[: self.max_objects]
        return SsdOutput(
            boxes_norm=boxes[keep].astype(np.float32),
            scores=rows[keep, 2].astype(np.float32),
            labels=[COCO_LABELS[int(c)] for c in rows[keep, 1]],
            features=np.asarray(features, dtype=np.float32),
        )


def roi_mean_features(features: np.ndarray, boxes_norm: np.ndarray) -> np.ndarray:
    """Average-pool a (C, H, W) feature map inside each normalised xyxy box -> (N, C).

    Every box covers at least one feature cell (the one under its centre).
    """
    channels, height, width = features.shape
    out = np.zeros((len(boxes_norm), channels), dtype=np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes_norm, dtype=np.float64)):
        c0, c1 = int(np.floor(x1 * width)), int(np.ceil(x2 * width))
        r0, r1 = int(np.floor(y1 * height)), int(np.ceil(y2 * height))
        c0, r0 = min(c0, width - 1), min(r0, height - 1)
        c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)
        out[i] = features[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


def masked_mean_features(features: np.ndarray, boxes_norm: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Average a (C, h, w) feature map over each object's (H, W) bool mask -> (N, C): each cell
    weighted by the share of it the mask covers. A mask too small to cover a tenth of one cell
    falls back to its box (``roi_mean_features``)."""
    import cv2

    channels, height, width = features.shape
    out = np.zeros((len(masks), channels), dtype=np.float32)
    flat = features.reshape(channels, -1)
    for i, (box, mask) in enumerate(zip(boxes_norm, masks)):
        cover = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA).ravel()
        out[i] = flat @ cover / cover.sum() if cover.sum() >= 0.1 else roi_mean_features(features, box[None])[0]
    return out
