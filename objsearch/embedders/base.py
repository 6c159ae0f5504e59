"""The embedder contract: images -> per-object detections with embeddings, texts -> embeddings.

Every embedder puts object and text embeddings in one space (L2-normalised, inner product = cosine),
so a text query and an object-to-object query run against the same FAISS index.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from objsearch.errors import UnknownModel

logger = logging.getLogger(__name__)


@dataclass
class Detections:
    """The objects found in one image.

    boxes_xyxy: (N, 4) float32, absolute pixels of the image as given to ``detect``.
    scores:     (N,) float32 confidence in each object's label, in [0, 1] (a detector's score, or a
                classifier's probability for objects it named).
    labels:     N category names.
    embeddings: (N, D) float32, rows L2-normalised.
    captions:   N short descriptions (or None each), e.g. "a brown dog (golden retriever)".
    masks:      N COCO RLE dicts (or None each), optional.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    labels: list[str]
    embeddings: np.ndarray
    captions: list[str | None] = field(default_factory=list)
    masks: list[dict | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.labels)
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, dtype=np.float32).reshape(n, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != n:
            raise ValueError(f"embeddings must be (N, D) with N = {n} objects, got {self.embeddings.shape}")
        self.captions = list(self.captions) or [None] * n
        self.masks = list(self.masks) or [None] * n
        if not (len(self.captions) == len(self.masks) == n):
            raise ValueError("captions and masks must have one entry per object")

    def __len__(self) -> int:
        return len(self.labels)

    def scaled(self, factor: float) -> "Detections":
        """The same detections with boxes multiplied by ``factor`` (e.g. back to original pixels)."""
        return Detections(
            self.boxes_xyxy * np.float32(factor),
            self.scores,
            self.labels,
            self.embeddings,
            self.captions,
            self.masks,
        )

    @classmethod
    def empty(cls, embed_dim: int) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), [], np.zeros((0, embed_dim)))


@runtime_checkable
class ObjectEmbedder(Protocol):
    """What the indexer and the query layer need from a model.

    Images are (H, W, 3) uint8 RGB numpy arrays. ``name``, ``version`` and ``embed_dim`` are
    recorded in the index manifest; an index is only ever queried with the same triple.
    Optionally ``indexing_caveat`` (a str, or None): one line the indexer logs as a warning once
    per run, e.g. that the model was trained on synthetic data only.
    """

    name: str
    version: str
    embed_dim: int

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One Detections per image, boxes in that image's pixels."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), embed_dim) float32 L2-normalised query embeddings."""
        ...

    def embed_regions(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, embed_dim) float32 L2-normalised embeddings of the given (N, 4) pixel boxes."""
        ...


EmbedderFactory = Callable[..., ObjectEmbedder]
_REGISTRY: dict[str, EmbedderFactory] = {}

DEFAULT_EMBEDDER = "bundled"


def register_embedder(name: str) -> Callable[[EmbedderFactory], EmbedderFactory]:
    """Decorator: make ``load_embedder(name)`` call this factory."""

    def wrap(factory: EmbedderFactory) -> EmbedderFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_embedders() -> list[str]:
    _import_builtin_embedders()
    return sorted(_REGISTRY)


def load_embedder(name_or_path: str = DEFAULT_EMBEDDER, *, device: str | None = None) -> ObjectEmbedder:
    """Build an embedder from a registered name, a ``package.module:factory`` path, or a checkpoint dir.

    Raises UnknownModel with the list of choices when nothing matches.
    """
    _import_builtin_embedders()
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path](device=device)
    if ":" in name_or_path and not Path(name_or_path).exists():
        return _load_from_import_path(name_or_path, device)
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        if "objembed" not in _REGISTRY:
            raise UnknownModel(
                f"{path} looks like an ObjEmbed checkpoint, but this build has no 'objembed' embedder"
            )
        return _REGISTRY["objembed"](path=path, device=device)
    raise UnknownModel(
        f"unknown model {name_or_path!r}: use one of {', '.join(sorted(_REGISTRY))}, "
        "a 'package.module:factory' import path, or a checkpoint directory"
    )


def _load_from_import_path(spec: str, device: str | None) -> ObjectEmbedder:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownModel(f"cannot import embedder factory {spec!r}: {exc}") from exc
    return factory(device=device)


def _import_builtin_embedders() -> None:
    # Imported lazily: registering must not pull in torch/OpenCV for `objsearch --help`.
    importlib.import_module("objsearch.embedders.bundled")
    importlib.import_module("objsearch.embedders.objembed")
