"""Poison pills: whatever bytes reach a Python operator of a Flink job, or a consumer, come
out as valid records or dead letters, never as an exception (in Flink an exception fails
the task, and the restart re-reads the same record: a restart loop).

Fuzzed (hypothesis), for any bytes and for mutated valid records (bytes flipped, inserted,
deleted, cut, a varint made longer than a long), driven directly with stand-ins for the
Flink contexts (``tests/helpers/flink_fakes.py``):

* feature job: the key selectors (``user_key``, the item key of the step records), the user
  step (gate, dedup, features) and the item step's decode path;
* joiner: ``join_bucket`` and ``JoinFunction`` (gate, ``JoinCore`` per bucket, timers), under
  both policies and with negative down-sampling;
* the passthrough job's ``GateFunction``;
* trainer: the sample decoding of ``KafkaSampleSource`` (codec + ``BatchBuilder.problem``)
  and a training step on what it let through;
* serving: ``DeltaConsumer``'s delta and dense paths, into the replica's ``ServingModel``.
"""

import hashlib
import tempfile
import threading
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Action, DeadLetter, DenseSnapshot, FeatureUpdate, Impression, Sample, SparseDelta, codec_for
from schemas.peek import LONG_MAX, LONG_MIN
from streaming.event_time import END_OF_TIME
from streaming.features.flink_functions import (
    KIND_ACTION,
    KIND_IMPRESSION,
    ItemFeatureFunction,
    UserFeatureFunction,
    user_key,
)
from streaming.features.spec import FeatureSpec
from streaming.joiner.config import JoinerConfig
from streaming.joiner.core import JoinCore
from streaming.joiner.join_function import JoinFunction, join_bucket
from streaming.passthrough_job import GateFunction
from streamtrain.kafka_io import TopicsConfig
from sync.applier import DeltaApplier
from sync.config import ConsumerConfig
from sync.consumer import ConsumerStats, DeltaConsumer
from sync.delta_builder import build_deltas
from sync.dense import DenseAssembler, chunk_dense, encode_dense
from sync.replica import ServingModel
from sync.store import MemoryRowStore
from tests.helpers.flink_fakes import KeyedHarness
from tests.helpers.joiner_records import act, imp
from tests.helpers.trainer_models import small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.stream import KafkaSampleSource, columnar_reader
from trainer.trainer import Trainer

T0 = 1_700_000_000_000
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW_FUZZ = settings(FUZZ, max_examples=60)

longs = st.integers(LONG_MIN, LONG_MAX)
small_ids = st.integers(-3, 50)
times = st.one_of(st.integers(T0 - 10**6, T0 + 10**6), longs)
text = st.text(max_size=12)
impressions = st.builds(Impression, request_id=text, user_id=st.one_of(small_ids, longs),
                        item_id=st.one_of(small_ids, longs), event_time_ms=times,
                        slots=st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=4),
                        ids=st.lists(longs, max_size=4),
                        dense=st.lists(st.floats(width=32), max_size=4))
actions = st.builds(Action, request_id=text, user_id=st.one_of(small_ids, longs),
                    item_id=st.one_of(small_ids, longs),
                    action_type=st.sampled_from(["click", "like", "conversion", "", "teleport"]),
                    event_time_ms=times, value=st.floats(width=32))
samples = st.builds(Sample, request_id=text, user_id=longs, item_id=longs, event_time_ms=times,
                    emit_time_ms=times, slots=st.lists(st.integers(-2, 8), max_size=6),
                    ids=st.lists(longs, max_size=6), dense=st.lists(st.floats(width=32), max_size=1),
                    label_types=st.lists(st.sampled_from(["click", "like", "x"]), max_size=3),
                    label_delays_ms=st.lists(longs, max_size=3), weight=st.floats(width=32),
                    sample_rate=st.floats(width=32), flags=st.integers(0, 7))


@st.composite
def mutated(draw, records):
    """A valid encoding of a drawn record, then a few mutations."""
    rec = draw(records)
    b = bytearray(codec_for(type(rec)).encode(rec))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "overlong"]))
        at = draw(st.integers(0, len(b)))
        if op == "flip" and at < len(b):
            b[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            b[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del b[at:at + draw(st.integers(1, 4))]
        elif op == "cut":
            del b[at:]
        elif op == "overlong" and at < len(b):  # a varint longer than a long's 10 bytes
            b[at:at] = b"\xff" * draw(st.integers(1, 14))
    return bytes(b)


def fuzzed(records):
    return st.one_of(st.binary(max_size=120), mutated(records))


def _check_outputs(outputs, main_codec=None):
    """Every output is a record of its stream (decodes); returns (main, side) like ``split``."""
    main, side = KeyedHarness.split(outputs)
    for raw in side.get("dead-letter", []):
        codec_for(DeadLetter).decode(raw)
    for raw in side.get("feature-updates", []):
        codec_for(FeatureUpdate).decode(raw)
    for raw in side.get("actions-deduped", []):
        codec_for(Action).decode(raw)
    for o in main:
        if main_codec is not None:
            main_codec.decode(o)
    return main, side


# ---- feature job ------------------------------------------------------------------------

@FUZZ
@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.one_of(fuzzed(impressions), fuzzed(actions))),
                min_size=1, max_size=6),
       st.sampled_from([-END_OF_TIME, 0, T0, END_OF_TIME - 1]))
def test_seam_fuzz_feature_job_operators(records, watermark):
    user = KeyedHarness(UserFeatureFunction(FeatureSpec(), "impressions", "actions"))
    item = KeyedHarness(ItemFeatureFunction(FeatureSpec()))
    steps = []
    for input_no, raw in records:
        key = user_key(raw)
        assert isinstance(key, int) and LONG_MIN <= key <= LONG_MAX  # a Flink LONG key
        out = user.element(input_no, raw, key=key, timestamp=T0, watermark=watermark)
        steps += _check_outputs(out)[0]
    steps += _check_outputs(user.advance(END_OF_TIME))[0]
    for kind, item_id, payload in steps:  # Types.TUPLE([INT, LONG, bytes]), keyed by item_id
        assert kind in (KIND_IMPRESSION, KIND_ACTION) and LONG_MIN <= item_id <= LONG_MAX
        main, _ = _check_outputs(item.element(0, (kind, item_id, payload), key=item_id))
        for raw in main:
            codec_for(Impression).decode(raw)
    _check_outputs(item.advance(END_OF_TIME), codec_for(Impression))


@FUZZ
@given(st.sampled_from([KIND_IMPRESSION, KIND_ACTION]), longs,
       st.one_of(fuzzed(impressions), fuzzed(actions)))
def test_seam_fuzz_feature_item_step_decode(kind, item_id, payload):
    """The item step reads bytes the user step wrote; bad ones are dead letters all the same."""
    item = KeyedHarness(ItemFeatureFunction(FeatureSpec()))
    _check_outputs(item.element(0, (kind, item_id, payload), key=item_id) + item.advance(END_OF_TIME),
                   codec_for(Impression))


def test_seam_a_corrupt_user_id_varint_gets_a_safe_key_and_is_dead_lettered():
    raw = codec_for(Impression).encode(Impression("r1", 7, 42, T0, [0], [5], []))
    at = raw.index(b"\x0e", 10)  # user_id 7
    for user_id_bytes in (b"\xff" * 12 + b"\x01", b"\xfe" * 9 + b"\x7f"):  # > 64 bits, wrapped
        bad = raw[:at] + user_id_bytes + raw[at + 1:]
        assert user_key(bad) == 0
        h = KeyedHarness(UserFeatureFunction(FeatureSpec(), "impressions", "actions"))
        main, side = _check_outputs(h.element(1, bad, key=0, watermark=T0))
        (dl,) = [codec_for(DeadLetter).decode(d) for d in side["dead-letter"]]
        assert not main and dl.reason.startswith("undecodable") and dl.raw == bad


# ---- joiner -----------------------------------------------------------------------------

@SLOW_FUZZ
@given(st.lists(st.tuples(st.sampled_from([1, 2]),
                          st.one_of(fuzzed(impressions), fuzzed(actions),
                                    st.builds(lambda r, t, k: codec_for(Action).encode(act(r, t, k)),
                                              st.sampled_from(["a", "b"]), st.integers(T0 - 5, T0 + 50),
                                              st.sampled_from(["click", "like"])),
                                    st.builds(lambda r, t: codec_for(Impression).encode(imp(r, t)),
                                              st.sampled_from(["a", "b"]), st.integers(T0 - 5, T0 + 50))),
                          st.integers(T0 - 20, T0 + 60)),
                min_size=1, max_size=10),
       st.sampled_from(["wait", "early"]), st.sampled_from([1.0, 0.5, 1e-9]))
def test_seam_fuzz_joiner_function(records, policy, rate):
    buckets = 4
    with tempfile.TemporaryDirectory() as kv:
        fn = JoinFunction(JoinerConfig(window_ms=20, orphan_wait_ms=5, policy=policy,
                                       negative_sample_rate=rate, stall_policy="off"),
                          kv, "impressions", "actions", buckets, timer_tick_ms=1, log_interval_s=1e9)
        h = KeyedHarness(fn)
        out = []
        for input_no, raw, wm in records:
            bucket = join_bucket(raw, buckets)
            assert isinstance(bucket, int) and 0 <= bucket < buckets
            out += h.element(input_no, raw, key=bucket, timestamp=wm, watermark=wm)
        out += h.advance(END_OF_TIME)
        h.close()
    main, _ = _check_outputs(out, codec_for(Sample))
    assert all(codec_for(Sample).decode(s).sample_rate == np.float32(rate) for s in main)


def test_seam_early_policy_with_down_sampling_never_outputs_none(tmp_path):
    """An action read before its impression but later than the window (a correction at
    close) used to make the early policy finalize a label-less entry at once, and a
    down-sampled negative came back as None (``encode(None)`` crashed the job)."""
    core = JoinCore(JoinerConfig(window_ms=1000, policy="early", negative_sample_rate=1e-9,
                                 stall_policy="off", orphan_wait_ms=10_000, kv_path=str(tmp_path / "kv")))
    assert core.on_action(act("r1", T0 + 5000), T0) == []       # waits for its impression
    out = core.on_impression(imp("r1", T0), T0)
    out += core.advance(END_OF_TIME)
    assert all(isinstance(o, Sample) for o in out)
    (corr,) = out  # the negative was down-sampled; the late label still comes as a correction
    assert corr.label_types == ["click"] and corr.flags & 2 and corr.sample_rate == 1e-9
    assert core.metrics.dropped_negatives == 1
    core.close()


# ---- passthrough ------------------------------------------------------------------------

@FUZZ
@given(st.sampled_from(["impression", "action"]), st.one_of(fuzzed(impressions), fuzzed(actions)))
def test_seam_fuzz_passthrough_gate(record_type, raw):
    h = KeyedHarness(GateFunction(record_type, "passthrough", "in"))
    main, side = _check_outputs(h.element(0, raw), codec_for(Impression if record_type == "impression"
                                                                else Action))
    assert len(main) + len(side.get("dead-letter", [])) == 1


# ---- trainer ----------------------------------------------------------------------------

class _Sink:
    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []

    @property
    def count(self) -> int:
        return len(self.sent)

    def send(self, dl: DeadLetter) -> None:
        codec_for(DeadLetter).encode(dl)  # it must be writable
        self.sent.append(dl)


_TRAINER = Trainer(small_model(heads=("click", "like")), small_table(), small_trainer())


@FUZZ
@given(st.lists(st.one_of(fuzzed(samples), st.builds(lambda s: codec_for(Sample).encode(s), samples)),
                min_size=1, max_size=8))
def test_seam_fuzz_trainer_sample_decoding_and_step(values):
    source = object.__new__(KafkaSampleSource)  # its decode path, without a consumer
    source.topic, source.records, source.dead = "samples", 0, _Sink()
    source.builder, source.codec = BatchBuilder(_TRAINER.model_cfg), codec_for(Sample)
    source.reader = columnar_reader(source.codec)  # the default: a whole fetch decoded in columns
    records = [SimpleNamespace(partition=0, offset=i, value=v) for i, v in enumerate(values)]
    batch = source._decode(records)
    assert len(batch) + source.dead.count == len(values) and batch.positions == {0: len(values)}
    _TRAINER.train_batch(batch)


# ---- serving consumer -------------------------------------------------------------------

def _consumer(on_dense) -> DeltaConsumer:
    """A DeltaConsumer's apply path (decode, check, applier, dense assembly), without Kafka."""
    c = object.__new__(DeltaConsumer)
    c.config, c.topics, c.store = ConsumerConfig(model="ctr", group_id="fuzz"), TopicsConfig(), MemoryRowStore()
    c.on_dense, c.on_traces = on_dense, None
    c.applier, c.dense = DeltaApplier(c.store, "ctr"), DenseAssembler("ctr")
    c._dead = _Sink()
    c.stats, c.dims, c.lock = ConsumerStats(dead_letter_sink=c._dead), {}, threading.RLock()
    c._consumer = SimpleNamespace(commit_async=lambda: None)
    c.num_shards, c.shards = 2, [0, 1]
    c.applier.start_at(None, c.shards)
    c._delta_codec, c._dense_codec = codec_for(SparseDelta), codec_for(DenseSnapshot)
    return c


def _valid_pushes(version: int) -> tuple[list[bytes], list[bytes]]:
    trainer = Trainer(small_model(), small_table(), small_trainer())
    rows = SimpleNamespace(table="emb", ids=np.arange(1, 6), values=np.ones((5, 8), np.float32),
                           evicted=np.asarray([9]))
    deltas = [codec_for(SparseDelta).encode(m) for _, m in build_deltas("ctr", version, [rows], 2, "fp16", 900_000, 0)]
    payload = encode_dense(trainer.dense_state_dict(), trainer.model_config())
    dense = [codec_for(DenseSnapshot).encode(m) for m in chunk_dense("ctr", version, 0, payload, 2048)]
    return deltas, dense


VALID_DELTAS, VALID_DENSE = _valid_pushes(1)
deltas = st.builds(SparseDelta, model=st.sampled_from(["ctr", "other"]), table=st.sampled_from(["emb", "", "x"]),
                   version=st.one_of(st.integers(-2, 5), longs), shard=st.integers(-1, 2),
                   num_shards=st.integers(-1, 3), created_ms=longs, dim=st.one_of(st.integers(-1, 9), longs),
                   ids=st.lists(longs, max_size=3), values=st.binary(max_size=80),
                   tombstones=st.lists(longs, max_size=3), dtype=st.sampled_from(["fp32", "fp16", "bf16"]),
                   part=st.integers(-1, 3), num_parts=st.integers(-1, 3))


@st.composite
def dense_chunks(draw):
    payload = draw(st.one_of(st.binary(max_size=64), st.sampled_from([b"".join(
        codec_for(DenseSnapshot).decode(v).payload for v in VALID_DENSE)])))
    digest = hashlib.sha256(payload).hexdigest() if draw(st.booleans()) else draw(st.text(max_size=8))
    return DenseSnapshot(draw(st.sampled_from(["ctr", "x"])), draw(st.one_of(st.integers(-1, 5), longs)),
                         draw(longs), draw(st.integers(-1, 3)), draw(st.integers(-1, 3)), digest, payload,
                         draw(st.sampled_from(["torch-state-dict", "?"])))


@FUZZ
@given(st.lists(st.one_of(
    st.tuples(st.just("model-deltas"), st.one_of(
        st.binary(max_size=100), st.sampled_from(VALID_DELTAS),
        mutated(st.sampled_from(VALID_DELTAS).map(codec_for(SparseDelta).decode)),
        st.builds(codec_for(SparseDelta).encode, deltas))),
    st.tuples(st.just("model-dense"), st.one_of(
        st.binary(max_size=100), st.sampled_from(VALID_DENSE),
        mutated(st.sampled_from(VALID_DENSE).map(codec_for(DenseSnapshot).decode)),
        st.builds(codec_for(DenseSnapshot).encode, dense_chunks())))), min_size=1, max_size=8),
    st.integers(0, 1))
def test_seam_fuzz_serving_consumer(records, partition):
    served = []
    c = _consumer(lambda version, cfg, state: served.append(ServingModel(version, cfg, state)))
    c._apply([SimpleNamespace(topic=t, partition=partition if t == "model-deltas" else 0, offset=i, value=v)
              for i, (t, v) in enumerate(records)])
    with c.snapshot() as snap:
        snap.lookup("emb", np.arange(1, 6), 8)
