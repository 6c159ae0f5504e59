"""The index directory: paths, the manifest (replaced atomically), checksums and the writer lock.

    manifest.json        what is committed: shard files, FAISS file, checksums, embedder, counts
    images/*.parquet     immutable shards of the images table
    objects/*.parquet    immutable shards of the objects table
    vectors-G.faiss      FAISS index of generation G (ids = object ids)
    lock                 held (flock) by the one writer; holds its PID

A commit writes new files under fresh names, then replaces manifest.json with a rename, so a
reader that opens the manifest it finds never sees a half-written state, and a crash at any
moment leaves the last committed generation intact.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from objsearch.errors import FormatVersionError, IndexCorrupt, IndexLocked, IndexNotFound
from objsearch.schema import SCHEMA_VERSION

MANIFEST = "manifest.json"
LOCK = "lock"
IMAGES_DIR = "images"
OBJECTS_DIR = "objects"
INDEX_ENV_VAR = "OBJSEARCH_INDEX"
DEFAULT_INDEX_DIR = ".objsearch"


def resolve_index_path(path: str | os.PathLike | None) -> Path:
    """--index PATH, else $OBJSEARCH_INDEX, else ./.objsearch; IndexNotFound when that is an existing non-directory."""
    root = Path(path or os.environ.get(INDEX_ENV_VAR) or DEFAULT_INDEX_DIR)
    if root.exists() and not root.is_dir():
        raise IndexNotFound(f"{root} is a file, not an index directory; give --index a directory (new or holding an index)")
    return root


@dataclass
class EmbedderInfo:
    """Identity of the embedder that built an index; ``source`` is the --model string that loads it."""

    name: str
    version: str
    embed_dim: int
    source: str = ""

    @classmethod
    def of(cls, embedder, source: str = "") -> "EmbedderInfo":
        """The identity of an ObjectEmbedder instance."""
        return cls(embedder.name, embedder.version, int(embedder.embed_dim), source or embedder.name)


@dataclass
class FileEntry:
    """A committed file, relative to the index root, with its size (bytes) and sha256."""

    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    embedder: EmbedderInfo
    format_version: int = SCHEMA_VERSION
    generation: int = 0
    image_shards: list[FileEntry] = field(default_factory=list)
    object_shards: list[FileEntry] = field(default_factory=list)
    vectors: FileEntry | None = None
    index_type: str = "IDMap2,Flat"  # the FAISS factory string of ``vectors``
    index_type_override: str = ""  # set by --index-type: used whatever the size
    max_index_memory: int = 0  # bytes, set by --max-index-memory; 0 = no budget
    next_image_id: int = 0
    next_object_id: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"images": 0, "images_error": 0, "objects": 0})
    updated_at: float = 0.0

    def files(self) -> list[FileEntry]:
        return self.image_shards + self.object_shards + ([self.vectors] if self.vectors else [])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        version = data.get("format_version")
        if version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise FormatVersionError(
                f"index format version {version} is {'newer than' if newer else 'incompatible with'} "
                f"this objsearch (format {SCHEMA_VERSION})"
                + ("; upgrade objsearch" if newer else "; re-index into a new directory")
            )
        data = dict(data)
        data["embedder"] = EmbedderInfo(**data["embedder"])
        data["image_shards"] = [FileEntry(**f) for f in data["image_shards"]]
        data["object_shards"] = [FileEntry(**f) for f in data["object_shards"]]
        data["vectors"] = FileEntry(**data["vectors"]) if data.get("vectors") else None
        return cls(**data)


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if not path.is_file():
        raise IndexNotFound(f"no index at {root} (run `objsearch index DIR` first, or pass --index)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Manifest.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise IndexCorrupt(f"{path} is unreadable ({exc}); it is only ever replaced atomically, so it was altered by hand") from None


def missing_or_resized(root: Path, manifest: Manifest) -> list[str]:
    """Committed files that are absent or whose size differs from the manifest's (a cheap check;
    ``objsearch.store.doctor`` also verifies checksums)."""
    bad = []
    for entry in manifest.files():
        try:
            if (root / entry.path).stat().st_size != entry.size:
                bad.append(entry.path)
        except FileNotFoundError:
            bad.append(entry.path)
    return bad


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


def write_manifest(root: Path, manifest: Manifest) -> None:
    manifest.updated_at = time.time()
    atomic_write_bytes(root / MANIFEST, manifest.to_json().encode("utf-8"))


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
