"""A Sample spliced from its impression's bytes is byte for byte the codec's encoding of the
same Sample, on the generator's impressions and on edge values."""

from __future__ import annotations

import pytest

from schemas import Impression, Sample, codec_for
from schemas.codec import legacy_fingerprint
from schemas.splice import sample_from_impression, write_long
from traffic.generator import GeneratorConfig, TrafficGenerator


def _expected(imp: Impression, emit: int, labels: list[str], delays: list[int], weight: float,
              rate: float, flags: int) -> bytes:
    return codec_for(Sample).encode(Sample(
        request_id=imp.request_id, user_id=imp.user_id, item_id=imp.item_id,
        event_time_ms=imp.event_time_ms, emit_time_ms=emit, slots=imp.slots, ids=imp.ids,
        dense=imp.dense, label_types=labels, label_delays_ms=delays, weight=weight,
        sample_rate=rate, flags=flags))


def test_generator_impressions_splice_to_the_codecs_bytes() -> None:
    gen = TrafficGenerator(GeneratorConfig(seed=4, duration_s=20, impressions_per_s=50,
                                           malformed_rate=0.0), now_ms=1_700_000_000_000)
    raws = [e.value for e in gen.events() if e.topic == "impressions"]
    assert len(raws) > 500
    codec = codec_for(Impression)
    cases = [([], [], 1.0, 1.0, 0), (["click"], [1234], 1.0, 0.3, 2),
             (["click", "like", "conversion"], [0, 70_000, 3_600_000_000], 0.5, 0.1, 5)]
    for i, raw in enumerate(raws):
        imp = codec.decode(raw)
        labels, delays, weight, rate, flags = cases[i % len(cases)]
        emit = imp.event_time_ms + 10_000 + i
        assert sample_from_impression(raw, emit, labels, delays, weight, rate, flags) == \
            _expected(imp, emit, labels, delays, weight, rate, flags)


@pytest.mark.parametrize("imp", [
    Impression("", user_id=0, item_id=0, event_time_ms=0),
    Impression("r-ü", user_id=-(1 << 63), item_id=(1 << 63) - 1, event_time_ms=1,
               slots=[-1, 2**31 - 1], ids=[-5, 1 << 62], dense=[-0.0, 3.5, float("inf")]),
])
def test_edge_values(imp: Impression) -> None:
    raw = codec_for(Impression).encode(imp)
    assert sample_from_impression(raw, -7, ["é"], [-(1 << 63)], 2.0, 0.25, -3) == \
        _expected(imp, -7, ["é"], [-(1 << 63)], 2.0, 0.25, -3)


def test_other_headers() -> None:
    codec = codec_for(Impression)
    imp = Impression("r1", user_id=1, item_id=2, event_time_ms=3, slots=[1], ids=[4])
    raw = codec.encode(imp)
    legacy = raw[:2] + legacy_fingerprint(raw[2:10]) + raw[10:]  # still our schema: spliced
    assert sample_from_impression(legacy, 5, [], []) == _expected(imp, 5, [], [], 1.0, 1.0, 0)
    other = raw[:2] + bytes(8) + raw[10:]  # another writer schema: the caller encodes
    assert sample_from_impression(other, 5, [], []) is None


def test_write_long_is_avros_zigzag() -> None:
    assert [write_long(v) for v in (0, -1, 1, -64, 64)] == \
        [b"\x00", b"\x01", b"\x02", b"\x7f", b"\x80\x01"]
