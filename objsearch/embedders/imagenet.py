"""EfficientNet-Lite3 ImageNet classifier (int8 TFLite) through ai-edge-litert.

It widens the bundled embedder's vocabulary past COCO's 80 categories (dog breeds, "space shuttle",
"espresso", ...). Input: 280x280 uint8 RGB; output: 1,000 class probabilities.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
from PIL import Image

from objsearch.box_ops import clip_boxes, cxcywh_to_xyxy, xyxy_to_cxcywh
from objsearch.embedders.packaged_models import CLASSIFIER, CLASSIFIER_LABELS, packaged_model_file

INPUT_SIDE = 280


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 (native-library chatter) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _short_name(synonyms: str) -> str:
    """'tabby, tabby cat' -> 'tabby cat': the most descriptive of the first two synonyms."""
    names = [s.strip() for s in synonyms.split(",") if s.strip()][:2]
    return max(names, key=len) if names else synonyms


class ImageNetClassifier:
    def __init__(self, *, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with _quiet_native_stderr():  # LiteRT prints an INFO line from C++ on every load
            self.interpreter = Interpreter(model_path=str(packaged_model_file(CLASSIFIER)), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        output = self.interpreter.get_output_details()[0]
        self._output_index = output["index"]
        self._output_scale, self._output_zero = output["quantization"]
        lines = packaged_model_file(CLASSIFIER_LABELS).read_text(encoding="utf-8").splitlines()
        self.labels = [_short_name(line) for line in lines]

    def probabilities(self, crop: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB crop -> (1000,) float32 class probabilities."""
        resized = Image.fromarray(crop).resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BILINEAR)
        self.interpreter.set_tensor(self._input["index"], np.asarray(resized, dtype=np.uint8)[None])
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self._output_index)[0].astype(np.float32)
        return (raw - self._output_zero) * self._output_scale

    def top1(self, crop: np.ndarray) -> tuple[str, float]:
        probs = self.probabilities(crop)
        best = int(np.argmax(probs))
        return self.labels[best], float(probs[best])

    def across_scales(self, image: np.ndarray, box_xyxy, scales: tuple[float, ...]) -> tuple[str, float, int]:
        """Classify the crop of ``box_xyxy`` (pixels) grown about its centre by each of ``scales``
        (clipped to the image) -> (the label of the mean probabilities, its mean probability, at how
        many scales it is also the top-1). A label that holds across scales is the object's, not a
        texture of one crop: scikit-learn's dahlia reads "mushroom" in its own box and "daisy" at
        0.8x and 1.5x (ImageNet has no dahlia)."""
        height, width = image.shape[:2]
        centre = xyxy_to_cxcywh(np.asarray(box_xyxy, np.float64))
        grown = clip_boxes(cxcywh_to_xyxy(centre * np.array([[1, 1, s, s] for s in scales])), width, height)
        probs = []
        for x1, y1, x2, y2 in grown:
            top, left = min(int(y1), height - 1), min(int(x1), width - 1)  # at least a pixel, inside
            probs.append(self.probabilities(image[top:max(int(np.ceil(y2)), top + 1), left:max(int(np.ceil(x2)), left + 1)]))
        stacked = np.stack(probs)
        best = int(np.argmax(stacked.mean(axis=0)))
        return self.labels[best], float(stacked[:, best].mean()), int((stacked.argmax(axis=1) == best).sum())
