"""Rows by id without scanning: the row groups of a Parquet shard are located by their statistics.

Objects shards are sorted by object_id and images shards by image_id, and both are written in
small row groups (``parquet.ROW_GROUP_ROWS``), so fetching the rows of k search hits reads about k
row groups of a few columns, whatever the size of the index. Each shard's footer is parsed once per
reader and kept; a small shard is read whole on its first look-up and kept (WHOLE_MAX_ROWS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


# Shards of at most this many rows are read whole, once, on their first look-up, and kept (the
# columns asked for: for the hit columns about 75 bytes a row, so 2.4 MB at most). A look-up in a
# kept shard is a binary search; a reading call costs about 0.1 ms whatever it reads, and the
# small shards that merging has not yet folded into large ones would otherwise each cost one.
WHOLE_MAX_ROWS = 32_768


class ShardIndex:
    """Random access by a key column (int64) to one Parquet file, via row-group min/max statistics,
    or for a small file (WHOLE_MAX_ROWS) by keeping it in memory."""

    def __init__(self, path: Path, key: str) -> None:
        # No pre-buffering: a look-up reads a few small column chunks, which coalesced reads only slow.
        self.file = pq.ParquetFile(path, pre_buffer=False)
        self.key = key
        metadata = self.file.metadata
        column = metadata.schema.to_arrow_schema().get_field_index(key)
        lows, highs = [], []
        for number in range(metadata.num_row_groups):
            stats = metadata.row_group(number).column(column).statistics
            if stats is None or not stats.has_min_max:  # no statistics: the group may hold anything
                lows.append(np.iinfo(np.int64).min)
                highs.append(np.iinfo(np.int64).max)
            else:
                lows.append(stats.min)
                highs.append(stats.max)
        self.lows, self.highs = np.array(lows, np.int64), np.array(highs, np.int64)
        self.low = int(self.lows.min()) if len(lows) else 0  # the file's key range: most look-ups stop here
        self.high = int(self.highs.max()) if len(highs) else -1
        self.whole = metadata.num_rows <= WHOLE_MAX_ROWS
        self._kept: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, pa.Table]] = {}

    def rows(self, keys: np.ndarray, columns: Sequence[str]) -> pa.Table | None:
        """The rows whose key is in sorted ``keys`` (``columns`` plus the key), or None when none can be here."""
        if len(keys) == 0 or keys[-1] < self.low or keys[0] > self.high:
            return None
        wanted = tuple(dict.fromkeys([self.key, *columns]))
        if self.whole:
            return self._kept_rows(keys, wanted)
        # A group may hold a key when some key lies in [low, high]: the first key >= low is <= high.
        first = np.searchsorted(keys, self.lows)
        candidates = np.nonzero((first < len(keys)) & (keys[np.minimum(first, len(keys) - 1)] <= self.highs))[0]
        if len(candidates) == 0:
            return None
        table = self.file.read_row_groups(candidates.tolist(), columns=list(wanted), use_threads=False)
        found = table.column(self.key).to_numpy()
        at = np.minimum(np.searchsorted(keys, found), len(keys) - 1)
        return table.take(np.nonzero(keys[at] == found)[0])

    def _kept_rows(self, keys: np.ndarray, wanted: tuple[str, ...]) -> pa.Table:
        if wanted not in self._kept:
            table = self.file.read(columns=list(wanted), use_threads=False)
            all_keys = table.column(self.key).to_numpy()
            order = np.argsort(all_keys, kind="stable")  # shards are written sorted; this only makes sure
            self._kept[wanted] = (all_keys[order], order, table)
        sorted_keys, order, table = self._kept[wanted]
        # every row of a matching key (a key may repeat in a shard), in file order
        first, last = np.searchsorted(sorted_keys, keys, "left"), np.searchsorted(sorted_keys, keys, "right")
        counts = last - first
        positions = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return table.take(np.sort(order[positions]))


class RowFinder:
    """Rows of several shards by key; shards are opened on first use and kept."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._shards: dict[Path, ShardIndex] = {}

    def kept_for(self, paths: Sequence[Path]) -> "RowFinder":
        """A finder for a newer generation: the opened shards it still names are taken over
        (shard files never change), the others dropped, so their files can leave the disk."""
        finder = RowFinder(self.key)
        wanted = set(paths)
        finder._shards = {path: shard for path, shard in dict(self._shards).items() if path in wanted}
        return finder

    def rows(self, paths: Sequence[Path], keys: np.ndarray, columns: Sequence[str], schema: pa.Schema) -> pa.Table:
        """Rows of ``paths`` whose key is in ``keys`` (any order, duplicates allowed), as ``schema``'s ``columns``."""
        keys = np.unique(np.asarray(keys, dtype=np.int64))
        wanted = list(dict.fromkeys([self.key, *columns]))
        target = pa.schema([schema.field(c) for c in wanted])
        parts = []
        for path in paths:
            if path not in self._shards:
                self._shards[path] = ShardIndex(path, self.key)
            found = self._shards[path].rows(keys, columns)
            if found is not None and found.num_rows:
                found = found.select(wanted)
                parts.append(found if found.schema == target else found.cast(target))
        if not parts:
            return target.empty_table()
        return pa.concat_tables(parts)
