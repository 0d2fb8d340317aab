import dataclasses
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from schemas import Action, Impression, codec_for
from traffic.live import ListSink, LiveTraffic, LiveTrafficConfig
from traffic.live_run import load_state, save_state
from traffic.policy import expected_clicks, random_k, top_k
from traffic.scorer import Answer, ReplicaScorer, ScoringError

T0 = 1_700_000_000_000
IMP, ACT = codec_for(Impression), codec_for(Action)


def _cfg(**kw) -> LiveTrafficConfig:
    return LiveTrafficConfig(**({"explore_rate": 0.0, "duplicate_rate": 0.0, "malformed_rate": 0.0} | kw))


class FakeScorer:
    """Scores candidate k as ``scores[k]`` (or raises ``error``); keeps what it was asked."""

    def __init__(self, scores=None, error: ScoringError | None = None, version: int = 7) -> None:
        self.scores, self.error, self.version = scores, error, version
        self.calls: list[list[dict]] = []

    def score(self, instances):
        self.calls.append(instances)
        if self.error is not None:
            raise self.error
        return Answer(list(self.scores[: len(instances)]), self.version, 5, "fake")

    def close(self):
        pass


def _decoded(sink: ListSink, topic: str):
    codec = IMP if topic == "impressions" else ACT
    return [codec.decode(v) for t, k, v, _ in sink.records if t == topic and k != b"malformed"]


def test_policy_top_k_orders_by_score_and_expected_clicks_compare_policies():
    assert top_k(np.array([0.2, 0.9, 0.2, 0.5]), 3).tolist() == [1, 3, 0]
    truth = np.array([[0.10, 0.05], [0.40, 0.30], [0.20, 0.10], [0.30, 0.20]])
    e = expected_clicks(truth, np.array([2, 0]))
    assert e["shown"] == pytest.approx(0.20 + 0.05)
    assert e["random"] == pytest.approx(truth[:, 0].mean() + truth[:, 1].mean())
    assert e["oracle"] == pytest.approx(0.40 + 0.20)  # best two by rank-0 truth, at their ranks
    picked = random_k(np.random.default_rng(0), 20, 3)
    assert len(set(picked.tolist())) == 3 and all(0 <= p < 20 for p in picked)


def test_live_shows_the_replicas_top_scored_candidates_with_the_shown_rank_as_position():
    cfg = _cfg(candidates=10, shown=3)
    scores = [0.1, 0.7, 0.2, 0.9, 0.0, 0.3, 0.8, 0.05, 0.4, 0.6]
    scorer, sink = FakeScorer(scores), ListSink()
    src = LiveTraffic(cfg, sink, scorer)
    req = src.new_request(T0)
    shown = src.show(req, src.score(req), T0)
    assert shown == [3, 6, 1]
    asked = scorer.calls[0]
    assert [inst["item_id"] for inst in asked] == [int(i) + 1 for i in req.items]
    assert {inst["user_id"] for inst in asked} == {req.user + 1}
    assert all(inst["dense"][2] == 0.0 and len(inst["slots"]) == 8 == len(inst["ids"]) for inst in asked)
    imps = _decoded(sink, "impressions")
    assert [imp.item_id for imp in imps] == [int(req.items[c]) + 1 for c in shown]
    assert [imp.dense[2] for imp in imps] == [0.0, 1.0, 2.0]
    assert all(imp.event_time_ms == T0 and imp.ids == asked[c]["ids"] for imp, c in zip(imps, shown))
    assert src.metrics.value("requests_total", policy="served") == 1
    assert src.metrics.value("model_version") == 7
    assert src.metrics.value("policy_impressions_total", policy="served") == 3


def test_live_falls_back_to_random_on_a_replica_error_and_counts_it():
    scorer = FakeScorer(error=ScoringError("http_503", "no dense weights yet", "http://r1"))
    sink = ListSink()
    src = LiveTraffic(_cfg(), sink, scorer)
    for k in range(5):
        src.step(T0 + k)
    m = src.metrics
    assert m.value("fallbacks_total", reason="http_503") == 5
    assert m.value("replica_errors_total", replica="http://r1", reason="http_503") == 5
    assert m.value("requests_total", policy="fallback") == 5 and m.value("requests_total", policy="served") == 0
    assert len(_decoded(sink, "impressions")) == 15  # shown anyway, at random


def test_live_without_replica_and_explore_requests_skip_the_replica():
    src = LiveTraffic(_cfg(explore_rate=0.5), ListSink(), FakeScorer([0.5] * 20))
    for k in range(200):
        src.step(T0 + k)
    explore = src.metrics.value("requests_total", policy="explore")
    assert 50 < explore < 150 and src.metrics.value("requests_total", policy="served") == 200 - explore
    assert len(src.scorer.calls) == 200 - explore
    bare = LiveTraffic(_cfg(), ListSink(), scorer=None)
    bare.step(T0)
    assert bare.metrics.value("fallbacks_total", reason="no_replica") == 1


def test_live_actions_wait_for_their_time_and_follow_their_impression():
    cfg = _cfg(base_ctr=0.3, click_delay_median_s=3.0, like_given_click=0.5, conversion_given_click=0.5)
    sink = ListSink()
    src = LiveTraffic(cfg, sink, scorer=None)
    for _ in range(300):
        src.step(T0)
    assert not _decoded(sink, "actions") and len(src.heap) > 100  # none is due yet
    src.fire_due(T0 + int(cfg.max_delay_s * 1000))
    assert not src.heap
    imps = {imp.request_id: imp for imp in _decoded(sink, "impressions")}
    by_request: dict[str, dict[str, int]] = {}
    for act in _decoded(sink, "actions"):
        imp = imps[act.request_id]
        assert (act.user_id, act.item_id) == (imp.user_id, imp.item_id)
        by_request.setdefault(act.request_id, {})[act.action_type] = act.event_time_ms
    kinds = Counter(k for acts in by_request.values() for k in acts)
    assert kinds["click"] > kinds["like"] > 0 and kinds["conversion"] > 0
    assert all("click" in acts for acts in by_request.values())  # likes and conversions follow clicks
    # event time = the time it was sent: everything fired in one go here
    assert {ts for t, _, _, ts in sink.records if t == "actions"} == {T0 + int(cfg.max_delay_s * 1000)}


def test_live_click_delays_are_seconds_and_conversions_minutes():
    cfg = _cfg(base_ctr=0.5)
    src = LiveTraffic(cfg, ListSink(), scorer=None)
    for _ in range(400):
        src.step(T0)
    delays: dict[str, list[int]] = {}
    for due, _, p in src.heap:
        delays.setdefault(p.action.action_type, []).append(due - T0)
    assert 1_500 < np.median(delays["click"]) < 6_000
    assert np.median(delays["conversion"]) > 120_000
    assert max(max(v) for v in delays.values()) <= cfg.max_delay_s * 1000


def test_live_counts_duplicates_and_malformed_records_as_sent():
    sink = ListSink()
    src = LiveTraffic(_cfg(duplicate_rate=0.3, malformed_rate=0.3, base_ctr=0.3), sink, scorer=None)
    for k in range(100):
        src.step(T0 + k * 10)
    src.fire_due(T0 + 10**8)
    sent = Counter((t, "malformed" if k == b"malformed" else "other") for t, k, _, _ in sink.records)
    m = src.metrics
    assert sent[("impressions", "malformed")] == m.value("produced_total", topic="impressions", kind="malformed") > 0
    values = Counter(v for t, k, v, _ in sink.records if k != b"malformed")
    dups = sum(n - 1 for n in values.values())
    produced_dups = sum(m.value("produced_total", topic=t, kind="duplicate") for t in ("impressions", "actions"))
    assert dups == produced_dups > 0
    assert m.value("produced_total", topic="impressions", kind="valid") == 300


def test_live_state_round_trip_resumes_the_same_world_and_pending_actions(tmp_path):
    cfg = _cfg(base_ctr=0.3, duplicate_rate=0.1, malformed_rate=0.05)
    a_sink = ListSink()
    a = LiveTraffic(cfg, a_sink, scorer=None)
    for k in range(50):
        a.step(T0 + k * 1000)
    save_state(a, tmp_path / "state.pkl")
    b_sink = ListSink()
    b = LiveTraffic(cfg, b_sink, scorer=None)
    assert load_state(b, tmp_path / "state.pkl")
    assert b.run_id == a.run_id and b.heap == a.heap and b.stats == a.stats
    np.testing.assert_array_equal(b.world.user_vec, a.world.user_vec)
    del a_sink.records[:]
    for k in range(50, 120):  # the drift goes on; pending actions fire
        a.step(T0 + k * 1000)
        b.step(T0 + k * 1000)
    assert b_sink.records == a_sink.records and any(t == "actions" for t, *_ in b_sink.records)
    other = LiveTraffic(dataclasses.replace(cfg, seed=cfg.seed + 1), ListSink(), scorer=None)
    assert not load_state(other, tmp_path / "state.pkl")  # another world: starts fresh


def test_live_oracle_progressive_metrics_are_exported_per_head():
    src = LiveTraffic(_cfg(window=1000), ListSink(), scorer=None)
    for k in range(1000):
        src.step(T0 + k)
    report = src.report()
    click = report["click"]["cumulative"]
    assert click["auc"] > 0.6 and 0.8 < click["calibration"] < 1.25 and click["ne"] < 1
    m = src.metrics
    assert m.value("oracle_progressive", head="click", window="window", metric="auc") == pytest.approx(
        report["click"]["window"]["auc"])
    assert m.value("oracle_progressive", head="conversion", window="cumulative", metric="pos_rate") > 0
    shown = m.value("expected_clicks_total", policy="fallback", choice="shown")
    oracle = m.value("expected_clicks_total", policy="fallback", choice="oracle")
    assert oracle > 1.5 * shown > 0  # the oracle's choice is far better than random on this world
    assert m.value("window_ctr", policy="fallback", choice="oracle") > m.value("window_ctr", policy="fallback",
                                                                               choice="random")


class _Replica(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = len(body["instances"])
        doc = {"model": "ctr", "version": 12, "dense_version": 10, "heads": ["click", "like"],
               "predictions": [[k / n, 0.0] for k in range(n)]} if self.status == 200 else {"error": "x"}
        data = json.dumps(doc).encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def replica_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", server
    server.shutdown()
    server.server_close()


def test_replica_scorer_reads_the_click_head_and_reports_http_errors(replica_url):
    url, _ = replica_url
    scorer = ReplicaScorer([url], timeout_s=5.0)
    try:
        answer = scorer.score([{"slots": [0], "ids": [1]}] * 4)
        assert answer.click == [0.0, 0.25, 0.5, 0.75] and answer.version == 12 and answer.dense_version == 10
        _Replica.status = 503
        with pytest.raises(ScoringError) as err:
            scorer.score([{"slots": [0], "ids": [1]}])
        assert err.value.reason == "http_503" and err.value.replica == url
    finally:
        _Replica.status = 200
        scorer.close()
    dead = ReplicaScorer(["http://127.0.0.1:9"], timeout_s=2.0)
    with pytest.raises(ScoringError) as err:
        dead.score([{"slots": [0], "ids": [1]}])
    assert err.value.reason in ("connect", "timeout")
    dead.close()


def test_live_traffic_config_rejects_bad_values():
    from streamtrain.config import ConfigError

    with pytest.raises(ConfigError, match="live_traffic.candidates"):
        LiveTrafficConfig(candidates=2, shown=3)
    with pytest.raises(ConfigError, match="live_traffic.explore_rate"):
        LiveTrafficConfig(explore_rate=1.5)
    assert LiveTrafficConfig(replica_urls="http://a:1, http://b:2").urls() == ["http://a:1", "http://b:2"]


@pytest.mark.integration
def test_live_traffic_command_produces_valid_impressions_and_actions_and_resumes(kafka_broker, topics, tmp_path,
                                                                                 caplog):
    from streamtrain.kafka_io import read_all
    from traffic.live_run import main

    sets = [f"kafka.bootstrap={kafka_broker.bootstrap}", f"topics.impressions={topics.impressions}",
            f"topics.actions={topics.actions}", "live_traffic.duration_s=2", "live_traffic.impressions_per_s=150",
            "live_traffic.click_delay_median_s=0.2", "live_traffic.base_ctr=0.3",
            f"live_traffic.state_dir={tmp_path}", "live_traffic.malformed_rate=0", "live_traffic.duplicate_rate=0"]
    argv = [a for s in sets for a in ("--set", s)]
    caplog.set_level("INFO", logger="traffic.live_run")
    assert main(argv) == 0
    assert (tmp_path / "state.pkl").exists()
    imps = [IMP.decode(r.value) for r in read_all(kafka_broker, topics.impressions, expected=30, timeout_s=30)]
    assert len(imps) >= 30 and all(len(i.slots) == 8 == len(i.ids) and len(i.dense) == 3 for i in imps)
    assert all(r.request_id.encode() for r in imps)
    acts = [ACT.decode(r.value) for r in read_all(kafka_broker, topics.actions, expected=1, timeout_s=30)]
    by_id = {i.request_id: i for i in imps}
    assert acts and all(a.request_id in by_id and a.event_time_ms >= by_id[a.request_id].event_time_ms
                        for a in acts)
    assert main(argv) == 0  # the second start resumes the saved world
    starts = [r.getMessage() for r in caplog.records if "live traffic start" in r.getMessage()]
    assert "resumed=False" in starts[0] and "resumed=True" in starts[1]
    again = read_all(kafka_broker, topics.impressions, expected=len(imps) + 30, timeout_s=30)
    ids = [IMP.decode(r.value).request_id for r in again]
    assert len(ids) == len(set(ids)) > len(imps)  # request ids go on, none reused
