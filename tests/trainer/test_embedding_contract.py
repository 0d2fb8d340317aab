"""The contract every EmbeddingTable implementation keeps (CPU, and CUDA when present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.config import TableConfig
from trainer.embedding import CpuEmbeddingTable, CudaEmbeddingTable

IMPLEMENTATIONS = [
    pytest.param(CpuEmbeddingTable, id="cpu"),
    pytest.param(CudaEmbeddingTable, id="cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="CUDA not available")),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def make(request):
    def build(**kw):
        return request.param("emb", TableConfig(**({"dim": 4, "initial_capacity": 4} | kw)))
    return build


def ids(*xs):
    return np.asarray(xs, dtype=np.int64)


def train(table, xs, now=0):
    return table.rows_for(ids(*xs), now_ms=now, train=True)


def test_table_unseen_ids_read_zeros_without_side_effects(make):
    t = make()
    values = t.lookup(ids(1, 2**62, -5))
    assert values.shape == (3, 4) and not values.any()
    assert t.num_tracked == 0 and t.num_live == 0


def test_table_admits_id_only_after_threshold(make):
    t = make(admit_count=3, init_std=0.1)
    for _ in range(2):
        rows = train(t, [7])
        assert rows.tolist() == [0]  # default row: not trainable yet
    assert t.num_live == 0 and t.num_tracked == 1
    assert train(t, [7]).tolist() != [0]
    assert t.num_live == 1 and t.lookup(ids(7)).any()


def test_table_counts_repeats_within_one_call(make):
    t = make(admit_count=3)
    assert (train(t, [9, 9, 9]) > 0).all()


def test_table_never_gives_two_ids_one_row(make):
    t = make()
    xs = np.arange(-50, 50, dtype=np.int64) * (2**55 + 1)  # far apart, and negative too
    rows = t.rows_for(xs, now_ms=0, train=True).cpu().numpy()
    assert len(set(rows.tolist())) == len(xs) and (rows > 0).all()
    assert t.num_live == 100  # and it grew beyond its initial capacity of 4


def test_table_admission_probability_is_seeded(make):
    a, b = make(admit_prob=0.3, seed=5), make(admit_prob=0.3, seed=5)
    xs = np.arange(2000, dtype=np.int64)
    ra = a.rows_for(xs, now_ms=0, train=True).cpu().numpy()
    rb = b.rows_for(xs, now_ms=0, train=True).cpu().numpy()
    assert np.array_equal(ra > 0, rb > 0)
    assert 0.25 < (ra > 0).mean() < 0.35


def test_table_expires_unseen_ids_in_event_time_and_reuses_rows(make):
    t = make(expiry_ms=1000)
    old = train(t, [1, 2], now=0).cpu().numpy()
    train(t, [3], now=900)
    assert t.expire(1000).tolist() == []  # 1 and 2 unseen for exactly the TTL: kept
    assert sorted(t.expire(1500).tolist()) == [1, 2]  # unseen for 1500 ms; 3 (900) stays
    assert t.num_live == 1 and not t.lookup(ids(1, 2)).any()
    new = train(t, [4, 5], now=1500).cpu().numpy()
    assert sorted(new.tolist()) == sorted(old.tolist())  # freed rows reused
    assert t.num_tracked == 3


def test_table_sparse_step_changes_only_given_rows(make):
    t = make(init_std=0.1)
    rows = train(t, [1, 2, 3])
    before = t.lookup(ids(1, 2, 3))
    t.apply_gradients(rows[:1], torch.ones(1, 4, device=t.device))
    after = t.lookup(ids(1, 2, 3))
    assert (after[0] < before[0]).all()
    assert np.array_equal(after[1:], before[1:])


def test_table_collect_updates_reports_touched_and_evicted_then_resets(make):
    t = make(expiry_ms=10)
    train(t, [1, 2], now=0)
    first = t.collect_updates()
    assert first.table == "emb" and sorted(first.ids.tolist()) == [1, 2]
    np.testing.assert_array_equal(first.values[np.argsort(first.ids)], t.lookup(ids(1, 2)))
    rows = train(t, [2], now=100)
    t.apply_gradients(rows, torch.ones(1, 4, device=t.device))
    t.expire(100)
    upd = t.collect_updates()
    assert upd.ids.tolist() == [2] and upd.evicted.tolist() == [1]
    empty = t.collect_updates()
    assert len(empty.ids) == 0 and len(empty.evicted) == 0


def test_table_full_dump_holds_every_live_row(make):
    t = make(admit_count=2)
    train(t, [1, 2, 3])
    train(t, [1, 2])
    dump = t.full_dump()
    assert sorted(dump.ids.tolist()) == [1, 2] and len(dump.evicted) == 0
    np.testing.assert_array_equal(dump.values[np.argsort(dump.ids)], t.lookup(ids(1, 2)))


def test_table_full_dump_keeps_negative_ids_and_drops_expired(make):
    """Feature ids are signed 64-bit: half of them are negative, -1 included."""
    t = make(expiry_ms=1000)
    low = -(2**63)
    train(t, [-1, -7, low, 5], now=0)
    train(t, [-1, low], now=1500)
    t.expire(1500)  # -7 and 5 were last seen at 0
    dump = t.full_dump()
    assert sorted(dump.ids.tolist()) == [low, -1]
    np.testing.assert_array_equal(dump.values[np.argsort(dump.ids)], t.lookup(ids(low, -1)))


def _drive(t, steps, seed=0):
    rng = np.random.default_rng(seed)
    for step in range(steps):
        xs = rng.integers(0, 40, 16).astype(np.int64)
        uniq = np.unique(xs)
        rows = t.rows_for(uniq, now_ms=step * 100, train=True)
        t.apply_gradients(rows, torch.as_tensor(rng.normal(size=(len(uniq), 4)), dtype=torch.float32,
                                                 device=t.device))
        t.expire(step * 100)


def test_table_snapshot_restore_round_trip(make):
    cfg = dict(admit_count=2, admit_prob=0.7, expiry_ms=500, init_std=0.1)
    a, b = make(**cfg), make(**cfg)
    _drive(a, 20)
    b.restore(a.snapshot())
    probe = np.arange(40, dtype=np.int64)
    np.testing.assert_array_equal(a.lookup(probe), b.lookup(probe))
    assert (a.num_live, a.num_tracked) == (b.num_live, b.num_tracked)
    _drive(a, 10, seed=1)
    _drive(b, 10, seed=1)  # counts, optimizer state and generators came along
    np.testing.assert_array_equal(a.lookup(probe), b.lookup(probe))


def test_table_same_seed_same_result(make):
    a, b = make(admit_prob=0.5, init_std=0.1, seed=3), make(admit_prob=0.5, init_std=0.1, seed=3)
    _drive(a, 15)
    _drive(b, 15)
    probe = np.arange(40, dtype=np.int64)
    np.testing.assert_array_equal(a.lookup(probe), b.lookup(probe))
    c = make(admit_prob=0.5, init_std=0.1, seed=4)
    _drive(c, 15)
    assert not np.array_equal(a.lookup(probe), c.lookup(probe))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(-2**63, 2**63 - 1), max_size=12), max_size=8),
       st.integers(1, 3))
def test_table_rows_are_one_per_admitted_id(batches, admit_count):
    t = CpuEmbeddingTable("emb", TableConfig(dim=2, admit_count=admit_count, initial_capacity=2))
    seen: dict[int, int] = {}
    for b in batches:
        t.rows_for(np.asarray(b, dtype=np.int64), now_ms=0, train=True)
        for x in b:
            seen[x] = seen.get(x, 0) + 1
    admitted = sorted(x for x, n in seen.items() if n >= admit_count)
    rows = t.rows_for(np.asarray(admitted, dtype=np.int64)).numpy()
    assert (rows > 0).all() and len(set(rows.tolist())) == len(admitted)
    assert t.num_live == len(admitted) and t.num_tracked == len(seen)
