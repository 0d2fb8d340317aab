import numpy as np
import pytest

from schemas import SparseDelta, codec_for
from sync.delta_builder import build_deltas, check_delta, decode_values
from sync.sharding import shard_of
from tests.helpers.sync_updates import update


def _rows(deltas):
    out = {}
    for _, d in deltas:
        for i, row in zip(d.ids, decode_values(d)):
            out[(d.table, i)] = row
    return out


def test_build_deltas_every_row_lands_on_its_shard_once():
    upd = update("user", np.arange(1000), dim=8)
    deltas = build_deltas("m", 3, [upd], 4, "fp32", 900_000, 1)
    seen = [i for _, d in deltas for i in d.ids]
    assert sorted(seen) == list(range(1000))
    for shard, d in deltas:
        assert d.shard == shard and d.version == 3 and d.num_shards == 4
        assert (shard_of(np.array(d.ids, np.int64), 4) == shard).all()
    rows = _rows(deltas)
    np.testing.assert_array_equal(np.stack([rows[("user", i)] for i in range(1000)]), upd.values)


def test_build_deltas_splits_messages_under_the_size_limit():
    upd = update("item", np.arange(20_000), dim=16)
    deltas = build_deltas("m", 1, [upd], 2, "fp32", 50_000, 1)
    codec = codec_for(SparseDelta)
    assert all(len(codec.encode(d)) <= 50_000 for _, d in deltas)
    for s in (0, 1):
        msgs = [d for sh, d in deltas if sh == s]
        assert [d.part for d in msgs] == list(range(len(msgs))) and len(msgs) > 1
        assert all(d.num_parts == len(msgs) for d in msgs)


def test_build_deltas_sends_a_heartbeat_to_quiet_shards():
    deltas = build_deltas("m", 5, [update("t", [7])], 4, "fp32", 900_000, 1)
    assert sorted(s for s, _ in deltas) == [0, 1, 2, 3]
    beats = [d for _, d in deltas if d.table == ""]
    assert len(beats) == 3 and all(not d.ids and d.num_parts == 1 for d in beats)


def test_build_deltas_tombstones_evicted_ids_unless_updated_again():
    upd = update("t", [1, 2], evicted=[2, 3, 4])
    deltas = build_deltas("m", 1, [upd], 1, "fp32", 900_000, 1)
    assert sorted(i for _, d in deltas for i in d.tombstones) == [3, 4]
    assert sorted(i for _, d in deltas for i in d.ids) == [1, 2]


def test_build_deltas_repeated_id_keeps_the_last_row():
    upd = update("t", [5, 6, 5], dim=2)
    rows = _rows(build_deltas("m", 1, [upd], 1, "fp32", 900_000, 1))
    np.testing.assert_array_equal(rows[("t", 5)], upd.values[2])


def test_build_deltas_fp16_halves_the_bytes_within_rounding():
    upd = update("t", np.arange(100), dim=16)
    d16 = build_deltas("m", 1, [upd], 1, "fp16", 900_000, 1)
    d32 = build_deltas("m", 1, [upd], 1, "fp32", 900_000, 1)
    assert len(d16[0][1].values) * 2 == len(d32[0][1].values)
    np.testing.assert_allclose(decode_values(d16[0][1]), upd.values, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mutate,reason", [
    (lambda d: setattr(d, "values", d.values[:-1]), "values hold"),
    (lambda d: setattr(d, "dtype", "int8"), "dtype"),
    (lambda d: setattr(d, "shard", 9), "shard"),
])
def test_check_delta_names_what_is_wrong(mutate, reason):
    _, d = build_deltas("m", 1, [update("t", [1, 2])], 1, "fp32", 900_000, 1)[0]
    assert check_delta(d) is None
    mutate(d)
    assert reason in check_delta(d)
