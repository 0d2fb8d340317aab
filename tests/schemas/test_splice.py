"""A Sample spliced from its impression's bytes is byte for byte the codec's encoding of the
same Sample, on the generator's impressions and on edge values."""

from __future__ import annotations

import io
import random

import fastavro
import pytest

from schemas import FeatureUpdate, Impression, Sample, codec_for
from schemas.codec import legacy_fingerprint
from schemas.splice import feature_update_bytes, sample_from_impression, write_long
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

    for v in [*range(-200, 200), 2**63 - 1, -2**63, 2**31, -2**31 - 1]:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, "long", v)
        assert write_long(v) == out.getvalue(), v


def test_feature_update_bytes_are_the_codecs() -> None:
    """Random FeatureUpdates (64-bit ids and times, non-ASCII names, empty lists, inf and
    -0.0 values, ints where doubles go) and the feature job's own."""
    from streaming.features.spec import FeatureSpec

    rng, codec = random.Random(7), codec_for(FeatureUpdate)
    spec = FeatureSpec()
    fus = [FeatureUpdate("user", 7, 1_700_000_000_000, spec.names("user"), [0.5] * 15, [1, 2]),
           FeatureUpdate("item", 9, 5, spec.names("item"), [0.0] * 15, [])]
    for _ in range(3000):
        fus.append(FeatureUpdate(
            rng.choice(["user", "item", "näme"]), rng.randrange(-2**63, 2**63),
            rng.randrange(-2**63, 2**63), [rng.choice(["a", "bb", "ü_5m"]) for _ in range(rng.randrange(4))],
            [rng.choice([0.0, -0.0, 1e300, float("inf"), rng.random(), 5]) for _ in range(rng.randrange(20))],
            [rng.randrange(-2**63, 2**63) for _ in range(rng.randrange(6))], rng.randrange(3)))
    for fu in fus:
        assert feature_update_bytes(fu) == codec.encode(fu), fu


def test_dense_appended_in_the_bytes_is_the_codecs_encoding() -> None:
    """impression_dense finds the event time and the dense array of random impressions
    (64-bit ids, empty and long arrays, non-ASCII request ids), and appending values there
    gives the codec's bytes of the impression with those values appended."""
    from schemas.splice import impression_dense, impression_with_dense

    rng, codec = random.Random(3), codec_for(Impression)
    for _ in range(2000):
        imp = Impression(rng.choice(["", "r1", "ü" * rng.randrange(5)]), rng.randrange(-2**63, 2**63),
                         rng.randrange(-2**63, 2**63), rng.randrange(-2**63, 2**63),
                         [rng.randrange(-2**31, 2**31) for _ in range(rng.randrange(30))],
                         [rng.randrange(-2**63, 2**63) for _ in range(rng.randrange(30))],
                         [rng.random() for _ in range(rng.randrange(70))])
        raw = codec.encode(imp)
        t, at, n = impression_dense(raw)
        assert (t, n) == (imp.event_time_ms, len(imp.dense))
        more = [rng.random() * 100 for _ in range(rng.randrange(20))]
        want = codec.decode(raw)
        want.dense = [*want.dense, *more]
        assert impression_with_dense(raw, at, n, more) == codec.encode(want)


def test_dense_of_another_layout_is_left_to_the_decoder() -> None:
    from schemas.splice import impression_dense

    raw = codec_for(Impression).encode(Impression("r", 1, 2, 3, [1, 2], [5, 6], [0.5]))
    assert impression_dense(raw[:2] + bytes(8) + raw[10:]) is None  # another writer schema
    assert impression_dense(raw + b"\x00") is None                  # bytes after the dense array
    with pytest.raises(IndexError):
        impression_dense(raw[:16])                                  # truncated
    # slots written as two blocks (valid Avro, not what a codec writes): not read here
    i = raw.index(bytes([4, 2, 4, 0]))  # slots: count 2, items 1 and 2, end
    two_blocks = raw[:i] + bytes([2, 2, 2, 4, 0]) + raw[i + 4:]
    assert codec_for(Impression).decode(two_blocks).slots == [1, 2]
    with pytest.raises(IndexError):
        impression_dense(two_blocks)
