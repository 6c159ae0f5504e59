"""How many images go into one forward pass when the user does not say (``--batch-size 0``).

An embedder may offer ``preferred_batch_size() -> int`` (the ObjEmbed embedder does: a fixed size on
CPU, a memory probe on CUDA); otherwise DEFAULT_BATCH_SIZE. On CUDA the size comes from
``batch_size_for_memory``: the largest power of two whose activations, extrapolated linearly from a
small probe batch, fit in a share of the GPU's free memory.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8  # CPU: measured flat beyond 8 for both embedders (benchmarks/throughput.py --batch-sizes)
GPU_MEMORY_SHARE = 0.5  # of the free memory at start, leaving room for fragmentation and FAISS
MAX_GPU_BATCH_SIZE = 256


def choose_batch_size(embedder) -> int:
    """The embedder's preferred batch size, or DEFAULT_BATCH_SIZE; at least 1."""
    preferred = getattr(embedder, "preferred_batch_size", None)
    size = int(preferred()) if callable(preferred) else DEFAULT_BATCH_SIZE
    size = max(1, size)
    logger.info("batch size %d (automatic)", size)
    return size


def batch_size_for_memory(bytes_per_image: float, free_bytes: int, *, share: float = GPU_MEMORY_SHARE,
                          cap: int = MAX_GPU_BATCH_SIZE) -> int:
    """The largest power of two n <= cap with n * bytes_per_image <= share * free_bytes (at least 1)."""
    fits = int(share * free_bytes // max(bytes_per_image, 1.0))
    size = 1
    while size * 2 <= min(fits, cap):
        size *= 2
    return size
