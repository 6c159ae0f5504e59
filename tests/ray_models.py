"""Embedders that misbehave on purpose, loaded by name inside Ray actors (``tests.ray_models:flaky``).

``FlakyBlobEmbedder`` is the blob embedder (same name, version and dimension, so an index it starts
is finished by the plain one) that, when the test's environment asks for it:
- ``OBJSEARCH_TEST_DIE_ONCE=FILE``: kills its own process at its first batch, once (FILE marks it);
- ``OBJSEARCH_TEST_FAIL_WIDTH=W``: raises on any batch holding an image W pixels wide;
- ``OBJSEARCH_TEST_BROKEN_LOAD=1``: cannot be loaded at all.
The environment reaches the actors because a local Ray's workers inherit the driver's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from objsearch.datasets.blob_embedder import SlowBlobEmbedder


class FlakyBlobEmbedder(SlowBlobEmbedder):
    def detect(self, images: Sequence[np.ndarray]):
        marker = os.environ.get("OBJSEARCH_TEST_DIE_ONCE")
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # a lost worker: no exception, no cleanup
        width = int(os.environ.get("OBJSEARCH_TEST_FAIL_WIDTH", "0"))
        if width and any(image.shape[1] == width for image in images):
            raise RuntimeError(f"injected failure on a {width}-pixel-wide image")
        return super().detect(images)


def flaky(*, device: str | None = None) -> FlakyBlobEmbedder:
    """``OBJSEARCH_TEST_BROKEN_LOAD=1``: the model cannot be loaded (as on a node that lacks it)."""
    if os.environ.get("OBJSEARCH_TEST_BROKEN_LOAD"):
        raise RuntimeError("injected: the model's files are missing on this node")
    return FlakyBlobEmbedder()
