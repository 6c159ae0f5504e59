"""Embedders turn images into detected objects with embeddings, and texts into the same space."""

from objsearch.embedders.base import (
    DEFAULT_EMBEDDER,
    Detections,
    ObjectEmbedder,
    list_embedders,
    load_embedder,
    register_embedder,
)

__all__ = [
    "DEFAULT_EMBEDDER",
    "Detections",
    "ObjectEmbedder",
    "list_embedders",
    "load_embedder",
    "register_embedder",
]
