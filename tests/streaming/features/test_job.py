"""The feature job on the real MiniCluster against the real broker: Taobao replay values vs
the pandas reference and vs the online store; generator duplicates and bad input."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from schemas import Action, DeadLetter, FeatureUpdate, Impression, codec_for
from streaming.features.online_store import OnlineStore
from streamtrain.kafka_io import create_topics, read_all
from streamtrain.paths import REPO_ROOT
from tests.helpers import features_reference as reference
from tests.helpers.features_taobao import TAOBAO_SETTINGS, TAOBAO_SPEC, check_enriched
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

pytestmark = pytest.mark.integration


def run_features(kafka, topics, *settings: str) -> None:
    cmd = [sys.executable, "-m", "streamtrain.cli", "features", "--bounded",
           "--set", f"kafka.bootstrap={kafka.bootstrap}", "--set", "flink.checkpoint_interval_ms=0",
           "--set", "features_job.start=earliest", "--set", f"features_job.group_id=f-{topics.features}"]
    for role in ("impressions", "actions", "features", "dead_letter", "impressions_enriched",
                 "actions_deduped"):
        cmd += ["--set", f"topics.{role}={getattr(topics, role)}"]
    for s in settings:
        cmd += ["--set", s]
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def decode_all(kafka, topic, record_type):
    """Everything the (finished, bounded) job wrote to the topic."""
    codec = codec_for(record_type)
    return [codec.decode(r.value) for r in read_all(kafka, topic, timeout_s=90)]


def test_features_job_taobao_equals_reference_and_online_store(kafka_broker, topics, taobao_events,
                                                                taobao_expected, tmp_path):
    # the first hour of the replay (half of it: keeps the MiniCluster run short); the core is
    # checked on all of it in test_pipeline_taobao
    df, _ = taobao_expected
    cutoff = int(df["t"].min()) + 3_600_000
    df = df[df["t"] < cutoff]
    taobao_events = [ev for ev in taobao_events if ev.timestamp_ms < cutoff]
    s = TAOBAO_SPEC
    expected = reference.expected_features(df, s.windows_ms, s.action_types, s.ctr_action, s.ctr_prior,
                                           s.ctr_strength, s.last_n, s.dedup_ttl_ms)
    # the replay's record timestamps are from 2017: topics must keep records of any age, or
    # the broker's time-based retention deletes them under the job
    topics = dataclasses.replace(topics, retention_hours=-1).suffixed("keep")
    create_topics(kafka_broker, topics)
    produce(taobao_events, kafka_broker, topics)
    run_features(kafka_broker, topics, *TAOBAO_SETTINGS, "topics.retention_hours=-1")

    enriched = decode_all(kafka_broker, topics.impressions_enriched, Impression)
    check_enriched(enriched, expected, TAOBAO_SPEC)
    kept = reference.dedup(df, s.dedup_ttl_ms)
    deduped = decode_all(kafka_broker, topics.actions_deduped, Action)
    assert len(deduped) == (kept["kind"] != "pv").sum() > 0

    # consistency: what the online store returns for each entity at the impression's time is
    # what was attached to that impression
    store = OnlineStore(tmp_path / "store")
    assert store.consume(kafka_broker, topics.features) == 2 * len(expected)
    spec, names_u, names_i = TAOBAO_SPEC, TAOBAO_SPEC.names("user"), TAOBAO_SPEC.names("item")
    for imp in enriched[::7]:
        u = store.get(("user", imp.user_id), names_u, as_of_ms=imp.event_time_ms)
        i = store.get(("item", imp.item_id), names_i, as_of_ms=imp.event_time_ms)
        want = spec.attach_values("user", u) + spec.attach_values("item", i)
        assert np.allclose(imp.dense[-len(want):], np.float32(want), rtol=1e-6, atol=1e-6)
        assert store.lookup(("user", imp.user_id), imp.event_time_ms).event_time_ms == imp.event_time_ms
    # as-of: an entity's first update is not visible before its time
    first = min(enriched, key=lambda e: e.event_time_ms)
    assert store.lookup(("user", first.user_id), first.event_time_ms - 1) is None
    store.close()


def bad_records() -> tuple[list[bytes], list[bytes]]:
    """(impressions, actions) that must become dead letters: unknown action type, missing
    user id, absurd timestamp."""
    imp, act = codec_for(Impression), codec_for(Action)
    t = 1_700_000_100_000
    return ([imp.encode(Impression("bad-1", 0, 5, t)),                  # missing user id
             imp.encode(Impression("bad-2", 3, 5, 12))],                 # absurd timestamp
            [act.encode(Action("bad-3", 3, 5, "teleport", t)),           # unknown action type
             act.encode(Action("bad-4", -1, 5, "click", t))])            # missing user id


def test_features_job_drops_injected_duplicates_and_dead_letters_bad_input(kafka_broker, topics, producer):
    gen = TrafficGenerator(GeneratorConfig(seed=5, duration_s=60, impressions_per_s=50,
                                           duplicate_rate=0.05, out_of_order_rate=0.05,
                                           malformed_rate=0.01, start_ms=1_700_000_000_000))
    produce(gen.events(), kafka_broker, topics)
    stats = gen.stats
    assert stats["duplicate_impressions"] > 0 and stats["duplicate_actions"] > 0
    assert stats["out_of_order_impressions"] > 0 and stats["out_of_order_actions"] > 0
    bad_imps, bad_acts = bad_records()
    for raw in bad_imps:
        producer.send(topics.impressions, value=raw, timestamp_ms=1_700_000_100_000)
    for raw in bad_acts:
        producer.send(topics.actions, value=raw, timestamp_ms=1_700_000_100_000)
    producer.flush()
    run_features(kafka_broker, topics)

    enriched = decode_all(kafka_broker, topics.impressions_enriched, Impression)
    deduped = decode_all(kafka_broker, topics.actions_deduped, Action)
    # both outputs carry event time as their Kafka timestamp: the joiner's watermarks read it
    # (the actions leave through a side output, which drops the element timestamp)
    act = codec_for(Action)
    assert enriched and deduped
    assert all(r.timestamp == act.decode(r.value).event_time_ms
               for r in read_all(kafka_broker, topics.actions_deduped, timeout_s=90))
    imp = codec_for(Impression)
    assert all(r.timestamp == imp.decode(r.value).event_time_ms
               for r in read_all(kafka_broker, topics.impressions_enriched, timeout_s=90))
    # every original once, every injected duplicate dropped
    assert len(enriched) == stats["impressions"] and len({e.request_id for e in enriched}) == len(enriched)
    assert len(deduped) == stats["actions"]
    assert len({(a.request_id, a.action_type) for a in deduped}) == len(deduped)
    width = TAOBAO_SPEC.__class__().dense_width()
    assert all(len(e.dense) == 3 + width for e in enriched)

    n_dead = stats["malformed"] + len(bad_imps) + len(bad_acts)
    dead = decode_all(kafka_broker, topics.dead_letter, DeadLetter)
    assert len(dead) == n_dead
    reasons = Counter(d.reason.split(":")[0].split(" (")[0].split(" '")[0] for d in dead)
    assert reasons["unknown action_type"] == 1
    assert reasons["missing user_id"] == 2
    assert reasons["absurd timestamp"] == 1 + stats["malformed_zero_timestamp"]
    assert all(d.stage == "features" for d in dead)
    updates = decode_all(kafka_broker, topics.features, FeatureUpdate)
    assert len(updates) == 2 * stats["impressions"]


def test_features_job_sorting_in_the_jvm_writes_what_python_timers_write(kafka_broker, topics):
    """features_job.jvm_sort on (each step's records sorted by event time in the JVM; the
    item step in the JVM, or in Python with jvm_item_step off) and off (each record waits in
    the Python step for an event-time timer): the same outputs, record for record, on a
    stream out of order only within the watermark's bound (which records fall further
    behind than it depends on how the source interleaves partitions, in either mode)."""
    gen = TrafficGenerator(GeneratorConfig(seed=6, duration_s=60, impressions_per_s=50,
                                           duplicate_rate=0.05, out_of_order_rate=0.2,
                                           out_of_order_max_s=3.0, malformed_rate=0.0,
                                           start_ms=1_700_000_000_000))
    produce(gen.events(), kafka_broker, topics)
    outputs = ("impressions_enriched", "actions_deduped", "features", "dead_letter")
    timers = dataclasses.replace(topics, **{r: f"{getattr(topics, r)}-timers" for r in outputs})
    python_item = dataclasses.replace(topics, **{r: f"{getattr(topics, r)}-py" for r in outputs})
    create_topics(kafka_broker, timers)
    create_topics(kafka_broker, python_item)
    run_features(kafka_broker, topics, "features_job.jvm_sort=true")
    run_features(kafka_broker, timers, "features_job.jvm_sort=false")
    run_features(kafka_broker, python_item, "features_job.jvm_item_step=false")

    def read(t, role, record_type):
        return sorted(map(repr, decode_all(kafka_broker, getattr(t, role), record_type)))

    enriched = read(topics, "impressions_enriched", Impression)
    assert len(enriched) == gen.stats["impressions"] and gen.stats["out_of_order_impressions"] > 0
    assert read(timers, "impressions_enriched", Impression) == enriched
    assert read(python_item, "impressions_enriched", Impression) == enriched
    deduped = read(topics, "actions_deduped", Action)
    assert len(deduped) == gen.stats["actions"] > 0
    assert read(timers, "actions_deduped", Action) == deduped
    assert read(python_item, "actions_deduped", Action) == deduped
    updates = read(topics, "features", FeatureUpdate)
    assert len(updates) == 2 * len(enriched)
    assert read(timers, "features", FeatureUpdate) == updates
    assert read(python_item, "features", FeatureUpdate) == updates
    # what the joiner's watermarks read: event time as the Kafka timestamp, sorted path too
    for role, codec in (("impressions_enriched", codec_for(Impression)),
                        ("actions_deduped", codec_for(Action))):
        records = read_all(kafka_broker, getattr(topics, role), timeout_s=90)
        assert records and all(r.timestamp == codec.decode(r.value).event_time_ms for r in records)
