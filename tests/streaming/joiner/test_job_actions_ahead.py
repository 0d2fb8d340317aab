"""Actions that reach the joiner before their impressions, through both jobs: a rating-style
replay (every Taobao row is an impression and a "click" at the same event time) goes through
`streamtrain features`, then the joiner reads the deduplicated actions while its impression
topic is still empty (a client action log running ahead of the server's impression log:
the impression input goes idle and the watermark follows the actions alone). The impressions come
later. The actions' wait is measured on the impression clock, so none is an orphan and every
click is in its impression's final sample."""

import dataclasses
import os
import signal
import subprocess
import time

import pytest

from schemas import FLAG_LATE_CORRECTION, Action, DeadLetter, Impression, Sample, codec_for
from streamtrain.kafka_io import create_topics, make_consumer, read_all
from streamtrain.paths import REPO_ROOT
from tests.helpers.joiner_jobs import features_command, join_command, keep_forever, read_topic, run_join
from traffic.producer import produce
from traffic.replay import ReplayPlan

pytestmark = pytest.mark.integration
ROWS = 1200           # about 85 s of the log's event time
WINDOW_MS = 60_000
ORPHAN_WAIT_MS = 5_000


def _consumed(kafka, group: str, topic: str) -> bool:
    """Whether the group committed the topic's end offsets (the source commits at
    checkpoints)."""
    from kafka import TopicPartition

    consumer = make_consumer(kafka, group_id=group)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = consumer.end_offsets(tps)
        return all((consumer.committed(tp) or 0) >= ends[tp] for tp in tps)
    finally:
        consumer.close()


def test_actions_ahead_of_their_impressions_are_all_joined(kafka_broker, topics, shared_data,
                                                           tmp_path, producer):
    events, dead, _ = ReplayPlan.from_file("taobao_ratings").events(shared_data)
    assert not dead
    events = [ev for ev in events if int(ev.key[1:]) < ROWS]  # request id r<row>
    assert len(events) == 2 * ROWS
    topics = dataclasses.replace(topics, retention_hours=-1)  # records from 2017: keep them
    joined = dataclasses.replace(topics, impressions=f"{topics.impressions_enriched}-later",
                                 actions=topics.actions_deduped)
    create_topics(kafka_broker, joined)
    keep_forever(kafka_broker, topics)
    keep_forever(kafka_broker, joined)
    produce(events, kafka_broker, topics)
    run_join(features_command(kafka_broker, topics, "topics.retention_hours=-1"), timeout_s=420)
    enriched = read_all(kafka_broker, topics.impressions_enriched, timeout_s=60)
    assert len(enriched) == ROWS

    cmd = join_command(kafka_broker, joined, tmp_path, f"joiner.window_ms={WINDOW_MS}",
                       f"joiner.orphan_wait_ms={ORPHAN_WAIT_MS}", "joiner.stall_policy=off",
                       "flink.idleness_ms=500", "flink.checkpoint_interval_ms=1000",
                       "topics.retention_hours=-1", bounded=False)
    log_path = tmp_path / "join.log"
    with open(log_path, "wb") as log:
        job = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        # every action read (and the impression input idle) before any impression exists
        def wait_read(role: str, topic: str, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while not _consumed(kafka_broker, f"joiner-{joined.samples}-{role}", topic):
                assert job.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"the joiner did not read the {role}"
                time.sleep(1.0)

        wait_read("actions", joined.actions, 240)
        time.sleep(5.0)  # the watermark moves on with the actions alone; their waits tick
        for r in enriched:  # the impressions arrive now, as the feature job wrote them
            producer.send(joined.impressions, value=r.value, partition=r.partition,
                          timestamp_ms=r.timestamp)
        producer.flush()
        # every impression read (else a partition still idle would let the other's
        # end-marker alone move the watermark past impressions yet to come), then one
        # impression + click per partition far past every window: the watermark passes
        # every deadline and the windows close (the job runs unbounded)
        wait_read("impressions", joined.impressions, 120)
        last = max(codec_for(Impression).decode(r.value).event_time_ms for r in enriched)
        far = int(time.time() * 1000) + 3_600_000
        for p in range(topics.partitions):
            t = last + 10 * WINDOW_MS
            producer.send(joined.impressions, partition=p, timestamp_ms=far,
                          value=codec_for(Impression).encode(Impression(f"end-{p}", 1, 1, t)))
            producer.send(joined.actions, partition=p, timestamp_ms=far,
                          value=codec_for(Action).encode(Action(f"end-{p}", 1, 1, "click", t)))
        producer.flush()
        out = read_topic(kafka_broker, joined.samples, expected=ROWS, timeout_s=180)
        assert job.poll() is None, f"the joiner exited: {log_path.read_text()[-3000:]}"
    finally:  # the client and its JVM (the samples are written: nothing to wait for)
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)

    samples = [codec_for(Sample).decode(r.value) for r in out]
    dead = [codec_for(DeadLetter).decode(r.value)
            for r in read_all(kafka_broker, joined.dead_letter, timeout_s=10)]
    orphans = [d for d in dead if "orphan" in d.reason]
    assert orphans == [], f"{len(orphans)} orphans, e.g. {orphans[0].reason}"
    assert dead == []
    assert not [s for s in samples if s.flags & FLAG_LATE_CORRECTION]
    finals = [s for s in samples if not s.request_id.startswith("end-")]
    assert sorted(s.request_id for s in finals) == sorted(f"r{n}" for n in range(ROWS))
    assert all(s.label_types == ["click"] and s.label_delays_ms == [0] for s in finals)
