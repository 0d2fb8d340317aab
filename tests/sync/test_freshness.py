"""Freshness traces, sync side (sync.freshness): the header codec, the stage arithmetic,
the replica's tracker (start-up rule, /status summary, log, histogram) and the applier's
visible time. The path through the broker: tests/sync/test_freshness_kafka.py."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from streamtrain.clock import FixedClock
from sync.app import make_app
from sync.applier import DeltaApplier
from sync.delta_builder import build_deltas
from sync.freshness import (
    STAGES,
    TRACE_HEADER,
    FreshnessTracker,
    TraceHeaderError,
    VersionTraces,
    decode_traces,
    encode_traces,
    find_header,
    read_log,
    stage_ms,
)
from sync.store import MemoryRowStore
from tests.helpers.serving_fakes import OfflineReplica
from tests.helpers.sync_updates import update

PARTS = ("join_wait", "sample_to_trained", "trained_to_published", "published_to_applied")


def _vt(rows, version=5, published_ms=100_000, actions=None):
    rows = np.asarray(rows, np.int64).reshape(-1, 3)
    return VersionTraces("ctr", version, published_ms, len(rows) if actions is None else actions, rows)


def test_trace_header_round_trips_and_is_found_among_headers():
    vt = _vt([[1, 2, 3], [4, 5, 6]], actions=900)
    raw = encode_traces(vt)
    back = decode_traces(find_header([("other", b"x"), (TRACE_HEADER, raw)]))
    assert (back.model, back.version, back.published_ms, back.actions) == ("ctr", 5, 100_000, 900)
    assert back.traces.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert json.loads(raw)["format"] == 1
    assert find_header(None) is None and find_header([("other", b"x")]) is None


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "unreadable"),
    (b'{"format": 2}', "format 2"),
    (b'{"format": 1, "model": "ctr", "version": 1, "published_ms": 1, "actions": 1, '
     b'"traces": [[1, 2]]}', "unreadable"),
    (b'{"format": 1, "model": "ctr"}', "unreadable"),
])
def test_trace_header_that_cannot_be_read_says_why(raw, reason):
    with pytest.raises(TraceHeaderError, match=reason):
        decode_traces(raw)


@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(-10**6, 10**7),
                          st.integers(0, 10**7)), min_size=1, max_size=20),
       st.integers(0, 10**7), st.integers(0, 10**7))
def test_stages_sum_to_end_to_end(rows, published, applied):
    stages = stage_ms(_vt(rows, published_ms=published), applied)
    np.testing.assert_array_equal(sum(stages[s] for s in PARTS), stages["end_to_end"])
    assert (stages["join_wait"] >= 0).all()


def test_stages_of_one_trace():
    s = stage_ms(_vt([[10_000, 12_500, 20_000]], published_ms=21_000), applied_ms=21_300)
    assert {k: int(v[0]) for k, v in s.items()} == {
        "end_to_end": 11_300, "join_wait": 2_500, "sample_to_trained": 7_500,
        "trained_to_published": 1_000, "published_to_applied": 300}
    # the joiner's emit stamp is its watermark: one before the action reads as the action's time
    s = stage_ms(_vt([[10_000, 9_000, 20_000]], published_ms=21_000), applied_ms=21_300)
    assert int(s["join_wait"][0]) == 0 and int(s["sample_to_trained"][0]) == 10_000


def test_tracker_ignores_versions_published_before_the_replica_started(tmp_path):
    tracker = FreshnessTracker("ctr", since_ms=50_000, log_path=str(tmp_path / "f.jsonl"))
    assert tracker.observe(_vt([[1_000, 2_000, 3_000]], version=3, published_ms=49_999), 60_000) is None
    assert tracker.summary() == {"versions": 0, "traces": 0, "startup_versions": 1,
                                  "last_version": None, "window": 0,
                                  "p50_s": None, "p99_s": None}
    assert not (tmp_path / "f.jsonl").read_text()


def test_tracker_observes_histogram_summary_and_log(tmp_path):
    log = tmp_path / "runs" / "freshness.jsonl"
    tracker = FreshnessTracker("ctr", since_ms=0, keep=100, log_path=str(log),
                               clock=FixedClock(205_000))
    # end to end 1..200 s: action at 205 s - k s, all published at 204 s
    actions = 205_000 - 1000 * np.arange(1, 201)
    rows = np.stack([actions, actions, np.full(200, 203_000)], 1)
    for part, version in ((rows[:100], 7), (rows[100:], 8)):
        tracker.observe(_vt(part, version=version, published_ms=204_000))  # applied: clock, 205 s
    summary = tracker.summary()
    assert summary["versions"] == 2 and summary["traces"] == 200 and summary["last_version"] == 8
    assert summary["window"] == 100  # the last `keep`: 101..200 s
    assert summary["p50_s"] == pytest.approx(150.5) and summary["p99_s"] == pytest.approx(199.01)

    registry = CollectorRegistry()
    registry.register(tracker.histogram)
    count = registry.get_sample_value("streamtrain_replica_freshness_seconds_count",
                                      {"model": "ctr", "stage": "end_to_end"})
    total = registry.get_sample_value("streamtrain_replica_freshness_seconds_sum",
                                      {"model": "ctr", "stage": "end_to_end"})
    applied = registry.get_sample_value("streamtrain_replica_freshness_seconds_sum",
                                        {"model": "ctr", "stage": "published_to_applied"})
    assert count == 200 and total == pytest.approx(sum(range(1, 201)))
    assert applied == pytest.approx(200 * 1.0)

    tracker.close()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 200 and {x["version"] for x in lines} == {7, 8}
    assert lines[0]["applied_ms"] == 205_000 and lines[0]["end_to_end_s"] == 1.0
    back = read_log(str(log))
    assert set(back) == set(STAGES)
    np.testing.assert_allclose(sum(back[s] for s in PARTS), back["end_to_end"])


def test_app_serves_the_freshness_histogram_with_every_stage():
    replica = OfflineReplica()
    replica.freshness = FreshnessTracker("ctr", since_ms=0)
    replica.freshness.observe(_vt([[1_000, 2_000, 3_000]], published_ms=4_000), 5_000)
    with TestClient(make_app(replica)) as client:
        text = client.get("/metrics").text
    for stage in STAGES:
        assert f'streamtrain_replica_freshness_seconds_count{{model="ctr",stage="{stage}"}} 1.0' in text


def test_applier_stamps_when_a_version_became_visible():
    applier = DeltaApplier(MemoryRowStore(), "ctr")
    applier.clock = FixedClock(77_000)
    msgs = build_deltas("ctr", 1, [update("emb", range(10))], 2, "fp32", 900_000, 1)
    results = [applier.apply(d) for _, d in msgs]
    assert [r.visible_ms for r in results if r.committed] == [77_000]
    assert all(r.visible_ms is None for r in results if not r.committed)
