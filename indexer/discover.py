"""Walk folders for image files and compare them with what an index already holds."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from objsearch.store.commit import ImageRecord

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class FileStat:
    """An image file found on disk: absolute path, size in bytes, modification time in ns.

    ``path`` is the name the index stores: always valid UTF-8 (undecodable bytes of a file name
    appear as ``\\xNN`` escapes). ``fs_path`` is the name to open the file by.
    """

    path: str
    file_size: int
    mtime_ns: int
    fs_path: str = ""

    def __post_init__(self) -> None:
        if not self.fs_path:
            object.__setattr__(self, "fs_path", self.path)


def display_path(fs_path: str) -> str:
    """An OS path (which may hold undecodable bytes as surrogates) -> a valid UTF-8 string."""
    return os.fsencode(fs_path).decode("utf-8", "backslashreplace")


@dataclass
class Discovery:
    files: list[FileStat] = field(default_factory=list)
    unreadable_dirs: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    unstatable: list[str] = field(default_factory=list)  # files seen but not stat-able right now

    def uncertain(self, path: str) -> bool:
        """True when ``path`` may exist but could not be seen: it must not count as deleted."""
        if path in self.unstatable:
            return True
        return any(path.startswith(folder.rstrip(os.sep) + os.sep) for folder, _ in self.unreadable_dirs)


def _excluded(path: str, root: str, patterns: Sequence[str]) -> bool:
    relative = os.path.relpath(path, root)
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(os.path.basename(path), p) or fnmatch.fnmatch(path, p) for p in patterns)


def discover(roots: Iterable[str | os.PathLike], exclude: Sequence[str] = ()) -> Discovery:
    """Image files below ``roots`` (recursively, sorted), minus those matching an ``exclude`` glob.

    A glob is matched against the path relative to its root, the file name and the absolute path.
    Symlinked directories are not followed (no loops); symlinked files are. Directories that
    cannot be listed are reported, not fatal. A file named as a root is taken whatever its
    extension: the user asked for it, so if it is no image, decoding records why.
    """
    found = Discovery()
    seen: set[str] = set()
    for root in roots:
        root = os.path.abspath(root)
        named_file = os.path.isfile(root)
        if named_file:
            candidates = [root]
        elif os.path.isdir(root):
            candidates = []

            def on_error(exc: OSError) -> None:
                folder = display_path(str(exc.filename or "?"))
                found.unreadable_dirs.append((folder, exc.strerror or str(exc)))
                logger.warning("cannot read directory %s: %s", folder, exc.strerror)

            for folder, dirs, names in os.walk(root, onerror=on_error, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not _excluded(os.path.join(folder, d), root, exclude))
                candidates += [os.path.join(folder, n) for n in sorted(names)]
        else:
            raise FileNotFoundError(root)
        for path in candidates:
            if (not named_file and Path(path).suffix.lower() not in IMAGE_EXTENSIONS) or path in seen or _excluded(path, root, exclude):
                continue
            try:
                stat = os.stat(path)
            except OSError:
                try:  # a dangling symlink or a symlink loop: listed, so its error gets recorded
                    stat = os.lstat(path)
                except OSError as exc:  # removed while walking
                    logger.warning("cannot stat %s: %s", display_path(path), exc.strerror)
                    found.unstatable.append(display_path(path))
                    continue
            seen.add(path)
            found.files.append(FileStat(display_path(path), stat.st_size, stat.st_mtime_ns, fs_path=path))
    return found


def content_hash(path: str) -> str:
    """blake2b-128 hex digest of the file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class IndexPlan:
    """What a run must do. ``changed`` pairs a file with the record it replaces."""

    new: list[FileStat] = field(default_factory=list)
    changed: list[tuple[FileStat, ImageRecord]] = field(default_factory=list)
    touched: list[tuple[FileStat, ImageRecord]] = field(default_factory=list)  # same bytes, new stat
    deleted: list[ImageRecord] = field(default_factory=list)
    unchanged: int = 0


def plan(found: Discovery, known: dict[str, ImageRecord], roots: Iterable[str | os.PathLike]) -> IndexPlan:
    """Compare files on disk with the index: same size and mtime = unchanged; otherwise the
    content hash decides between 'touched' (metadata only) and 'changed' (re-embed). Indexed files
    under ``roots`` that are gone (or now excluded) are 'deleted', unless their folder could not be
    read this time. A file that could not be read last time (no content hash) is tried again.
    """
    result = IndexPlan()
    files = found.files
    on_disk = {f.path for f in files}
    for file in files:
        record = known.get(file.path)
        if record is None:
            result.new.append(file)
        elif not record.content_hash:
            result.changed.append((file, record))
        elif (record.file_size, record.mtime_ns) == (file.file_size, file.mtime_ns):
            result.unchanged += 1
        elif record.file_size == file.file_size and _same_content(file.fs_path, record.content_hash):
            result.touched.append((file, record))
        else:
            result.changed.append((file, record))
    prefixes = [os.path.abspath(r) for r in roots]
    for path, record in known.items():
        under_root = any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)
        if under_root and path not in on_disk and not found.uncertain(path):
            result.deleted.append(record)
    return result


def _same_content(path: str, expected_hash: str) -> bool:
    try:
        return content_hash(path) == expected_hash
    except OSError:
        return False
