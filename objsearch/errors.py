"""Domain errors. The library raises these; the CLI turns them into a one-line message and exit 1."""

from __future__ import annotations


class ObjsearchError(Exception):
    """Base class of every error objsearch raises on purpose (never a bug)."""


class BadImage(ObjsearchError):
    """An image file could not be decoded; ``reason`` is short and human-readable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class IndexLocked(ObjsearchError):
    """Another process holds the index's writer lock."""


class IndexNotFound(ObjsearchError):
    """No index exists at the given location."""


class IndexCorrupt(ObjsearchError):
    """A file the manifest names is missing or does not match its checksum."""


class ModelMismatch(ObjsearchError):
    """The embedder asked for differs from the one that built the index."""


class UnknownModel(ObjsearchError):
    """No embedder is registered under that name and it is no loadable path."""


class BadQuery(ObjsearchError):
    """A query, filter predicate or SQL statement is invalid."""


class NotFound(BadQuery):
    """An object or image id that this index does not hold."""


class FormatVersionError(ObjsearchError):
    """The index was written by an incompatible format version."""


class QueryTimeout(BadQuery):
    """A query ran past its time limit and was stopped."""


class BadDataset(ObjsearchError):
    """A dataset file (COCO instances, RefCOCO-style refs) is not JSON, or a field is missing or malformed.

    ``path`` is the file, ``field`` where in it (e.g. ``annotations[3].bbox``; None: the whole file),
    ``reason`` what is wrong.
    """

    def __init__(self, path: str, field: str | None, reason: str) -> None:
        super().__init__(f"{path}: {field}: {reason}" if field else f"{path}: {reason}")
        self.path = str(path)
        self.field = field
        self.reason = reason


class PretrainedUnavailable(ObjsearchError):
    """A pretrained part of a model (``part``: "image encoder" or "text encoder") could not be fetched
    from the Hugging Face hub nor found locally; the message says how to go on, in one line."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
