"""The index directory: paths, durable writes, checksums and the writer lock.

    manifest.json          what is committed (``objsearch.store.manifest``), replaced atomically
    images/*.parquet       immutable shards of the images table
    objects/*.parquet      immutable shards of the objects table, one per segment
    vectors/*.faiss        the FAISS index of each segment (ids = object ids)
    keywords/*.sqlite      the full-text (SQLite FTS5) index of each segment's labels and captions
    tombstones/*.parquet   object ids deleted but still in a segment
    readers/*.lease        one per open reader: the files it uses (``objsearch.store.gc``)
    verified.json          files whose checksum the writer verified, by size, mtime, ctime, inode
    lock                   held (flock) by the one writer; holds its PID

A commit writes new files under fresh names, then replaces manifest.json with a rename, so a
reader that opens the manifest it finds never sees a half-written state, and a crash at any
moment leaves the last committed generation intact.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from objsearch.errors import IndexLocked, IndexNotFound

MANIFEST = "manifest.json"
LOCK = "lock"
IMAGES_DIR = "images"
OBJECTS_DIR = "objects"
VECTORS_DIR = "vectors"
KEYWORDS_DIR = "keywords"
TOMBSTONES_DIR = "tombstones"
READERS_DIR = "readers"
VERIFIED = "verified.json"
STAGING_DIR = "staging"  # finished indexing work (parts) waiting for the writer; not swept by gc
DATA_DIRS = (IMAGES_DIR, OBJECTS_DIR, VECTORS_DIR, KEYWORDS_DIR, TOMBSTONES_DIR)  # what garbage collection sweeps
INDEX_ENV_VAR = "OBJSEARCH_INDEX"
DEFAULT_INDEX_DIR = ".objsearch"


def resolve_index_path(path: str | os.PathLike | None) -> Path:
    """--index PATH, else $OBJSEARCH_INDEX, else ./.objsearch; IndexNotFound when that is an existing non-directory."""
    root = Path(path or os.environ.get(INDEX_ENV_VAR) or DEFAULT_INDEX_DIR)
    if root.exists() and not root.is_dir():
        raise IndexNotFound(f"{root} is a file, not an index directory; give --index a directory (new or holding an index)")
    return root


@dataclass
class FileEntry:
    """A committed file, relative to the index root, with its size (bytes) and sha256."""

    path: str
    size: int
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(root: Path, relative: str) -> FileEntry:
    full = root / relative
    return FileEntry(path=relative, size=full.stat().st_size, sha256=sha256_file(full))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, write: Callable[[str], None]) -> None:
    """Have ``write(temp_path)`` create the file's content beside ``path``, fsync it, rename it
    over ``path`` and fsync the folder: afterwards ``path`` holds all of it or its old content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; index files should read like any other file
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    durable_write(path, lambda tmp: Path(tmp).write_bytes(data))


class WriterLock:
    """An exclusive, non-blocking flock on ``root/lock``; the holder's PID is written inside.

    The OS drops the lock when the process dies, so a killed writer never leaves a stale lock.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexLocked(f"index {self.path.parent} is locked by PID {holder} (another `objsearch index` is running)") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
