"""Compaction: merge runs of small segments (and image shards) into large ones.

The rule is size-tiered, as in Lucene's log merge policy and Cassandra's size-tiered compaction:
a segment's tier is ``floor(log_F(live rows / BASE))`` (0 below ``BASE * F``), and as soon as F
neighbouring segments share a tier they are merged into one, which may complete a run of the next
tier, and so on. Why this rule:

- a commit writes only its own rows; merges rewrite each object about ``log_F(N / BASE)`` times over
  the life of an index, so the amortised write cost per object grows with the log of the index,
  not with the index;
- at most F - 1 segments sit in each tier, so an index of N objects has at most
  ``(F - 1) * (log_F(N / BASE) + 1)`` segments, and as many objects shards: queries and file counts
  stay bounded whatever the commit cadence;
- merging neighbours keeps each segment's object ids in one range that no other segment's
  overlaps, which is what lets a row look-up read only the shards that hold the hits;
- a run of small segments left behind a larger one (which new segments can never join) is merged
  as it is (``stranded_run``);
- a merge never takes more than half of the index (MAX_MERGE_SHARE), so the files it writes
  before the old ones can go keep the disk below 1.5x the live data; the price is that the top
  tier may hold up to 2F - 1 segments instead of F - 1. ``objsearch compact`` merges everything
  at once and so needs up to 2x for its duration.

Image shards follow the same rule by file size, with the half-the-index limit taken against the
whole index: they are a sliver of it (2 MB of 2.1 GB at 1M objects), and against their own total
the limit held five 260 KB shards apart, so a query's row look-up opened five. A merge drops
tombstoned rows, so deleted objects leave the disk when their segment is next merged
(``objsearch compact`` merges everything now).
Each merge is one commit: new files first, then the manifest swap; a crash at any point leaves the
previous generation whole and the next writer deletes the half-written files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from objsearch import schema
from objsearch.store import parquet, vectors
from objsearch.store.keywords import write_keywords
from objsearch.store.layout import IMAGES_DIR, KEYWORDS_DIR, OBJECTS_DIR, VECTORS_DIR, FileEntry, file_entry
from objsearch.store.manifest import Manifest, Segment
from objsearch.store.segments import in_range

logger = logging.getLogger(__name__)

MERGE_FANOUT = 4
SEGMENT_TIER_BASE_ROWS = 1024  # tier 0: below 4096 rows
SEGMENT_EXACT_MAX_ROWS = 4096  # larger segments get an inverted file: at most F - 1 exact segments remain
MAX_MERGE_SHARE = 0.5  # a merge rewrites at most this share of the index: disk peaks below 1.5x the live data
IMAGE_SHARD_TIER_BASE_BYTES = 64 << 10


def tier(size: int, base: int, fanout: int = MERGE_FANOUT) -> int:
    """0 below ``base * fanout``, then one more for each further factor of ``fanout``."""
    return 0 if size < base * fanout else int(math.log(size / base, fanout) + 1e-9)


def run_to_merge(sizes: list[int], base: int, fanout: int = MERGE_FANOUT, *, total: int | None = None) -> tuple[int, int] | None:
    """(start, end) of the newest run of at least ``fanout`` neighbours in one tier that holds at
    most MAX_MERGE_SHARE of ``total`` (default: the sum of ``sizes``), or else a stranded run
    (``stranded_run``), or None."""
    total = sum(sizes) if total is None else total
    end, limit = len(sizes), MAX_MERGE_SHARE * total
    while end > 0:
        start = end - 1
        while start > 0 and tier(sizes[start - 1], base, fanout) == tier(sizes[end - 1], base, fanout):
            start -= 1
        if end - start >= fanout:
            # In a long run, the newest ``fanout`` neighbours that fit the limit.
            for first in range(end - fanout, start - 1, -1):
                if sum(sizes[first : first + fanout]) <= limit:
                    return first, first + fanout
        end = start
    return stranded_run(sizes, base, fanout, total=total)


def stranded_run(sizes: list[int], base: int, fanout: int = MERGE_FANOUT, *, total: int | None = None) -> tuple[int, int] | None:
    """(start, end) of the longest (then oldest) run of at least two neighbours that all sit in a
    lower tier than the segment right after them (and hold at most MAX_MERGE_SHARE of the total),
    or None.

    New segments only ever join the newest end, so such a run can never gather ``fanout`` members
    of one tier: left alone it would stay under every query for the life of the index. Runs
    like this appear where a merge was held back by MAX_MERGE_SHARE while the index was small, or
    where deletions shrank segments (at 1M objects, 10 of the 19 segments were such leftovers)."""
    tiers = [tier(size, base, fanout) for size in sizes]
    limit = MAX_MERGE_SHARE * (sum(sizes) if total is None else total)
    best = None
    for end in range(1, len(sizes)):
        start = end
        while start > 0 and tiers[start - 1] < tiers[end]:
            start -= 1
        # the longest such run, so that nested ones ([5, 5] in 5, 5, 20, 200) are not merged twice
        if end - start >= 2 and sum(sizes[start:end]) <= limit and (best is None or end - start > best[1] - best[0]):
            best = (start, end)
    return best


def outgrown_exact_segment(manifest: Manifest, rows: list[int]) -> int | None:
    """A segment built exact while the whole index was small (EXACT_MAX_OBJECTS) that the index has
    since outgrown: rebuilding it alone gives it the inverted file a query should not scan past."""
    if sum(rows) <= vectors.EXACT_MAX_OBJECTS or manifest.index_type_override:
        return None
    for number, (segment, live) in enumerate(zip(manifest.segments, rows)):
        if segment.index_type == vectors.DEFAULT_INDEX_TYPE and live > SEGMENT_EXACT_MAX_ROWS:
            return number
    return None


def live_rows(segments: list[Segment], tombstones: np.ndarray) -> list[int]:
    return [s.rows - len(in_range(tombstones, s)) for s in segments]


def segment_index_type(manifest: Manifest, rows: int, total_rows: int) -> str:
    """The FAISS factory string for a segment of ``rows`` vectors in an index of ``total_rows``:
    the --index-type override, or the automatic choice within the segment's share of the memory
    budget: exact while the whole index is small enough for exact search (EXACT_MAX_OBJECTS), and
    beyond that only up to SEGMENT_EXACT_MAX_ROWS (a query scans every exact segment whole);
    exact while too few vectors to train the type. An inverted file gets the whole index's list
    density (``vectors.ivf_nlist``)."""
    dim = manifest.embedder.embed_dim
    budget = manifest.max_index_memory * rows // max(total_rows, 1) if manifest.max_index_memory else None
    exact_max = vectors.EXACT_MAX_OBJECTS if total_rows <= vectors.EXACT_MAX_OBJECTS else SEGMENT_EXACT_MAX_ROWS
    target = manifest.index_type_override or vectors.choose_index_type(rows, dim, budget or None, exact_max=exact_max, collection_objects=total_rows)
    return target if vectors.trainable(target, rows) else vectors.DEFAULT_INDEX_TYPE


def write_segment(root: Path, table: pa.Table, tag: str, index_type: str) -> Segment:
    """Write an objects table (sorted by object id) as a segment: its shard, its FAISS index, built
    from the stored (float16) embeddings, so FAISS always holds exactly what Parquet holds, and the
    full-text index of its labels and captions."""
    objects_path = f"{OBJECTS_DIR}/objects-{tag}.parquet"
    parquet.write_shard(table, root / objects_path)
    object_ids = table.column(schema.OBJECT_ID).to_numpy()
    index = vectors.build(object_ids, parquet.embeddings_of(table), index_type)
    vectors_path = f"{VECTORS_DIR}/vectors-{tag}.faiss"
    vectors.write(index, root / vectors_path)
    return Segment(objects=file_entry(root, objects_path), vectors=file_entry(root, vectors_path), index_type=index_type,
                   rows=table.num_rows, min_object_id=int(object_ids[0]), max_object_id=int(object_ids[-1]),
                   keywords=write_segment_keywords(root, table, tag))


def write_segment_keywords(root: Path, table: pa.Table, tag: str) -> FileEntry:
    """The keywords file (``objsearch.store.keywords``) of the objects in ``table`` (it needs the
    object id, label and caption columns)."""
    relative = f"{KEYWORDS_DIR}/keywords-{tag}.sqlite"
    write_keywords(root / relative, table.column(schema.OBJECT_ID).to_numpy(), table.column(schema.LABEL).to_pylist(),
                   table.column(schema.CAPTION).to_pylist())
    return file_entry(root, relative)


def rebuild_segment_keywords(root: Path, segment: Segment, embed_dim: int, tag: str) -> tuple[Segment, int]:
    """``segment`` with a keywords file written anew from its objects shard's ids, labels and
    captions (an upgrade from a format without one, or a repair); returns (it, the objects read)."""
    table = parquet.read_shards([root / segment.objects.path], schema.objects_schema(embed_dim),
                                [schema.OBJECT_ID, schema.LABEL, schema.CAPTION])
    return dataclasses.replace(segment, keywords=write_segment_keywords(root, table, tag)), table.num_rows


def merge_segments(root: Path, manifest: Manifest, start: int, end: int, tombstones: np.ndarray,
                   tag: str) -> tuple[list[Segment], np.ndarray]:
    """Merge ``manifest.segments[start:end]`` into one segment without their tombstoned rows.
    Returns (the segments that replace them: one, or none when no row is left; the tombstones purged)."""
    merged = manifest.segments[start:end]
    purged = tombstones[(tombstones >= merged[0].min_object_id) & (tombstones <= merged[-1].max_object_id)]
    table = parquet.read_shards([root / s.objects.path for s in merged], schema.objects_schema(manifest.embedder.embed_dim))
    if len(purged):
        table = table.filter(pc.invert(pc.is_in(table.column(schema.OBJECT_ID), value_set=pa.array(purged, pa.int64()))))
    if table.num_rows == 0:
        return [], purged
    total = sum(s.rows for s in manifest.segments) - manifest.tombstone_count
    index_type = segment_index_type(manifest, table.num_rows, total)
    logger.info("merging %d segments (%d rows, %d tombstoned) into one %s segment", len(merged), table.num_rows, len(purged), index_type)
    return [write_segment(root, table, tag, index_type)], purged


def merge_image_shards(root: Path, entries: list[FileEntry], tag: str) -> tuple[FileEntry, pa.Table]:
    """One shard holding the rows of ``entries`` -> (its entry, its rows)."""
    table = parquet.read_shards([root / e.path for e in entries], schema.IMAGES_SCHEMA).sort_by(schema.IMAGE_ID)
    relative = f"{IMAGES_DIR}/images-{tag}.parquet"
    parquet.write_shard(table, root / relative)
    return file_entry(root, relative), table
