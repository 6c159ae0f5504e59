"""Checksums the writer has verified, trusted while the file's size, mtime, ctime and inode hold.

A writer must never build on damaged files, but hashing every byte at every open costs about a
second per GB. So each file is hashed once (when the writer writes it, or the first time a writer
opens an index holding it) and the result kept in ``verified.json`` with the file's
``(size, mtime_ns, ctime_ns, inode)``. Any write to a file, a copy or a restore changes at least one
of those (ctime cannot be set by user tools), so a file that was altered is hashed again; what
this cannot see, bits that rot on the medium without any write, ``objsearch doctor`` finds by
hashing everything.

The cache is a convenience: missing or unreadable, every file is simply hashed again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from objsearch.store.layout import VERIFIED, FileEntry, sha256_file

logger = logging.getLogger(__name__)


def _identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class VerifiedFiles:
    """The verified-checksum cache of one index (``root/verified.json``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: dict[str, list] = {}  # path -> [size, mtime_ns, ctime_ns, inode, sha256]
        try:
            data = json.loads((root / VERIFIED).read_text(encoding="utf-8"))
            if isinstance(data, dict):
                self._entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 5}
        except (OSError, ValueError):
            pass

    def damaged(self, entries: list[FileEntry], *, trust_cache: bool = True) -> list[str]:
        """Paths of ``entries`` that are missing or whose content does not match their sha256;
        files unchanged since they were last verified are not read (unless not ``trust_cache``)."""
        bad = []
        for entry in entries:
            path = self.root / entry.path
            try:
                identity = _identity(path)
            except FileNotFoundError:
                bad.append(entry.path)
                continue
            if identity[0] != entry.size:
                bad.append(entry.path)
                continue
            if trust_cache and self._entries.get(entry.path) == [*identity, entry.sha256]:
                continue
            if sha256_file(path) != entry.sha256:
                bad.append(entry.path)
                continue
            self._entries[entry.path] = [*identity, entry.sha256]
        return bad

    def record(self, entry: FileEntry) -> None:
        """``entry`` was just written and hashed by this writer."""
        self._entries[entry.path] = [*_identity(self.root / entry.path), entry.sha256]

    def save(self, live: list[FileEntry]) -> None:
        """Keep the entries of ``live`` files only; written without fsync (losing it costs a re-hash)."""
        names = {e.path for e in live}
        self._entries = {k: v for k, v in self._entries.items() if k in names}
        tmp = self.root / f".{VERIFIED}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(self._entries), encoding="utf-8")
            os.replace(tmp, self.root / VERIFIED)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            logger.debug("could not save %s: %s", VERIFIED, exc)
