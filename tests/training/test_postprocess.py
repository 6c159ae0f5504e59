"""ObjEmbed letterbox geometry and post-processing: boxes and masks mapped back to the original image, NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------- geometry


def _cxcywh(xyxy: list[float], side: float) -> list[float]:
    x1, y1, x2, y2 = (v / side for v in xyxy)
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _fake_outputs(boxes_cxcywh: list[list[float]], mask_logits: torch.Tensor | None = None) -> dict:
    q = len(boxes_cxcywh)
    return {
        "boxes": torch.tensor(boxes_cxcywh, dtype=torch.float32)[None, None],  # (L=1, B=1, Q, 4)
        "objectness": torch.full((1, 1, q), 8.0),
        "quality": torch.full((1, q), 8.0),
        "embeddings": F.normalize(torch.ones(1, q, 4), dim=-1),
        "mask_logits": mask_logits if mask_logits is not None else torch.zeros(1, q, 16, 16),
    }


def test_letterbox_then_postprocess_maps_boxes_and_masks_back_to_the_original_image():
    from objsearch.model.postprocess import postprocess
    from objsearch.model.preprocess import PAD_VALUE, letterbox

    height, width, size = 60, 100, 64  # landscape: scale = 0.64, content 38 rows x 64 columns
    image = np.full((height, width, 3), 255, np.uint8)
    original_box = [10, 20, 50, 40]  # x1, y1, x2, y2 pixels of the red rectangle
    image[20:40, 10:50] = (220, 30, 30)
    boxed, scale = letterbox(image, size)
    assert boxed.shape == (3, size, size) and boxed.dtype == torch.uint8 and scale == pytest.approx(0.64)
    assert (boxed[:, 39:, :] == PAD_VALUE).all(), "padding must go below the image"
    red = (boxed[0].int() > 150) & (boxed[1].int() < 100)
    rows, cols = torch.nonzero(red.any(1)).flatten(), torch.nonzero(red.any(0)).flatten()
    input_box = [v * scale for v in original_box]  # [6.4, 12.8, 32, 25.6]
    assert abs(int(cols[0]) - input_box[0]) <= 1 and abs(int(cols[-1]) + 1 - input_box[2]) <= 1
    assert abs(int(rows[0]) - input_box[1]) <= 1 and abs(int(rows[-1]) + 1 - input_box[3]) <= 1

    # The model speaks normalised cxcywh on the square input; postprocess answers in original pixels.
    spill = [40.0, 30.0, 70.0, 50.0]  # crosses the right edge and into the bottom padding
    mask_side = 32
    logits = torch.full((1, 2, mask_side, mask_side), -10.0)
    cell = size / mask_side  # input pixels per mask cell
    logits[0, 0, round(input_box[1] / cell) : round(input_box[3] / cell),
           round(input_box[0] / cell) : round(input_box[2] / cell)] = 10.0
    outputs = _fake_outputs([_cxcywh(input_box, size), _cxcywh(spill, size)], logits)
    (objects,) = postprocess(outputs, [scale], [(height, width)], score_threshold=0.5, with_masks=True, input_size=size)
    order = np.argsort(objects.query_index)
    boxes = objects.boxes_xyxy[order]
    assert np.allclose(boxes[0], original_box, atol=1e-3)
    assert np.allclose(boxes[1], [40 / scale, 30 / scale, width, height], atol=1e-3), "boxes are clamped to the image"
    assert objects.masks.shape == (2, height, width)
    truth = np.zeros((height, width), bool)
    truth[20:40, 10:50] = True
    predicted = objects.masks[order][0]
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou > 0.8, iou


def test_postprocess_drops_the_lower_scored_of_two_overlapping_boxes_only_with_nms():
    from objsearch.model.postprocess import postprocess

    size = 100
    boxes = [[10, 10, 50, 50], [12, 10, 50, 52], [60, 60, 90, 90], [30, 30, 70, 70]]  # pixels on the input
    outputs = _fake_outputs([_cxcywh(b, size) for b in boxes])
    outputs["objectness"] = torch.tensor([[[1.0, 3.0, 2.0, 0.5]]])  # query 1 outscores its duplicate, query 0
    (everything,) = postprocess(outputs, [1.0], [(size, size)], score_threshold=0.0, input_size=size)
    assert sorted(everything.query_index.tolist()) == [0, 1, 2, 3]
    (deduplicated,) = postprocess(outputs, [1.0], [(size, size)], score_threshold=0.0, input_size=size, nms_iou=0.7)
    # IoU(0, 1) = 0.86 > 0.7: query 0 goes. Query 3 overlaps query 1 by IoU 0.2 only: it stays.
    assert deduplicated.query_index.tolist() == [1, 2, 3], "kept best first, the weaker duplicate dropped"
    assert np.all(np.diff(deduplicated.scores) <= 0)
    (capped,) = postprocess(outputs, [1.0], [(size, size)], score_threshold=0.0, input_size=size, nms_iou=0.7,
                            max_objects=2)
    assert capped.query_index.tolist() == [1, 2], "the cap applies after NMS, so duplicates do not use it up"
