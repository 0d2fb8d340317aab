"""The jobs' key selectors and event-time stamps in the JVM (streaming/jvm_ops.py,
jvm/flink-ops): the real jar, compiled by javac and called through PyFlink's JVM, gives the
Python functions' keys and stamps on the generator's records, the shared logs and corrupt
bytes; the jobs' topologies use it (no Python key-by operator) unless told not to."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from schemas import Action, DeadLetter, Impression, codec_for
from schemas.codec import HEADER_LEN
from schemas.validation import ValidationLimits
from streaming.features.flink_functions import EventTimeStamp, user_key
from streaming.flink_env import FlinkConfig
from streaming.joiner.join_function import join_bucket
from streaming.jvm_ops import JAR_PREFIX, ops_jar
from streaming.jvm_ops import screen as jvm_screen
from streaming.record_gate import RecordGate
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.replay import ReplayPlan

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
PY_KEY_BY = "_stream_key_by_map_operator"  # the name PyFlink gives its Python key-by operator


@pytest.fixture(scope="module")
def jvm():
    """PyFlink's JVM with the ops jar on its context class loader (as make_env puts it)."""
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    jar = ops_jar()
    if jar is None:
        pytest.skip("no JDK (javac) here: the jobs key in Python")
    add_jars_to_context_class_loader([jar.resolve().as_uri()])
    return get_gateway().jvm.streamtrain.flink


def _py_stamp(raw: bytes, action: bool, fallback: int) -> int:
    return EventTimeStamp(action).extract_timestamp(raw, fallback)


def _assert_same(jvm, raws: list[bytes]) -> None:
    """Every key and stamp the JVM computes equals the Python one, record by record."""
    for raw in raws:
        for buckets in (1, 7, 128):
            assert jvm.JoinBucket.bucket(raw, buckets) == join_bucket(raw, buckets), (raw, buckets)
        assert jvm.UserKey.userId(raw) == user_key(raw), raw
        for action in (False, True):
            py = _py_stamp(raw, action, -5)
            if isinstance(py, int) and LONG_MIN <= py <= LONG_MAX:
                assert jvm.EventTimeStamp.eventTime(raw, action, -5) == py, (raw, action)


def _generator_raws(malformed: float) -> list[bytes]:
    gen = TrafficGenerator(GeneratorConfig(seed=11, duration_s=20, impressions_per_s=40,
                                           malformed_rate=malformed), now_ms=1_700_000_000_000)
    return [bytes(e.value) for e in gen.events() if e.topic in ("impressions", "actions")]


def test_keys_and_stamps_match_python_on_generator_records(jvm) -> None:
    raws = _generator_raws(malformed=0.05)
    assert len(raws) > 800
    _assert_same(jvm, raws)
    buckets = {jvm.JoinBucket.bucket(r, 128) for r in raws}
    assert len(buckets) > 100  # keys spread: not a constant on both sides


def test_keys_and_stamps_match_python_on_edge_values(jvm) -> None:
    recs = [Impression("", 0, 0, 0), Impression("r" * 300, LONG_MAX, LONG_MIN, LONG_MAX),
            Impression("é✓", LONG_MIN, LONG_MAX, LONG_MIN), Impression("x", -1, 1, -1),
            Action("", 0, 0, "", 0), Action("q" * 200, LONG_MAX, LONG_MIN, "c" * 130, LONG_MIN),
            Action("r9", -7, 42, "conversion", 1_700_000_000_123)]
    raws = [codec_for(type(r)).encode(r) for r in recs]
    _assert_same(jvm, raws)
    assert jvm.UserKey.userId(raws[1]) == LONG_MAX
    assert jvm.EventTimeStamp.eventTime(raws[5], True, 0) == LONG_MIN


def test_keys_and_stamps_match_python_on_corrupt_bytes(jvm) -> None:
    raws = [codec_for(Impression).encode(Impression("req-1", 12345, 678, 1_700_000_000_000)),
            codec_for(Action).encode(Action("req-1", 12345, 678, "click", 1_700_000_000_500))]
    rng = random.Random(3)
    corrupt = [r[:n] for r in raws for n in range(len(r) + 1)]  # every truncation
    for _ in range(1500):  # byte flips in the leading fields
        r = bytearray(rng.choice(raws))
        for _ in range(rng.randint(1, 3)):
            r[rng.randrange(HEADER_LEN, min(len(r), HEADER_LEN + 24))] = rng.randrange(256)
        corrupt.append(bytes(r))
    head = raws[0][:HEADER_LEN + 1]
    corrupt += [head + b"\x01" + raws[0][HEADER_LEN + 2:],              # request_id length -1
                head + b"\xff" * 11 + b"\x01" + raws[0][HEADER_LEN + 8:],  # an overlong length
                head + b"\x02r" + b"\xff" * 10 + b"\x7f" + b"\x02",       # user_id beyond a long
                head + b"\x02r" + b"\x80" * 12 + b"\x00" + b"\x02"]       # zero padding: a 0 user
    _assert_same(jvm, corrupt)
    assert jvm.UserKey.userId(corrupt[-2]) == 0 and jvm.JoinBucket.bucket(raws[0][:12], 9) == 0


def test_keys_and_stamps_match_python_on_the_shared_logs(jvm, shared_data) -> None:
    for plan in ("talkingdata", "taobao"):
        events, _, _ = ReplayPlan.from_file(plan).events(shared_data)
        raws = [bytes(e.value) for e in events][:20_000]
        assert len(raws) > 1000
        _assert_same(jvm, raws)


NOW = 1_700_000_050_000  # the clock the screen and the gate are both given


def _screen_and_gate(jvm, raws: list[bytes], limits: ValidationLimits) -> list[tuple[bytes, int]]:
    """The records (and kinds) where the JVM's screen and the record gate disagree: suspect
    but accepted, or rejected but let wait. Each record is tried as either kind."""
    screen = jvm_screen(limits)
    gates = (RecordGate(Impression, "features", "impressions", limits),
             RecordGate(Action, "features", "actions", limits))
    wrong = []
    for raw in raws:
        for kind, gate in enumerate(gates):
            rejected = isinstance(gate.update(raw, NOW), DeadLetter)
            if screen.suspect(raw, kind, NOW) != rejected:
                wrong.append((raw, kind))
    return wrong


def _body_corruptions(raws: list[bytes], n: int, seed: int) -> list[bytes]:
    """Every truncation, a trailing byte, and ``n`` random byte flips anywhere in the body."""
    rng = random.Random(seed)
    out = [r[:k] for r in raws for k in range(len(r) + 1)] + [r + b"\x00" for r in raws]
    for _ in range(n):
        r = bytearray(rng.choice(raws))
        for _ in range(rng.randint(1, 2)):
            r[rng.randrange(HEADER_LEN, len(r))] = rng.randrange(256)
        out.append(bytes(r))
    return out


def test_the_sorts_screen_suspects_what_the_record_gate_rejects(jvm) -> None:
    """The records the feature job's user step would dead-letter do not wait for the
    watermark in the JVM (streamtrain.flink.Screen): on generator records with every kind
    of malformed one, corrupt bodies and each validation rule, the screen suspects exactly
    the records the gate rejects."""
    imp, act = codec_for(Impression), codec_for(Action)
    good = [imp.encode(Impression("req-1", 12345, 678, NOW - 5, [1, 2, 300], [7, -8, 1 << 40],
                                  [0.5, -1.25])),
            imp.encode(Impression("r", 1, 1, NOW)),
            act.encode(Action("req-1", 12345, 678, "click", NOW - 100, 2.5)),
            act.encode(Action("é-ü", 1, 2, "like", NOW))]
    rules = [imp.encode(Impression("", 1, 2, NOW)),                     # missing request_id
             imp.encode(Impression("r", 0, 2, NOW)), imp.encode(Impression("r", -3, 2, NOW)),
             imp.encode(Impression("r", 3, 0, NOW)),                      # missing item_id
             imp.encode(Impression("r", 3, 2, NOW, [1, 2], [5])),         # slots/ids mismatch
             imp.encode(Impression("r", 3, 2, 0)), imp.encode(Impression("r", 3, 2, 12)),
             imp.encode(Impression("r", 3, 2, NOW + 3_600_001)),          # too far ahead
             imp.encode(Impression("r", 3, 2, NOW + 3_600_000)),          # just within
             imp.encode(Impression("r", 3, 2, NOW - 86_400_001)),         # older than max_past
             act.encode(Action("r", 3, 2, "teleport", NOW)), act.encode(Action("r", 3, 2, "", NOW)),
             act.encode(Action("r\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), 3, 2,
                               "click", NOW)),
             b"", b"junk", b"\xc3\x01" + b"\x00" * 8, imp.encode(Impression("r", 3, 2, NOW))[::-1]]
    limits = ValidationLimits(max_past_ms=86_400_000)
    raws = good + rules + _generator_raws(0.2) + _body_corruptions(good, 3000, 5)
    assert _screen_and_gate(jvm, raws, limits) == []
    assert _screen_and_gate(jvm, raws, ValidationLimits(action_types=None, min_event_time_ms=None)) == []
    screen = jvm_screen(limits)
    assert [screen.suspect(r, 0, NOW) for r in good[:2]] == [False, False]
    assert [screen.suspect(r, 0, NOW) for r in rules[:8]] == [True] * 8


def test_the_screen_reads_another_writer_schemas_leading_fields_only(jvm) -> None:
    """A message of another writer schema the codec reads is screened on its leading fields
    only (its body's layout is the decoder's business), so a good one waits like any other;
    a header no codec knows is suspect."""
    from schemas.codec import MAGIC

    limits = ValidationLimits()
    body = codec_for(Impression).encode(Impression("r", 3, 2, NOW, [1], [5], [0.5]))[HEADER_LEN:]
    bad_body = codec_for(Impression).encode(Impression("r", 0, 2, NOW))[HEADER_LEN:]
    own, older, unknown = sorted(codec_for(Impression).own_headers)[0], MAGIC + bytes(8), MAGIC + b"\x01" * 8
    act = b"".join(sorted(codec_for(Action).known_headers))
    screen = jvm.Screen(own, own + older, act, act, limits.min_event_time_ms, limits.max_future_ms,
                        -1, None)
    assert not screen.suspect(own + body, 0, NOW) and screen.suspect(own + body + b"\x00", 0, NOW)
    assert not screen.suspect(older + body, 0, NOW) and not screen.suspect(older + body + b"\x00", 0, NOW)
    assert screen.suspect(older + bad_body, 0, NOW)
    assert screen.suspect(unknown + body, 0, NOW)


def _plan_operators(build, flink: FlinkConfig) -> list[str]:
    from streaming.flink_env import make_env

    env = make_env(flink)
    build(env, flink)
    return [n["type"] for n in json.loads(env.get_execution_plan())["nodes"]]


def _joiner(env, flink) -> None:
    from streaming.joiner import job
    from streaming.joiner.config import JoinerConfig
    from streamtrain.kafka_io import KafkaConfig, TopicsConfig

    job.build(env, KafkaConfig(), TopicsConfig(), flink, JoinerConfig(), job.JoinerJobConfig(),
              bounded=True)


def _features(env, flink, jvm_sort: bool = False) -> None:
    from streaming.features import job
    from streaming.features.spec import FeatureSpec
    from streamtrain.kafka_io import KafkaConfig, TopicsConfig

    job.build(env, KafkaConfig(), TopicsConfig(), flink, FeatureSpec(),
              job.FeatureJobConfig(jvm_sort=jvm_sort), bounded=True)


def _features_sorted(env, flink) -> None:
    _features(env, flink, jvm_sort=True)


@pytest.mark.parametrize("build, jvm_keys, sorts", [
    (_joiner, ["key:JoinBucket", "key:JoinBucket"], []),
    (_features, ["key:UserKey", "key:UserKey", "key:FieldKey"], []),
    (_features_sorted, ["key:KindUserKey", "key:KindUserKey", "key:FieldKey"],
     ["event-time-sort:user", "event-time-sort:item"])])
def test_jobs_key_in_the_jvm_unless_told_not_to(jvm, build, jvm_keys, sorts) -> None:
    ops = _plan_operators(build, FlinkConfig())
    assert [o for o in ops if o.startswith("key:")] == jvm_keys and PY_KEY_BY not in ops
    assert [o for o in ops if o.startswith("event-time-sort:")] == sorts
    ops = _plan_operators(build, FlinkConfig(jvm_ops=False))
    assert not [o for o in ops if o.startswith(("key:", "event-time-sort:"))]
    assert ops.count(PY_KEY_BY) == len(jvm_keys)


def test_jar_is_rebuilt_for_changed_sources_and_skipped_without_a_jdk(tmp_path, monkeypatch) -> None:
    import streaming.jvm_ops as ops

    src = tmp_path / "src"
    shutil.copytree(ops.SOURCES, src)
    monkeypatch.setattr(ops, "SOURCES", src)
    first = ops_jar(tmp_path / "jars")
    if first is None:
        pytest.skip("no JDK (javac) here")
    assert ops_jar(tmp_path / "jars", build=False) == first
    peek = src / "streamtrain" / "flink" / "Peek.java"
    peek.write_text(peek.read_text() + "\n// edited\n")
    second = ops_jar(tmp_path / "jars")
    assert second is not None and second != first and second.exists() and not first.exists()
    assert sorted(p.name for p in (tmp_path / "jars").iterdir()) == [second.name]  # nothing staged left
    assert second.stat().st_mode & 0o777 == 0o644
    assert second.name.startswith(JAR_PREFIX)

    peek.write_text(peek.read_text() + "\n// again\n")
    monkeypatch.setattr(ops.shutil, "which", lambda name: None)
    assert ops_jar(tmp_path / "jars") is None  # no javac: None (the jobs key in Python)


def test_a_compile_error_is_loud(tmp_path, monkeypatch) -> None:
    import streaming.jvm_ops as ops

    if shutil.which("javac") is None:
        pytest.skip("no JDK (javac) here")
    src = tmp_path / "src" / "streamtrain" / "flink"
    src.mkdir(parents=True)
    (src / "Broken.java").write_text("package streamtrain.flink; class Broken { int x = ; }\n")
    monkeypatch.setattr(ops, "SOURCES", Path(tmp_path / "src"))
    with pytest.raises(ops.OpsBuildError, match="Broken.java"):
        ops_jar(tmp_path / "jars")


@pytest.mark.integration
def test_joiner_in_process_mode_with_jvm_keys_joins_everything(jvm, kafka_broker, topics, tmp_path) -> None:
    """Process mode (Python in Beam workers, side outputs through PyFlink's map) on the
    JVM-keyed rows: every impression has one final sample, every label comes out, every
    malformed record is a dead letter. (Thread mode is what every other job test runs.)"""
    from schemas import FLAG_LATE_CORRECTION, Sample
    from tests.helpers.joiner_jobs import expected_keys, join_command, read_topic, run_join
    from traffic.producer import produce

    start = 1_700_000_000_000
    gen = TrafficGenerator(GeneratorConfig(seed=8, duration_s=120, impressions_per_s=5,
                                           malformed_rate=0.02, start_ms=start, base_ctr=0.3,
                                           click_delay_median_s=3))
    events = list(gen.events())
    imps, labels = expected_keys([e for e in events if e.key != b"malformed"])
    malformed = sum(e.key == b"malformed" for e in events)
    assert len(imps) > 400 and len(labels) > 50 and malformed > 5
    produce(events, kafka_broker, topics)
    run_join(join_command(kafka_broker, topics, tmp_path, "flink.execution_mode=process",
                          "joiner.window_ms=10000", "joiner.stall_policy=off"), timeout_s=400)
    out = [codec_for(Sample).decode(r.value) for r in read_topic(kafka_broker, topics.samples)]
    finals = [(s.request_id, s.item_id) for s in out if not s.flags & FLAG_LATE_CORRECTION]
    assert sorted(finals) == sorted(imps), "one final sample per impression"
    assert {(s.request_id, s.item_id, t) for s in out for t in s.label_types} == labels
    assert len(read_topic(kafka_broker, topics.dead_letter, expected=malformed)) == malformed

