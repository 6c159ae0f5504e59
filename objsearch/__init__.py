"""objsearch: object-level image retrieval.

    import objsearch
    index = objsearch.open_index("path/to/.objsearch")
    hits = index.search_text("red umbrella", k=10)

Heavy dependencies (torch, FAISS, OpenCV) load only when a function that needs them runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "open_index": "objsearch.search",
    "Index": "objsearch.search",
    "Hit": "objsearch.hits",
    "load_embedder": "objsearch.embedders.base",
    "list_embedders": "objsearch.embedders.base",
    "register_embedder": "objsearch.embedders.base",
    "Detections": "objsearch.embedders.base",
    "ObjsearchError": "objsearch.errors",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from objsearch.embedders.base import Detections, list_embedders, load_embedder, register_embedder
    from objsearch.errors import ObjsearchError
    from objsearch.hits import Hit
    from objsearch.search import Index, open_index


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'objsearch' has no attribute {name!r}")
