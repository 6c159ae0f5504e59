"""Row look-ups by key (objsearch.store.rows): the row-group path and the kept-whole path of small
shards give every row whose key is asked for, and nothing else."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from objsearch.store import rows


@pytest.mark.parametrize("whole", [True, False], ids=["kept whole", "by row group"])
def test_rows_by_key_match_a_scan(tmp_path, monkeypatch, whole):
    monkeypatch.setattr(rows, "WHOLE_MAX_ROWS", 10**9 if whole else 0)
    rng = np.random.default_rng(0)
    keys = np.sort(rng.choice(5000, 700, replace=False)).astype(np.int64)
    keys = np.sort(np.concatenate([keys, keys[::50]]))  # some keys twice
    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"k": keys, "v": [f"row{i}" for i in range(len(keys))]}), path, row_group_size=64)
    shard = rows.ShardIndex(path, "k")
    assert shard.whole is whole
    for _ in range(50):
        asked = np.unique(rng.integers(-10, 5010, rng.integers(1, 30)).astype(np.int64))
        found = shard.rows(asked, ["v"])
        expected = [(int(k), f"row{i}") for i, k in enumerate(keys) if k in set(asked.tolist())]
        got = [] if found is None else list(zip(found.column("k").to_pylist(), found.column("v").to_pylist()))
        assert got == expected
