"""The feature job hands the joiner records whose Kafka timestamps are their event times.

A rating-style replay (every Taobao row is an impression and a "click" at the same event
time, flat out) through `streamtrain features --bounded`, then `streamtrain join --bounded`
from the two topics the feature job wrote, as a user runs the two stages one after the
other. The joiner's watermark on each input follows those topics' record timestamps; the
deduplicated actions leave the feature job through a side output, which drops the element
timestamp, so they used to carry wall-clock stamps: the action input's watermark then ran
ahead of event time, stopped holding the join back while actions were still being read, and
about a tenth of the clicks came out as a negative plus a late correction. Every click must be
in its impression's one final sample: no orphan, no correction, no dead letter."""

import dataclasses

import pytest

from schemas import FLAG_LATE_CORRECTION, DeadLetter, Sample, codec_for
from streamtrain.kafka_io import create_topics, read_all
from tests.helpers.joiner_jobs import features_command, join_command, keep_forever, read_topic, run_join
from traffic.producer import produce
from traffic.replay import ReplayPlan

pytestmark = pytest.mark.integration
ROWS = 3000  # a few minutes of the log's event time, thousands of same-second pairs
WINDOW_MS = 2_000


def test_same_second_actions_through_both_bounded_jobs_all_join(kafka_broker, topics, shared_data, tmp_path):
    events, dead, _ = ReplayPlan.from_file("taobao_ratings").events(shared_data)
    assert not dead
    events = [ev for ev in events if int(ev.key[1:]) < ROWS]  # request id r<row>
    assert len(events) == 2 * ROWS
    topics = dataclasses.replace(topics, retention_hours=-1)  # records from 2017: keep them
    create_topics(kafka_broker, topics)
    keep_forever(kafka_broker, topics)
    produce(events, kafka_broker, topics)
    run_join(features_command(kafka_broker, topics, "topics.retention_hours=-1"), timeout_s=420)

    joined = dataclasses.replace(topics, impressions=topics.impressions_enriched, actions=topics.actions_deduped)
    # a short window against minutes of event time: a reader of one input ahead of the other
    # by more than a window's worth of event time shows at once
    run_join(join_command(kafka_broker, joined, tmp_path, "topics.retention_hours=-1",
                          f"joiner.window_ms={WINDOW_MS}", f"joiner.orphan_wait_ms={WINDOW_MS}",
                          "flink.out_of_orderness_ms=1000"), timeout_s=420)

    samples = [codec_for(Sample).decode(r.value)
               for r in read_topic(kafka_broker, joined.samples, expected=ROWS, timeout_s=120)]
    dead_letters = [codec_for(DeadLetter).decode(r.value)
                    for r in read_all(kafka_broker, joined.dead_letter, timeout_s=10)]
    assert [d.reason for d in dead_letters] == []
    corrections = [s for s in samples if s.flags & FLAG_LATE_CORRECTION]
    assert corrections == [], f"{len(corrections)} of {ROWS} clicks came as negative + correction"
    assert sorted(s.request_id for s in samples) == sorted(f"r{n}" for n in range(ROWS))
    assert all(s.label_types == ["click"] and s.label_delays_ms == [0] for s in samples)
