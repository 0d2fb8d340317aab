"""RocksRowStore skips the read of stored versions for a write newer than anything the
table holds; these check that the skip never lets an older write win, across reopening
and on stores written before the newest-version key existed."""

from __future__ import annotations

import numpy as np

from sync.store import _MAXV, RocksRowStore

IDS = np.array([5, -1, 2**62, 7], np.int64)


def _rows(value: float) -> np.ndarray:
    return np.full((len(IDS), 4), value, np.float32)


def test_rocks_store_late_write_after_newer_loses(tmp_path):
    store = RocksRowStore(tmp_path / "s")
    assert store.write_rows("t", IDS, _rows(5), version=5) == 4
    assert store.write_rows("t", IDS[:2], _rows(3)[:2], version=3) == 0  # late: read, refused
    assert store.write_tombstones("t", IDS[2:3], version=4) == 0
    rows, found = store.lookup("t", IDS, dim=4)
    assert found.all() and (rows == 5).all()
    assert store.write_rows("t", IDS, _rows(5), version=5) == 0  # duplicate version
    store.close()


def test_rocks_store_newest_version_survives_reopen(tmp_path):
    store = RocksRowStore(tmp_path / "s")
    store.write_rows("t", IDS, _rows(9), version=9)
    store.close()
    store = RocksRowStore(tmp_path / "s")
    assert store.write_rows("t", IDS, _rows(8), version=8) == 0
    assert store.write_rows("t", IDS[:1], _rows(10)[:1], version=10) == 1
    assert store.row_versions("t", IDS).tolist() == [10, 9, 9, 9]
    store.close()


def test_rocks_store_rows_then_tombstones_of_one_version(tmp_path):
    store = RocksRowStore(tmp_path / "s")
    store.write_rows("t", IDS[:2], _rows(1)[:2], version=1)
    assert store.write_rows("t", IDS[2:], _rows(2)[2:], version=2) == 2
    assert store.write_tombstones("t", IDS[:2], version=2) == 2  # same version, other ids
    _, found = store.lookup("t", IDS, dim=4)
    assert found.tolist() == [False, False, True, True]
    store.close()


def test_rocks_store_without_newest_version_key_reads_before_writing(tmp_path):
    store = RocksRowStore(tmp_path / "s")
    store.write_rows("t", IDS, _rows(6), version=6)
    del store._db[_MAXV + b"t"]  # as a store written before the key existed
    store.close()
    store = RocksRowStore(tmp_path / "s")
    assert store.write_rows("t", IDS, _rows(4), version=4) == 0
    assert store.write_rows("t", IDS[:1], _rows(7)[:1], version=7) == 1
    rows, _ = store.lookup("t", IDS, dim=4)
    assert rows[:, 0].tolist() == [7, 6, 6, 6]
    store.close()
