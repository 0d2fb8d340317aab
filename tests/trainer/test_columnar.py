"""The columnar fast path (trainer.columnar + BatchBuilder.build_columns) is no second
definition of a valid sample: every message it reads decodes the same with ``Codec.decode``,
every message it cannot read is flagged (and then decoded one by one), and
``decode_records`` gives the same batch and the same dead letters either way."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import fastavro
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Sample, codec_for
from schemas.codec import AVRO_DIR, MAGIC, Codec, schema_fingerprint
from trainer import stream
from trainer.batch import BatchBuilder
from trainer.columnar import ColumnarReader
from trainer.config import ModelConfig
from trainer.synthetic import SyntheticStream

CODEC = codec_for(Sample)
READER = ColumnarReader(CODEC)
MODEL = ModelConfig(slots=tuple(range(26)), dense_dim=3, heads=("click", "like"))
I64 = st.integers(-2**63, 2**63 - 1)
I32 = st.integers(-2**31, 2**31 - 1)
F32 = st.floats(width=32, allow_nan=False)

samples_st = st.builds(
    Sample, request_id=st.text(max_size=8), user_id=I64, item_id=I64, event_time_ms=I64,
    emit_time_ms=I64, slots=st.lists(I32, max_size=6), ids=st.lists(I64, max_size=6),
    dense=st.lists(F32, max_size=4), label_types=st.lists(st.text(max_size=5), max_size=3),
    label_delays_ms=st.lists(I64, max_size=3), weight=F32, sample_rate=F32, flags=I32,
    schema_version=I32)


def _row(cols, i: int) -> Sample:
    d: dict = {k: v[i].item() for k, v in cols.scalars.items()}
    d.update({k: v[i] for k, v in cols.strings.items()})
    for k, (lengths, flat) in {**cols.arrays, **cols.string_arrays}.items():
        start = int(np.sum(lengths[:i]))
        part = flat[start:start + lengths[i]]
        d[k] = part.tolist() if isinstance(part, np.ndarray) else part
    return Sample(**d)


def _same_as_codec(values: list) -> int:
    """Asserts each unflagged message decodes to what ``Codec.decode`` gives (compared by
    repr: a flipped byte may make a float NaN, and NaN != NaN); returns how many were
    flagged."""
    cols = READER.read(values)
    for i, v in enumerate(values):
        if not cols.bad[i]:
            assert repr(_row(cols, i)) == repr(CODEC.decode(v))
    return int(cols.bad.sum())


@settings(max_examples=60, deadline=None)
@given(st.lists(samples_st, min_size=1, max_size=8))
def test_columnar_reads_every_sample_as_codec_decodes_it(samples):
    assert _same_as_codec([CODEC.encode(s) for s in samples]) == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(samples_st, min_size=1, max_size=4), st.data())
def test_columnar_flags_every_message_codec_does_not_read_the_same(samples, data):
    values = []
    for s in samples:
        raw = bytearray(CODEC.encode(s))
        cut = data.draw(st.sampled_from(["flip", "truncate", "append", "none"]))
        if cut == "flip":
            raw[data.draw(st.integers(2, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        elif cut == "truncate":
            del raw[data.draw(st.integers(0, len(raw) - 1)):]
        elif cut == "append":
            raw += data.draw(st.binary(min_size=1, max_size=4))
        values.append(bytes(raw))
    _same_as_codec(values)  # unflagged ones decode the same; flagged ones go to Codec.decode


def _records(values: list) -> list:
    return [SimpleNamespace(partition=i % 3, offset=100 + i, value=v) for i, v in enumerate(values)]


class _Dead:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, dl) -> None:
        self.sent.append(re.sub(r" at 0x[0-9a-f]+", "", repr(dl)))  # fastavro's EOFError repr


def _both(values: list, monkeypatch) -> tuple:
    monkeypatch.setattr(stream, "now_ms", lambda: 1)
    builder, out = BatchBuilder(MODEL), []
    for reader in (None, READER):
        dead = _Dead()
        out.append((stream.decode_records(_records(values), CODEC, builder, dead, "t", reader),
                    dead.sent))
    return out[0], out[1]


def _assert_same_batch(a, b) -> None:
    for k, v in vars(a).items():
        w = getattr(b, k)
        if isinstance(v, np.ndarray):
            assert v.dtype == w.dtype and np.array_equal(v, w, equal_nan=True), k
        else:
            assert v == w, k


def test_decode_records_in_columns_gives_the_same_batch_and_dead_letters(monkeypatch):
    samples = SyntheticStream(num_slots=27, dense_dim=3, heads=("click", "like", "buy"),
                              seed=3).take(300)
    samples[5].label_types, samples[5].label_delays_ms = ["click", "x", "x"], [5, -7, 3]
    samples[6].request_id = "héllo"
    samples[7].dense = [float("nan"), 1.0, 2.0]
    samples[8].weight = -1.0
    samples[9].sample_rate = 0.0
    samples[10].dense = [1.0]
    samples[11].slots = samples[11].slots[:-1]
    values = [CODEC.encode(s) for s in samples]
    values[12], values[13], values[14] = values[12][:-3], values[13] + b"x", None
    values[15] = MAGIC + bytes(8) + values[15][10:]
    (old, old_dead), (new, new_dead) = _both(values, monkeypatch)
    assert len(old_dead) == 9 and new_dead == old_dead
    assert len(new) == 291 and new.unknown_labels and len(new.action_rows)
    _assert_same_batch(old, new)


def test_decode_records_reads_a_fetch_with_another_writer_schema_record_by_record(monkeypatch):
    codec = Codec(Sample, AVRO_DIR / "sample.avsc")  # not the process-wide one
    old_schema = dict(codec.schema, fields=[f for f in codec.schema["fields"]
                                            if f["name"] != "flags"])
    old_schema = fastavro.parse_schema({k: v for k, v in old_schema.items()
                                        if not k.startswith("__")})
    codec.register_writer(old_schema)
    samples = SyntheticStream(num_slots=26, dense_dim=3, seed=4).take(5)
    values = [codec.encode(s) for s in samples]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old_schema, {f["name"]: getattr(samples[2], f["name"])
                                                 for f in old_schema["fields"]})
    values[2] = MAGIC + schema_fingerprint(old_schema) + buf.getvalue()
    assert ColumnarReader(codec).read(values).bad.tolist() == [False, False, True, False, False]
    builder, dead = BatchBuilder(MODEL), _Dead()
    batch = stream.decode_records(_records(values), codec, builder, dead, "t",
                                  ColumnarReader(codec))
    assert len(batch) == 5 and not dead.sent
    assert batch.request_ids == [s.request_id for s in samples]


def test_columnar_reader_is_none_for_a_schema_of_other_types(caplog):
    from schemas import DeadLetter

    assert stream.columnar_reader(codec_for(DeadLetter)) is None  # a bytes field
    assert "record by record" in caplog.text
