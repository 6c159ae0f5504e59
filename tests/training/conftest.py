"""Fixtures shared by the training tests: one intra-op thread, a small ObjEmbed, a batch of images.

``one_thread`` is not autouse here; a module that wants it says ``pytestmark = pytest.mark.usefixtures("one_thread")``.
"""

from __future__ import annotations

import pytest
import torch

from objsearch.model.objembed import ObjEmbed
from tests.training.small_model import small_config


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on a shared 2-core machine: a second intra-op thread only adds contention
    (measured here: 30x slower with 2 threads while another job runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> ObjEmbed:
    torch.manual_seed(0)
    return ObjEmbed(small_config()).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
