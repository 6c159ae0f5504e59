"""With no --batch-size, indexing asks the embedder for its batch size (a memory probe on CUDA)."""

from __future__ import annotations

import pytest

from indexer.pipeline import IndexOptions, index_folders
from objsearch.embedders.batch_size import (
    DEFAULT_BATCH_SIZE,
    batch_size_for_memory,
    choose_batch_size,
)
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.blob_embedder import BlobEmbedder
from tests.conftest import BLOBS


class RecordingEmbedder(BlobEmbedder):
    """The blob embedder, with a preferred batch size and a record of the batches it was given."""

    def __init__(self, preferred: int | None) -> None:
        self.preferred, self.batches = preferred, []

    def preferred_batch_size(self) -> int:
        return self.preferred

    def detect(self, images):
        self.batches.append(len(images))
        return super().detect(images)


@pytest.mark.parametrize("per_image, free, expected", [
    (1e6, 100e6, 32),  # half of 100 MB holds 50 images: the power of two below
    (1e6, 128e6, 64),  # exactly 64 fit
    (1.0, 80e9, 256),  # capped
    (5e9, 1e9, 1),  # not even one fits: still one
    (0.0, 1e9, 256),  # a probe that allocated nothing
])
def test_batch_size_for_memory_is_the_largest_power_of_two_that_fits_half_the_free_memory(per_image, free, expected):
    assert batch_size_for_memory(per_image, int(free)) == expected


def test_choose_batch_size_uses_the_embedders_preference_or_the_default():
    assert choose_batch_size(BlobEmbedder()) == DEFAULT_BATCH_SIZE
    assert choose_batch_size(RecordingEmbedder(24)) == 24
    assert choose_batch_size(RecordingEmbedder(0)) == 1


def test_indexing_without_a_batch_size_uses_the_embedders_choice_and_an_explicit_one_wins(tmp_path):
    make_dataset(tmp_path / "imgs", 7)
    embedder = RecordingEmbedder(3)
    summary = index_folders([tmp_path / "imgs"], tmp_path / "index", embedder=embedder, model=BLOBS,
                            options=IndexOptions(progress=False, workers=1))
    assert summary.indexed == 7 and embedder.batches == [3, 3, 1]

    make_dataset(tmp_path / "more", 5, seed=1)
    embedder = RecordingEmbedder(3)
    index_folders([tmp_path / "more"], tmp_path / "index2", embedder=embedder, model=BLOBS,
                  options=IndexOptions(progress=False, workers=1, batch_size=2))
    assert embedder.batches == [2, 2, 1]

