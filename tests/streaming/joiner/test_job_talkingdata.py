"""The joiner job on the MiniCluster + real broker, fed by the TalkingData replay, with a
10-minute window: conversions later than the window come out as late corrections (decided
by event time; read as a backlog they often meet their impression still waiting, live they
meet it in the KV fallback — that path is covered by test_job_restart). Counts are checked
against a computation over the CSV itself."""

import csv
from datetime import UTC, datetime

import pytest

from schemas import FLAG_LATE_CORRECTION, Sample, codec_for
from streamtrain.kafka_io import read_all
from tests.helpers.joiner_jobs import join_command, keep_forever, run_join
from traffic.producer import produce
from traffic.replay import ReplayPlan

pytestmark = pytest.mark.integration
WINDOW_MS = 600_000


def _ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
               .timestamp() * 1000)


def test_job_joins_talkingdata_with_late_conversions_through_the_kv(kafka_broker, topics,
                                                                    shared_data, tmp_path):
    with open(shared_data / "talkingdata_adtracking_sample.csv") as fh:
        rows = list(csv.DictReader(fh))
    delays = {f"td-{n}": _ms(r["attributed_time"]) - _ms(r["click_time"])
              for n, r in enumerate(rows) if r["is_attributed"] == "1"}
    in_window = {rid for rid, d in delays.items() if d <= WINDOW_MS}
    late = {rid for rid, d in delays.items() if d > WINDOW_MS}
    assert len(rows) == 100_000 and len(in_window) > 50 and len(late) > 50

    events, dead, _ = ReplayPlan.from_file("talkingdata").events(shared_data)
    assert not dead
    keep_forever(kafka_broker, topics)
    produce(events, kafka_broker, topics)
    run_join(join_command(kafka_broker, topics, tmp_path,
                          f"joiner.window_ms={WINDOW_MS}", "joiner.kv_ttl_ms=86400000",
                          "joiner.stall_policy=off",
                          "flink.checkpoint_interval_ms=5000"), timeout_s=420)

    out = read_all(kafka_broker, topics.samples, timeout_s=120)  # the job has finished: read to the end
    samples = [codec_for(Sample).decode(r.value) for r in out]
    finals = [s for s in samples if not s.flags & FLAG_LATE_CORRECTION]
    corrections = [s for s in samples if s.flags & FLAG_LATE_CORRECTION]

    assert len(samples) == len(rows) + len(late)
    assert len(finals) == len({s.request_id for s in finals}) == len(rows)
    positives = {s.request_id for s in finals if s.label_types}
    assert positives == in_window
    for s in finals:
        if s.label_types:
            assert s.label_types == ["conversion"] and s.label_delays_ms == [delays[s.request_id]]
    assert {s.request_id for s in corrections} == late and len(corrections) == len(late)
    for s in corrections:
        assert s.label_types == ["conversion"] and s.label_delays_ms == [delays[s.request_id]]
    # whatever order the two topics were read in, a conversion later than the window is a
    # correction emitted no earlier than the window's end (from the window or from the KV)
    assert all(s.emit_time_ms >= s.event_time_ms + WINDOW_MS for s in corrections)
    assert read_all(kafka_broker, topics.dead_letter, timeout_s=10) == []
