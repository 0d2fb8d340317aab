"""sync.delta_wire.DeltaWire writes exactly the SparseDelta codec's bytes and reads back what
the codec reads, for any ids (the whole int64 range), and refuses malformed bytes with a
DecodeError like the codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import SparseDelta, codec_for
from schemas.errors import DecodeError
from sync.delta_wire import DeltaWire

CODEC = codec_for(SparseDelta)
WIRE = DeltaWire()
LONGS = st.lists(st.integers(-2**63, 2**63 - 1), max_size=40)


@settings(max_examples=200, deadline=None)
@given(ids=LONGS, tombstones=LONGS, dim=st.integers(0, 4), version=st.integers(0, 2**62),
       table=st.text(max_size=8), dtype=st.sampled_from(["fp32", "fp16"]))
def test_delta_wire_bytes_equal_the_codec_and_decode_back(ids, tombstones, dim, version, table,
                                                          dtype):
    d = SparseDelta("ctr", table, version, 1, 4, 1_700_000_000_000, dim, ids,
                    bytes(len(ids) * dim * (4 if dtype == "fp32" else 2)), tombstones, dtype,
                    part=2, num_parts=3)
    raw = CODEC.encode(d)
    arrays = SparseDelta(d.model, d.table, d.version, d.shard, d.num_shards, d.created_ms, d.dim,
                         np.asarray(ids, np.int64), d.values, np.asarray(tombstones, np.int64),
                         d.dtype, d.part, d.num_parts)
    assert WIRE.encode(d) == raw and WIRE.encode(arrays) == raw
    back = WIRE.decode(raw)
    assert back.ids.tolist() == ids and back.tombstones.tolist() == tombstones
    ref = CODEC.decode(raw)
    for name in ("model", "table", "version", "shard", "num_shards", "part", "num_parts",
                 "created_ms", "dim", "dtype", "values", "schema_version"):
        assert getattr(back, name) == getattr(ref, name), name


def test_delta_wire_reads_multi_block_arrays():
    # Avro lets a writer split an array into blocks, some with a negative count and a size
    d = SparseDelta("m", "t", 3, 0, 1, 0, 0, [], b"", [])
    raw = CODEC.encode(d)
    head = raw[:-3]  # ..., ids (0), values (0), tombstones (0)
    blocks = bytes([4, 2, 4, 3, 4, 6, 8, 0])  # 2 items: 1, 2; then -2 items in 2 bytes: 3, 4
    out = WIRE.decode(head + blocks + b"\x00" + b"\x00")
    assert out.ids.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("cut", [11, 20, -1])
def test_delta_wire_refuses_truncated_or_padded_bytes(cut):
    raw = CODEC.encode(SparseDelta("m", "t", 3, 0, 1, 0, 2, [1, 2**40], bytes(16), [7]))
    bad = raw + b"\x00" if cut == -1 else raw[:cut]
    with pytest.raises(DecodeError):
        CODEC.decode(bad)
    with pytest.raises(DecodeError):
        WIRE.decode(bad)
    dl = WIRE.decode_or_dead_letter(bad, stage="s", topic="t", now_ms=1)
    assert dl.reason.startswith("undecodable:")
