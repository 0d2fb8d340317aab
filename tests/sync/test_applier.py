import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.applier import DeltaApplier
from sync.delta_builder import build_deltas
from sync.store import MemoryRowStore
from tests.helpers.sync_updates import update


def _push(version, ids, seed, evicted=(), shards=2, max_bytes=900_000):
    upd = update("t", ids, dim=2, seed=seed, evicted=evicted)
    return [d for _, d in build_deltas("m", version, [upd], shards, "fp32", max_bytes, version)]


def _final_rows(pushes):
    """What the store must hold after every push is applied: the newest write per id."""
    state = {}
    for _version, ids, seed, evicted in pushes:
        upd = update("t", ids, dim=2, seed=seed, evicted=evicted)
        for i in evicted:
            if i not in set(ids):
                state[i] = None
        for i, row in zip(upd.ids.tolist(), upd.values):
            state[i] = row
    return state


def test_applier_ignores_duplicates_and_stale_versions():
    store = MemoryRowStore()
    a = DeltaApplier(store, "m")
    new, old = _push(2, [1, 2, 3], seed=2, shards=1), _push(1, [1, 2, 3], seed=1, shards=1)
    assert a.apply(new[0]).rows == 3
    dup = a.apply(new[0])
    assert dup.duplicate and dup.rows == 0
    stale = a.apply(old[0])
    assert stale.rows == 0 and stale.skipped == 3
    np.testing.assert_array_equal(store.lookup("t", np.array([1, 2, 3]), 2)[0],
                                  update("t", [1, 2, 3], dim=2, seed=2).values)
    assert a.stats.duplicates == 1 and a.stats.late_messages == 1 and a.version == 2


def test_applier_reports_a_gap_and_forgets_it_when_the_version_arrives_late():
    gaps = []
    a = DeltaApplier(MemoryRowStore(), "m", on_gap=lambda s, lost: gaps.append((s, lost)))
    a.apply(_push(1, [1], 0, shards=1)[0])
    a.apply(_push(4, [1], 0, shards=1)[0])
    assert gaps == [(0, [2, 3])] and a.stats.gaps == 1 and a.missing == {0: [2, 3]}
    a.apply(_push(2, [1], 0, shards=1)[0])
    assert a.missing == {0: [3]} and a.version == 4


def test_applier_version_needs_every_part_of_every_shard():
    a = DeltaApplier(MemoryRowStore(), "m")
    msgs = _push(1, range(2000), 0, shards=2, max_bytes=8192)
    assert len(msgs) > 4
    for d in msgs[:-1]:
        a.apply(d)
    assert a.version is None or a.version < 1
    a.apply(msgs[-1])
    assert a.version == 1


def test_applier_ignores_other_models():
    a = DeltaApplier(MemoryRowStore(), "other")
    assert a.apply(_push(1, [1], 0)[0]).rows == 0 and a.stats.other_model == 1


pushes_strategy = st.lists(
    st.tuples(st.lists(st.integers(0, 30), max_size=12, unique=True),
              st.lists(st.integers(0, 30), max_size=4, unique=True)),
    min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(pushes=pushes_strategy, data=st.data())
def test_applier_any_order_with_duplicates_converges_to_newest(pushes, data):
    """For any interleaving, duplication and reordering of the messages of several pushes,
    the store ends with exactly the newest version's row (or tombstone) of every id."""
    versions = [(v + 1, ids, v + 100, ev) for v, (ids, ev) in enumerate(pushes)]
    msgs = [m for v, ids, seed, ev in versions for m in _push(v, ids, seed, ev, 2, 300)]
    dup_idx = data.draw(st.lists(st.integers(0, len(msgs) - 1), max_size=len(msgs)))
    stream = data.draw(st.permutations(msgs + [msgs[i] for i in dup_idx]))
    store = MemoryRowStore()
    a = DeltaApplier(store, "m")
    for m in stream:
        a.apply(m)
    want = _final_rows(versions)
    ids = np.array(sorted(want), np.int64)
    got, found = store.lookup("t", ids, 2)
    for i, row, f in zip(ids.tolist(), got, found):
        if want[i] is None:
            assert not f, f"evicted id {i} is still served"
        else:
            assert f and np.array_equal(row, want[i]), f"id {i} does not hold its newest row"
    assert a.version == len(versions) and a.missing == {}


def test_applier_after_bootstrap_ignores_versions_the_dump_already_holds():
    """Id 2 was evicted before the dump (so the dump has no tombstone for it): a replayed
    older delta must not bring it back."""
    store = MemoryRowStore()
    store.write_rows("t", np.array([1]), np.ones((1, 2), np.float32), version=5)  # the dump
    a = DeltaApplier(store, "m")
    a.start_at(5, shards=[0])
    assert a.apply(_push(4, [1, 2], 0, shards=1)[0]).rows == 0
    assert not store.lookup("t", np.array([2]), 2)[1][0] and a.stats.stale_messages == 1
    assert a.apply(_push(6, [2], 0, shards=1)[0]).rows == 1 and a.version == 6


def test_applier_shows_a_version_only_once_every_part_of_every_owned_shard_arrived():
    store = MemoryRowStore()
    a = DeltaApplier(store, "m")
    a.start_at(0, shards=[0, 1])
    msgs = _push(1, range(400), seed=1, shards=2, max_bytes=600)
    assert len(msgs) > 6
    ids = np.arange(400)
    for d in msgs[:-1]:
        assert a.apply(d).committed is None
        with a.view.snapshot() as snap:
            assert snap.version == 0 and not snap.lookup("t", ids, 2)[1].any()
        assert not store.lookup("t", ids, 2)[1].any()  # nothing written while staging
    assert a.apply(msgs[-1]).committed == 1
    with a.view.snapshot() as snap:
        rows, found = snap.lookup("t", ids, 2)
    assert snap.version == 1 and found.all()
    np.testing.assert_array_equal(rows, update("t", range(400), dim=2, seed=1).values)


def test_applier_abandons_an_incomplete_version_once_a_newer_one_completes():
    a = DeltaApplier(MemoryRowStore(), "m")
    a.start_at(0, shards=[0, 1])
    v1 = _push(1, range(200), seed=1, shards=2, max_bytes=600)
    v2 = _push(2, [5], seed=2, shards=2)
    for d in v1[:2]:  # its publisher died after two messages
        a.apply(d)
    assert list(a.pending()) == [1] and a.version == 0
    for d in v2:
        a.apply(d)
    assert a.version == 2 and a.stats.abandoned_versions == 1 and a.incomplete == [1]
    assert a.pending() == {}
    with a.view.snapshot() as snap:  # only version 2's row, nothing of version 1
        assert snap.lookup("t", np.arange(200), 2)[1].tolist() == [i == 5 for i in range(200)]


def test_applier_counts_a_reused_version_whose_content_differs():
    a = DeltaApplier(MemoryRowStore(), "m")
    first, again, reused = _push(1, [1, 2], 1, shards=1), _push(1, [1, 2], 1, shards=1), \
        _push(1, [1, 2], 9, shards=1)
    a.apply(first[0])
    assert a.apply(again[0]).duplicate and not a.apply(again[0]).conflict
    r = a.apply(reused[0])
    assert r.duplicate and r.conflict
    assert a.stats.duplicates == 3 and a.stats.conflicting_duplicates == 1


def test_readers_never_wait_for_a_slow_store_write():
    import threading
    import time

    class SlowStore(MemoryRowStore):
        def write_rows(self, *args, **kw):
            time.sleep(1.0)
            return super().write_rows(*args, **kw)

    a = DeltaApplier(SlowStore(), "m")
    a.start_at(0, shards=[0])
    applying = threading.Thread(target=a.apply, args=(_push(1, [1, 2], 1, shards=1)[0],))
    applying.start()
    versions, slowest = set(), 0.0
    while applying.is_alive():
        t0 = time.perf_counter()
        with a.view.snapshot() as snap:
            rows, found = snap.lookup("t", np.array([1, 2]), 2)
            assert found.all() == (snap.version == 1)
        slowest = max(slowest, time.perf_counter() - t0)
        versions.add(snap.version)
        time.sleep(0.01)
    applying.join()
    assert 1 in versions, "version 1 was visible while the store was still being written"
    assert slowest < 0.5
