import io
import json

import avro.io
import avro.schema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    Action,
    DeadLetter,
    DecodeError,
    DenseSnapshot,
    FeatureUpdate,
    Impression,
    Sample,
    SparseDelta,
    codec_for,
)
from schemas.codec import AVRO_DIR, HEADER_LEN, Codec, load_schema
from schemas.records import SCHEMA_FILES

EXAMPLES = [
    Impression("r1", 7, 9, 1_700_000_000_000, [0, 1, 1], [11, -12, 2**63 - 1], [0.25, -1.5]),
    Action("r1", 7, 9, "click", 1_700_000_030_000, 1.0),
    Sample("r1", 7, 9, 1_700_000_000_000, 1_700_000_600_000, [0], [5], [0.5], ["click", "like"],
           [30_000, 45_000], 1.0, 0.25, 2),
    FeatureUpdate("user", 7, 1_700_000_000_000, ["imp_5m", "ctr_1h"], [3.0, 0.125], [9, 10]),
    SparseDelta("m", "emb", 3, 1, 4, 1_700_000_000_000, 2, [1, 2], b"\x00" * 16, [5], "fp32", 0, 1),
    DenseSnapshot("m", 3, 1_700_000_000_000, 0, 1, "ab" * 32, b"weights"),
    DeadLetter("joiner", "actions", "orphan action", 1_700_000_000_000, b"\x01\x02", 3, 42),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_codec_round_trip_every_record_type(record):
    codec = codec_for(type(record))
    assert codec.decode(codec.encode(record)) == record


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_codec_body_matches_reference_avro_library_byte_for_byte(record):
    codec = codec_for(type(record))
    stem = SCHEMA_FILES[type(record)]
    ref_schema = avro.schema.parse((AVRO_DIR / f"{stem}.avsc").read_text())
    buf = io.BytesIO()
    datum = {f: getattr(record, f) for f in record.__slots__}
    avro.io.DatumWriter(ref_schema).write(datum, avro.io.BinaryEncoder(buf))
    ours = codec.encode(record)
    assert ours[HEADER_LEN:] == buf.getvalue()
    # and the reference library reads our body back to the same values
    back = avro.io.DatumReader(ref_schema).read(avro.io.BinaryDecoder(io.BytesIO(ours[HEADER_LEN:])))
    assert type(record)(**back) == record


def test_codec_header_is_avro_single_object_fingerprint():
    # avro's reference implementation computes the same CRC-64-AVRO fingerprint
    codec = codec_for(Sample)
    ref = avro.schema.parse((AVRO_DIR / "sample.avsc").read_text())
    assert codec.encode(EXAMPLES[2])[:2] == b"\xc3\x01"
    # the reference gives the fingerprint's bytes in header (little-endian) order, as Java's
    # BinaryMessageDecoder reads them (tests/sync/test_delta_reader_java.py)
    assert codec.fingerprint == ref.fingerprint("CRC-64-AVRO")
    assert codec.encode(EXAMPLES[2])[2:HEADER_LEN] == ref.fingerprint("CRC-64-AVRO")


def test_codec_still_reads_the_legacy_byte_reversed_header():
    codec = codec_for(Sample)
    data = codec.encode(EXAMPLES[2])
    legacy = data[:2] + data[2:HEADER_LEN][::-1] + data[HEADER_LEN:]  # what earlier versions wrote
    assert codec.decode(legacy) == codec.decode(data) == EXAMPLES[2]


@given(
    request_id=st.text(max_size=40),
    ids=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30),
    dense=st.lists(st.floats(width=32, allow_nan=False), max_size=8),
    labels=st.lists(st.sampled_from(["click", "like", "conversion"]), max_size=3),
)
@settings(max_examples=200, deadline=None)
def test_codec_round_trip_any_sample(request_id, ids, dense, labels):
    s = Sample(request_id, 1, 2, 3, 4, [i % 26 for i in range(len(ids))], ids, dense, labels,
               [0] * len(labels))
    assert codec_for(Sample).decode(codec_for(Sample).encode(s)) == s


def _evolved(stem: str, extra_fields: list[dict]) -> dict:
    doc = json.loads((AVRO_DIR / f"{stem}.avsc").read_text())
    doc["fields"] = doc["fields"] + extra_fields
    return doc


def test_codec_newer_reader_reads_older_data_with_defaults(tmp_path):
    """Evolution rule: add fields with defaults. A v2 reader resolves v1 bytes."""
    v2 = tmp_path / "sample.avsc"
    v2.write_text(json.dumps(_evolved("sample", [
        {"name": "position", "type": "int", "default": -1},
        {"name": "experiment", "type": "string", "default": "control"},
    ])))
    old_bytes = codec_for(Sample).encode(EXAMPLES[2])
    reader = Codec(dict_record, v2, [AVRO_DIR / "sample.avsc"])
    rec = reader.decode(old_bytes)
    assert rec["position"] == -1 and rec["experiment"] == "control"
    assert rec["label_types"] == ["click", "like"]


def test_codec_older_reader_reads_newer_data_when_it_knows_the_writer(tmp_path):
    path = tmp_path / "sample.v2.avsc"
    path.write_text(json.dumps(_evolved("sample", [{"name": "position", "type": "int", "default": -1}])))
    writer = Codec(dict_record, path)
    datum = {f: getattr(EXAMPLES[2], f) for f in EXAMPLES[2].__slots__} | {"position": 4}
    data = writer.encode_dict(datum)
    current = Codec(Sample, AVRO_DIR / "sample.avsc", [path])
    assert current.decode(data) == EXAMPLES[2]
    # a reader that was never told about the v2 writer says so instead of misreading
    with pytest.raises(DecodeError, match="unknown writer schema"):
        codec_for(Sample).decode(data)


def dict_record(**kwargs):
    return kwargs


@pytest.mark.parametrize("bad, reason", [
    (b"", "single-object"),
    (b"hello world, not avro", "single-object"),
    (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown writer schema"),
    (None, "expected bytes"),
])
def test_codec_rejects_undecodable_input_with_reason(bad, reason):
    with pytest.raises(DecodeError, match=reason):
        codec_for(Impression).decode(bad)


def test_codec_truncated_and_padded_bodies_are_errors():
    data = codec_for(Impression).encode(EXAMPLES[0])
    with pytest.raises(DecodeError, match="corrupt"):
        codec_for(Impression).decode(data[:-4])
    with pytest.raises(DecodeError, match="trailing"):
        codec_for(Impression).decode(data + b"\x00\x00")


def test_codec_decode_or_dead_letter_returns_dead_letter_not_exception():
    codec = codec_for(Action)
    out = codec.decode_or_dead_letter(b"\xc3\x01garbage!", stage="dedup", topic="actions",
                                      now_ms=123, partition=1, offset=77)
    assert isinstance(out, DeadLetter)
    assert out.reason.startswith("undecodable")
    assert (out.source_topic, out.partition, out.offset, out.raw) == ("actions", 1, 77, b"\xc3\x01garbage!")
    # the dead letter itself is encodable for the dead-letter topic
    assert codec_for(DeadLetter).decode(codec_for(DeadLetter).encode(out)) == out
    good = codec.encode(EXAMPLES[1])
    assert codec.decode_or_dead_letter(good, stage="d", topic="t", now_ms=0) == EXAMPLES[1]


def test_codec_every_schema_parses_and_has_a_version_field():
    for stem in SCHEMA_FILES.values():
        parsed = load_schema(AVRO_DIR / f"{stem}.avsc")
        names = {f["name"]: f for f in parsed["fields"]}
        assert names["schema_version"]["default"] == 1
