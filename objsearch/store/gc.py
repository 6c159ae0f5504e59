"""Garbage collection: delete every data file that neither the current manifest nor a live reader uses.

Readers protect what they use with a **lease**: ``readers/<id>.lease`` lists the files of the
generation the reader opened, and the reader holds a shared ``flock`` on it for as long as it is
open. The OS drops the lock when the process dies, so a lease whose lock can be taken belongs to
a dead reader and is deleted. Superseded files are therefore deleted at the first commit after the
last reader of their generation closes, never kept for a fixed time: disk use stays within the
live data plus what open readers pin, at any commit rate.

The order that makes this safe: a reader reads the manifest, writes its lease, then reads the
manifest again and starts over if the generation moved. A writer swaps the manifest first and
collects garbage after. So either the writer's sweep sees the lease, or the reader sees the new
manifest and never uses the old files.

A reader that cannot write in the index folder (read-only media) holds no lease; it is safe as
long as no writer runs on the index, and otherwise gets a one-line "reopen the index" error.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path

from objsearch.errors import IndexCorrupt
from objsearch.store.layout import DATA_DIRS, MANIFEST, READERS_DIR
from objsearch.store.manifest import Manifest, read_manifest

logger = logging.getLogger(__name__)

LEASE_SUFFIX = ".lease"


class ReaderLease:
    """A live reader's claim on the files of one generation. Release it when the reader closes."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, root: Path, manifest: Manifest, attempts: int = 5) -> "ReaderLease | None":
        """A lease on every file of ``manifest``, or None when the index folder is not writable."""
        folder = root / READERS_DIR
        record = {"pid": os.getpid(), "generation": manifest.generation, "files": [e.path for e in manifest.files()]}
        for _ in range(attempts):
            try:
                folder.mkdir(exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".lease-", suffix=".tmp", dir=folder)
            except OSError as exc:
                logger.warning("no reader lease in %s (%s): a writer running meanwhile may delete files this reader uses", folder, exc)
                return None
            try:
                os.fchmod(fd, 0o644)  # a writer running as another user must be able to read it
                # Until this lock is held a sweep may take the file for a dead reader's and delete
                # it; then the rename below fails and the lease is made again.
                fcntl.flock(fd, fcntl.LOCK_SH)
                os.write(fd, json.dumps(record).encode("utf-8"))
                path = folder / f"{uuid.uuid4().hex}{LEASE_SUFFIX}"
                os.rename(tmp, path)
                return cls(fd, path)
            except FileNotFoundError:
                os.close(fd)
                continue
            except OSError as exc:
                os.close(fd)
                Path(tmp).unlink(missing_ok=True)
                logger.warning("no reader lease in %s (%s): a writer running meanwhile may delete files this reader uses", folder, exc)
                return None
        logger.warning("no reader lease in %s: its files kept disappearing while it was made", folder)
        return None

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def leased_manifest(root: Path, attempts: int = 10) -> tuple[Manifest, ReaderLease | None]:
    """The committed manifest and a lease on its files, taken before any writer could delete them
    (None when the folder is read-only). Release the lease when done reading."""
    for _ in range(attempts):
        manifest = read_manifest(root)
        lease = ReaderLease.acquire(root, manifest)
        if read_manifest(root).generation == manifest.generation:
            return manifest, lease
        if lease is not None:  # a writer committed meanwhile: take the new generation
            lease.release()
    raise IndexCorrupt(f"the index at {root} changed {attempts} times while it was being opened; try again")


def leased_files(root: Path) -> set[str] | None:
    """Files named by the leases of live readers (None when a lease cannot be read: then nothing
    may be deleted); leases (and half-made ones) of dead readers are deleted."""
    folder = root / READERS_DIR
    if not folder.is_dir():
        return set()
    files: set[str] = set()
    for path in folder.iterdir():
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its reader closed it meanwhile
        except PermissionError:
            logger.warning("cannot read the reader lease %s: no file is deleted until it goes", path)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if path.name.endswith(LEASE_SUFFIX):  # alive
                files |= set(_lease_record(fd).get("files", []))
            # an alive half-made lease: its reader checks the manifest again once the lease is made
        else:
            path.unlink(missing_ok=True)  # its reader is gone
        finally:
            os.close(fd)
    return files


def _lease_record(fd: int) -> dict:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {}


def collect_garbage(root: Path, manifest: Manifest) -> int:
    """Delete data files (and temp files of interrupted writes) that neither ``manifest`` nor a live
    reader's lease names. Only the writer calls this, under the writer lock. Returns bytes freed."""
    leased = leased_files(root)
    if leased is None:
        return 0
    keep = {e.path for e in manifest.files()} | leased
    candidates = [p for p in root.glob(".*.tmp")] + list(root.glob("vectors-*.faiss"))  # the latter: format 1's
    for folder in DATA_DIRS:
        if (root / folder).is_dir():
            candidates += [p for p in (root / folder).iterdir() if p.is_file()]
    freed = 0
    for path in candidates:
        if path.relative_to(root).as_posix() in keep or path.name == MANIFEST:
            continue
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except FileNotFoundError:
            pass
    if freed:
        logger.debug("garbage collection freed %d bytes", freed)
    return freed
