"""Upgrade older index formats in place; nothing is re-embedded.

Format 1 (one FAISS file for the whole index) to segments: each objects shard becomes a segment,
its rows written again sorted by object id, in small row groups, beside a FAISS index built from
its stored embeddings. The new manifest replaces the old one atomically, under the writer lock, so a crash leaves the old
index whole; the old files are deleted after the swap.

Format 2 (segments without keyword files): ``add_keyword_index`` writes each segment's full-text
index from its shard's labels and captions, then swaps in a manifest of the current format. The
writer does it when it opens such an index, so any `objsearch index` or `compact` run upgrades it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from objsearch import schema
from objsearch.errors import IndexCorrupt, ObjsearchError
from objsearch.store import parquet
from objsearch.store.compact import rebuild_segment_keywords, segment_index_type, write_segment
from objsearch.store.gc import collect_garbage
from objsearch.store.layout import MANIFEST, FileEntry, WriterLock, sha256_file
from objsearch.store.manifest import EmbedderInfo, Manifest, write_manifest

logger = logging.getLogger(__name__)

OLD_FORMAT = 1


def manifest_format(root: Path) -> int | None:
    """The format version manifest.json declares, without interpreting the rest."""
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("format_version")
    except (OSError, ValueError, AttributeError):
        return None


def upgrade_format_1(root: Path) -> Manifest:
    """Rewrite the format-1 index at ``root`` as segments; returns the new manifest."""
    lock = WriterLock(root)
    lock.acquire()
    try:
        old = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        if old.get("format_version") != OLD_FORMAT:
            raise ObjsearchError(f"{root} is not an index of format {OLD_FORMAT}")
        manifest = Manifest(embedder=EmbedderInfo(**old["embedder"]), generation=old["generation"] + 1,
                            image_shards=[FileEntry(**f) for f in old["image_shards"]],
                            index_type_override=old.get("index_type_override", ""), max_index_memory=old.get("max_index_memory", 0),
                            next_image_id=old["next_image_id"], next_object_id=old["next_object_id"], counts=old["counts"])
        damaged = [f["path"] for f in old["image_shards"] + old["object_shards"] if not _intact(root, FileEntry(**f))]
        if damaged:
            raise IndexCorrupt(f"cannot upgrade {root}: files missing or damaged: {', '.join(damaged[:5])}; re-index into a new directory")
        objects_schema = schema.objects_schema(manifest.embedder.embed_dim)
        total = old["counts"]["objects"]
        for number, shard in enumerate(old["object_shards"]):
            table = parquet.read_shards([root / shard["path"]], objects_schema).sort_by(schema.OBJECT_ID)
            if table.num_rows:
                tag = f"g{manifest.generation:08d}-upgraded-{number:05d}"
                manifest.segments.append(write_segment(root, table, tag, segment_index_type(manifest, table.num_rows, total)))
        write_manifest(root, manifest)
        collect_garbage(root, manifest)
        for stale in root.glob("vectors-*.faiss"):  # format 1 kept its vectors beside the manifest
            stale.unlink()
        logger.info("upgraded %s to format %d: %d segments", root, manifest.format_version, len(manifest.segments))
        return manifest
    finally:
        lock.release()


def _intact(root: Path, entry: FileEntry) -> bool:
    path = root / entry.path
    return path.is_file() and path.stat().st_size == entry.size and sha256_file(path) == entry.sha256


def add_keyword_index(root: Path, manifest: Manifest) -> Manifest:
    """Give every segment of ``manifest`` that has none its keywords file, and commit the result as
    the current format. The caller holds the writer lock. Returns the new manifest."""
    generation = manifest.generation + 1
    segments = []
    for number, segment in enumerate(manifest.segments):
        if segment.keywords is None:
            segment, _ = rebuild_segment_keywords(root, segment, manifest.embedder.embed_dim, f"g{generation:08d}-added-{number:05d}")
        segments.append(segment)
    upgraded = dataclasses.replace(manifest, generation=generation, segments=segments, format_version=schema.SCHEMA_VERSION)
    write_manifest(root, upgraded)
    logger.info("added a keyword index to the %d segments of %s (format %d)", len(segments), root, schema.SCHEMA_VERSION)
    return upgraded
