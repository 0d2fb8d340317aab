"""Contract suite: every RowStore implementation behaves the same."""

import numpy as np


def _rows(n, dim=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_store_unseen_ids_are_not_found(row_store):
    rows, found = row_store.lookup("t", np.array([1, 2]), dim=3)
    assert not found.any() and rows.shape == (2, 3) and not rows.any()


def test_store_round_trips_rows_exactly_including_negative_and_extreme_ids(row_store):
    ids = np.array([0, -1, 2**63 - 1, -(2**63), 12345], np.int64)
    vals = _rows(5)
    assert row_store.write_rows("t", ids, vals, version=1) == 5
    got, found = row_store.lookup("t", ids, dim=3)
    assert found.all()
    np.testing.assert_array_equal(got, vals)
    assert sorted(i for i, _ in row_store.rows("t")) == sorted(ids.tolist())


def test_store_older_or_equal_version_never_overwrites(row_store):
    ids = np.array([1, 2])
    new, old = _rows(2, seed=1), _rows(2, seed=2)
    row_store.write_rows("t", ids, new, version=5)
    assert row_store.write_rows("t", ids, old, version=5) == 0
    assert row_store.write_rows("t", ids, old, version=4) == 0
    np.testing.assert_array_equal(row_store.lookup("t", ids, 3)[0], new)
    assert row_store.row_version("t", 1) == 5


def test_store_tombstone_hides_row_and_blocks_older_resurrection(row_store):
    ids = np.array([1, 2])
    row_store.write_rows("t", ids, _rows(2), version=3)
    assert row_store.write_tombstones("t", np.array([1]), version=4) == 1
    _, found = row_store.lookup("t", ids, 3)
    assert found.tolist() == [False, True]
    row_store.write_rows("t", np.array([1]), _rows(1), version=3)
    assert not row_store.lookup("t", np.array([1]), 3)[1][0]
    row_store.write_rows("t", np.array([1]), _rows(1, seed=9), version=6)  # re-admitted later
    assert row_store.lookup("t", np.array([1]), 3)[1][0]
    assert [i for i, _ in row_store.rows("t")] == [1, 2]


def test_store_tables_are_separate(row_store):
    row_store.write_rows("a", np.array([1]), _rows(1), version=1)
    assert not row_store.lookup("ab", np.array([1]), 3)[1][0]
    assert list(row_store.rows("b")) == []


def test_store_meta_round_trip(row_store):
    assert row_store.get_meta("offsets", {}) == {}
    row_store.set_meta("offsets", {"0": 12})
    assert row_store.get_meta("offsets") == {"0": 12}


def test_store_row_versions_of_rows_tombstones_and_unknown_ids(row_store):
    row_store.write_rows("t", np.array([1, 2]), _rows(2), version=3)
    row_store.write_tombstones("t", np.array([2]), version=4)
    assert row_store.row_versions("t", np.array([1, 2, 9])).tolist() == [3, 4, -1]
