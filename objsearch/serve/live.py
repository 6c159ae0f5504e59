"""The index a server answers from: the newest committed generation, followed as writers commit.

A server keeps one ``Index`` open (its embedder warm) and, before each request, looks at the
manifest's identity (inode, size, mtime: a commit replaces the file by a rename, so a new
generation always changes it). When it changed, the next request opens the new generation (outside
the work lock, so searches on the old one go on meanwhile), taking over the segments and shards the
old one had loaded and the new one keeps (``open_index(previous=)``: following a commit costs what
it changed), swaps it in and closes the old one, whose reader lease then lets the writer delete
what only it still used.

Work on the index is serialized by one lock: DuckDB connections and Pillow's decoding switches are
not thread-safe, and on a machine of a few cores one search at a time, each using every core
(FAISS, torch), answers concurrent clients faster than interleaved searches would. A request that
cannot get the lock within the time limit fails with ``ServerBusy`` instead of queueing forever.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from objsearch.embedders.base import ObjectEmbedder, load_embedder
from objsearch.errors import IndexNotFound, ModelMismatch, ObjsearchError
from objsearch.search import Index, open_index
from objsearch.store.layout import MANIFEST, resolve_index_path

logger = logging.getLogger(__name__)


class ServerBusy(ObjsearchError):
    """Every worker was busy for longer than a request may wait."""


def manifest_identity(root: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime ns) of the index's manifest, or None when there is none (yet)."""
    try:
        st = os.stat(root / MANIFEST)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class LiveIndex:
    """The newest committed generation of the index at ``path``, reopened when a writer commits.

    ``model``: a --model string or an embedder; None loads the one that built the index.
    ``time_limit_s``: the longest one request may wait for the work lock and then search.
    """

    def __init__(self, path: str | os.PathLike | None, *, model: ObjectEmbedder | str | None = None,
                 time_limit_s: float = 30.0) -> None:
        self.root = resolve_index_path(path)
        self.time_limit_s = time_limit_s
        self._embedder = load_embedder(model) if isinstance(model, str) else model
        self._index: Index | None = None
        self._identity: tuple[int, int, int] | None = None
        self._work = threading.Lock()
        self._reopening = threading.Lock()

    def warm(self) -> None:
        """Open the index and load its embedder now, so the first query does not pay for it (an
        index that does not exist yet is opened by the first request after it appears)."""
        try:
            with self.use() as index:
                self._embedder = index.embedder
        except IndexNotFound:
            logger.warning("no index at %s yet; serving it once `objsearch index` has made one", self.root)
        except ObjsearchError as exc:  # damaged, another format, model missing: each request says why
            logger.error("cannot open the index at %s: %s", self.root, exc)

    @contextmanager
    def use(self) -> Iterator[Index]:
        """The current generation, held for this block alone (other requests wait for it)."""
        self._follow_commits()
        if not self._work.acquire(timeout=self.time_limit_s):
            raise ServerBusy(f"the server was busy for {self.time_limit_s:g} s; try again")
        try:
            if self._index is None:
                raise IndexNotFound(f"no index at {self.root} yet; run `objsearch index DIR --index {self.root}`")
            yield self._index
        finally:
            self._work.release()

    @property
    def generation(self) -> int | None:
        index = self._index
        return None if index is None else index.manifest.generation

    def _follow_commits(self) -> None:
        identity = manifest_identity(self.root)
        if identity == self._identity and self._index is not None:
            return
        # One request opens the new generation; while it does, the others keep the old one (and
        # wait only when there is none yet).
        if not self._reopening.acquire(blocking=self._index is None, timeout=self.time_limit_s if self._index is None else -1):
            if self._index is None:
                raise ServerBusy(f"the index was still being opened after {self.time_limit_s:g} s; try again")
            return
        try:
            if identity == self._identity and self._index is not None:
                return
            if identity is None:
                if self._index is None:
                    return  # nothing to open yet: use() says so
                raise IndexNotFound(f"the index at {self.root} has no manifest any more")
            try:
                fresh = self._open()
            except ObjsearchError as exc:
                if self._index is None:
                    raise
                logger.warning("cannot open generation %s of %s yet (%s); serving generation %d meanwhile",
                               identity, self.root, exc, self._index.manifest.generation)
                return
            with self._work:
                stale, self._index, self._identity = self._index, fresh, identity
                if stale is not None:
                    stale.close()
            self._embedder = fresh._embedder or self._embedder
            logger.info("serving generation %d of %s", fresh.manifest.generation, self.root)
        finally:
            self._reopening.release()

    def _open(self) -> Index:
        try:
            return open_index(self.root, model=self._embedder, time_limit_s=self.time_limit_s, previous=self._index)
        except ModelMismatch:
            if self._embedder is None:
                raise
            # the index was rebuilt with another model: load that one instead
            logger.warning("the index at %s was rebuilt with another model; loading it", self.root)
            self._embedder = None
            return open_index(self.root, time_limit_s=self.time_limit_s)

    def close(self) -> None:
        with self._work:
            if self._index is not None:
                self._index.close()
                self._index = None
                self._identity = None
