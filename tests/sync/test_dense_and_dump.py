import numpy as np
import pytest
import torch

from streamtrain.config import ConfigError
from sync.config import ConsumerConfig, PublisherConfig
from sync.dense import DenseAssembler, DenseChecksumError, chunk_dense, decode_dense, encode_dense
from sync.dump import MARKER, latest_dump, write_dump
from sync.publisher import merge_full
from tests.helpers.sync_updates import update


def test_dense_chunks_reassemble_to_the_same_weights_in_any_order():
    sd = {"w": torch.randn(300, 40), "b": torch.zeros(3)}
    payload = encode_dense(sd, {"dim": 4})
    chunks = chunk_dense("m", 3, 0, payload, chunk_bytes=4096)
    assert len(chunks) > 5
    asm = DenseAssembler("m")
    results = [asm.add(c) for c in reversed(chunks)]
    assert results[:-1] == [None] * (len(chunks) - 1)
    version, got = results[-1]
    cfg, state = decode_dense(got)
    assert version == 3 and cfg == {"dim": 4} and torch.equal(state["w"], sd["w"])
    assert asm.add(chunks[0]) is None  # the same version again: ignored


def test_dense_checksum_mismatch_is_refused():
    chunks = chunk_dense("m", 1, 0, encode_dense({"w": torch.ones(100)}, {}), chunk_bytes=256)
    chunks[1].payload = b"x" + chunks[1].payload[1:]
    asm = DenseAssembler("m")
    with pytest.raises(DenseChecksumError, match="sha256"):
        for c in chunks:
            asm.add(c)
    assert asm.version == -1


def _dump(tmp_path, version, keep=2):
    return write_dump(tmp_path, "m", version, 5, [update("t", [1, 2, 3], dim=2)], b"dense",
                      "deltas", {0: 10, 1: 12}, "dense", 4, 2, keep=keep)


def test_dump_latest_complete_one_wins_and_old_ones_are_pruned(tmp_path):
    for v in (3, 7, 9):
        _dump(tmp_path, v)
    (tmp_path / "m" / "v000000000011").mkdir()  # no marker: a writer died half way
    dump = latest_dump(tmp_path, "m")
    assert dump.version == 9 and dump.deltas_offsets == {0: 10, 1: 12}
    ids, values = dump.table_rows("t")
    np.testing.assert_array_equal(ids, [1, 2, 3])
    np.testing.assert_array_equal(values, update("t", [1, 2, 3], dim=2).values)
    assert dump.dense_payload() == b"dense"
    assert sorted(p.name for p in (tmp_path / "m").glob("v*") if (p / MARKER).exists()) == \
        ["v000000000007", "v000000000009"]


def test_dump_none_when_nothing_complete(tmp_path):
    assert latest_dump(tmp_path, "m") is None


def test_merge_full_keeps_evictions_of_the_collect():
    full = [update("t", [1, 2])]
    collected = [update("t", [2], evicted=[5]), update("gone", [], evicted=[9])]
    merged = {u.table: u for u in merge_full(full, collected)}
    assert merged["t"].ids.tolist() == [1, 2] and merged["t"].evicted.tolist() == [5]
    assert merged["gone"].evicted.tolist() == [9] and len(merged["gone"].ids) == 0


@pytest.mark.parametrize("kwargs,field", [
    ({"sparse_interval_s": 0.0}, "sync.sparse_interval_s"),
    ({"dtype": "bf16"}, "sync.dtype"),
    ({"dense_interval_s": 1.0, "sparse_interval_s": 5.0}, "sync.dense_interval_s"),
    ({"max_message_bytes": 10}, "sync.max_message_bytes"),
])
def test_publisher_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PublisherConfig(**kwargs)


def test_consumer_config_gives_each_replica_its_own_group():
    assert ConsumerConfig().group_id != ConsumerConfig().group_id
    assert ConsumerConfig(group_id="g").group_id == "g"


def test_dump_of_a_model_that_has_seen_nothing_yet_reads_back_empty(tmp_path):
    # a trainer's first dump before any row exists: the collect gives a flat empty array
    # (it crashed the first compose run: serving never got its first dump)
    import dataclasses

    empty = dataclasses.replace(update("t", [1], dim=2), ids=np.array([], np.int64),
                                values=np.array([], np.float32))
    write_dump(tmp_path, "m", 1, 5, [empty], b"dense", "deltas", {0: 0}, "dense", 0, 1)
    ids, values = latest_dump(tmp_path, "m").table_rows("t")
    assert len(ids) == 0 and len(values) == 0
