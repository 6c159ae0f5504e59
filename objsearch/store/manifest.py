"""The manifest: what one committed generation of an index holds, and who built it.

``manifest.json`` names every committed file with its size and sha256, the embedder's identity,
the format version and the counts. It is only ever replaced whole, atomically (a rename), so a
reader that opens the manifest it finds sees one consistent generation.

Objects and their vectors live in **segments**: an immutable objects shard (Parquet), the FAISS
index of exactly its rows and the full-text index of their labels and captions, side by side. A commit adds one segment; compaction replaces a run of
segments by one. Objects of removed images are **tombstoned** (their ids listed in one small
Parquet file) until compaction drops their rows; the catalog and the vector search both leave
tombstoned ids out, so a reader never sees them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from objsearch.errors import FormatVersionError, IndexCorrupt, IndexNotFound, ModelMismatch
from objsearch.schema import SCHEMA_VERSION

#: The previous format: the same but for the segments' keyword files. Read as it is; a writer
#: upgrades it (``IndexWriter``), adding a keywords file to every segment.
NO_KEYWORDS_FORMAT = 2
from objsearch.store.layout import MANIFEST, FileEntry, atomic_write_bytes
from objsearch.store.vectors import DEFAULT_INDEX_TYPE


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

    def same_model(self, other: "EmbedderInfo") -> bool:
        """Whether embeddings of ``other`` and of this one are comparable (``source`` aside)."""
        return (self.name, self.version, self.embed_dim) == (other.name, other.version, other.embed_dim)


def check_embedder(manifest: "Manifest", info: EmbedderInfo) -> None:
    """ModelMismatch unless ``info`` is the embedder that built the index."""
    check_same_model(manifest.embedder, info)


def check_same_model(built: EmbedderInfo, info: EmbedderInfo) -> None:
    """ModelMismatch unless ``info`` is the model ``built`` names."""
    if not built.same_model(info):
        raise ModelMismatch(
            f"this index was built with model {built.name!r} (version {built.version}, {built.embed_dim}-d); "
            f"it cannot be used with {info.name!r} (version {info.version}, {info.embed_dim}-d). "
            "Use the same --model, or index into another --index directory."
        )


@dataclass
class Segment:
    """An objects shard, the FAISS index of its rows (FAISS ids = object ids) and the full-text
    index of their labels and captions (``keywords``; None in an index of NO_KEYWORDS_FORMAT).

    ``rows``: rows in the shard, tombstoned ones included. Object ids are allocated in increasing
    order and compaction merges runs of neighbouring segments, so every id of the shard lies in
    ``[min_object_id, max_object_id]`` and the ranges of different segments do not overlap.
    """

    objects: FileEntry
    vectors: FileEntry
    index_type: str
    rows: int
    min_object_id: int
    max_object_id: int
    keywords: FileEntry | None = None

    def files(self) -> list[FileEntry]:
        return [self.objects, self.vectors] + ([self.keywords] if self.keywords else [])

    def holds(self, object_id: int) -> bool:
        return self.min_object_id <= object_id <= self.max_object_id


@dataclass
class Manifest:
    embedder: EmbedderInfo
    format_version: int = SCHEMA_VERSION
    generation: int = 0
    image_shards: list[FileEntry] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # in object-id order
    tombstones: FileEntry | None = None  # Parquet, one column: object_id of every deleted object still in a segment
    tombstone_count: int = 0
    index_type_override: str = ""  # set by --index-type: every segment large enough to train it uses it
    max_index_memory: int = 0  # bytes, set by --max-index-memory; 0 = no budget
    next_image_id: int = 0
    next_object_id: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"images": 0, "images_error": 0, "objects": 0})
    updated_at: float = 0.0

    @property
    def object_shards(self) -> list[FileEntry]:
        return [s.objects for s in self.segments]

    @property
    def index_type(self) -> str:
        """The FAISS factory string of the largest segment (exact search when there is none)."""
        return max(self.segments, key=lambda s: s.rows).index_type if self.segments else DEFAULT_INDEX_TYPE

    def files(self) -> list[FileEntry]:
        """Every committed file."""
        segment_files = [f for s in self.segments for f in s.files()]
        return self.image_shards + segment_files + ([self.tombstones] if self.tombstones else [])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        version = data.get("format_version")
        if version not in (SCHEMA_VERSION, NO_KEYWORDS_FORMAT):
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise FormatVersionError(
                f"index format version {version} is {'newer than' if newer else 'incompatible with'} "
                f"this objsearch (format {SCHEMA_VERSION})"
                + ("; upgrade objsearch" if newer else "; run `objsearch compact` once to upgrade it in place (nothing is re-embedded)"
                   if version == 1 else "; re-index into a new directory")
            )
        data = dict(data)
        data["embedder"] = EmbedderInfo(**data["embedder"])
        data["image_shards"] = [FileEntry(**f) for f in data["image_shards"]]
        data["segments"] = [Segment(**{**s, "objects": FileEntry(**s["objects"]), "vectors": FileEntry(**s["vectors"]),
                                       "keywords": FileEntry(**s["keywords"]) if s.get("keywords") else None})
                            for s in data["segments"]]
        data["tombstones"] = FileEntry(**data["tombstones"]) if data.get("tombstones") else None
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


def write_manifest(root: Path, manifest: Manifest) -> None:
    """The commit point: ``manifest`` replaces manifest.json atomically and durably."""
    manifest.updated_at = time.time()
    atomic_write_bytes(root / MANIFEST, manifest.to_json().encode("utf-8"))


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


def index_size_bytes(root: Path) -> int:
    """Bytes on disk of every committed file plus the manifest."""
    manifest = read_manifest(root)
    return sum(entry.size for entry in manifest.files()) + os.path.getsize(root / MANIFEST)
