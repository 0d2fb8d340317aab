"""``streamtrain live-traffic``: the live traffic source (``traffic.live``) paced against the
wall clock, producing to Kafka, scoring through serving replicas, resuming where it stopped.

    streamtrain live-traffic --set live_traffic.replica_urls=http://localhost:8600 \\
        --set live_traffic.metrics_port=9500 --set kafka.bootstrap=localhost:9092

Pacing: request ``k`` is due at ``start + k * shown / impressions_per_s`` (a schedule, not a
sleep per request, so it does not drift); replica calls run on ``scoring_threads`` worker
threads (at most twice that many in flight), so replica latency does not throttle the rate.
If it cannot keep up, ``streamtrain_traffic_behind_seconds`` says by how much; nothing is
dropped. SIGTERM / SIGINT stop it cleanly: in-flight requests are shown, the producer is
flushed and the state (drifted world, random state, pending actions, counters) is written
to ``state_dir``; the next start resumes from it (its pending actions still fire, late).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from streamtrain import flags
from streamtrain.clock import WALL, Clock
from streamtrain.kafka_io import KafkaConfig, KafkaIOError, TopicsConfig, create_topics, make_producer
from streamtrain.paths import STATE_DIR
from traffic.live import LiveTraffic, LiveTrafficConfig, Request
from traffic.live_metrics import LiveMetrics
from traffic.scorer import Answer, ReplicaScorer, ScoringError

log = logging.getLogger(__name__)
STATE_FILE = "state.pkl"
MAX_WAIT_S = 0.05


class KafkaSink:
    """Records to the topics their role names; failures counted (and logged once)."""

    def __init__(self, kafka: KafkaConfig, topics: TopicsConfig, metrics: LiveMetrics) -> None:
        self.names = {"impressions": topics.impressions, "actions": topics.actions}
        self.producer = make_producer(kafka)
        self.metrics = metrics
        self.failures = 0

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.metrics.produce_errors.inc()
        if self.failures == 1:
            log.error("Kafka did not accept a record (%r); counting the rest in produce_errors", exc)

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.producer.send(self.names[topic], key=key, value=value, timestamp_ms=timestamp_ms).add_errback(self._failed)

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


def state_path(cfg: LiveTrafficConfig) -> Path:
    return Path(cfg.state_dir or STATE_DIR / "live-traffic") / STATE_FILE


def save_state(src: LiveTraffic, path: Path) -> None:
    """Atomically (write, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(src.snapshot(), f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def load_state(src: LiveTraffic, path: Path) -> bool:
    """Resume from ``path`` if it holds a state of the same world; whether it did."""
    if not path.exists():
        return False
    try:
        with open(path, "rb") as f:
            state: dict[str, Any] = pickle.load(f)
        src.restore(state)
    except Exception as exc:  # another world's or a damaged state: start over, say so
        log.warning("live traffic state at %s not used (%s); starting a fresh world", path, exc)
        return False
    return True


class Pacer:
    """Runs a ``LiveTraffic`` against ``clock`` until ``stop`` is set or ``duration_s`` passed."""

    def __init__(self, src: LiveTraffic, clock: Clock = WALL, save: Any = None) -> None:
        self.src, self.clock, self.save = src, clock, save
        cfg = src.cfg
        self.interval_ms = 1000.0 * cfg.shown / cfg.impressions_per_s
        self.pool = ThreadPoolExecutor(cfg.scoring_threads, thread_name_prefix="live-score")
        self.max_in_flight = 2 * cfg.scoring_threads
        self.in_flight: dict[Future, Request] = {}

    def run(self, stop: threading.Event) -> None:
        src, cfg = self.src, self.src.cfg
        start = self.clock.now_ms()
        end = start + int(cfg.duration_s * 1000) if cfg.duration_s else None
        next_due = float(start)
        last_report = last_save = last_log = start
        try:
            while not stop.is_set():
                now = self.clock.now_ms()
                if end is not None and now >= end:
                    break
                src.fire_due(now)
                self._harvest(done_only=True)
                while next_due <= now and len(self.in_flight) < self.max_in_flight:
                    self._issue(now)
                    next_due += self.interval_ms
                behind_s = max(0.0, now - next_due) / 1000
                src.metrics.behind.set(behind_s)
                src.metrics.in_flight.set(len(self.in_flight))
                if now - last_report >= 2000:
                    src.report()
                    last_report = now
                if now - last_log >= 10_000:
                    self._progress(now - start, behind_s)
                    last_log = now
                if self.save is not None and now - last_save >= cfg.checkpoint_every_s * 1000:
                    self.save(src)
                    last_save = now
                self._wait(next_due, stop)
        finally:
            self._harvest(done_only=False)
            self.pool.shutdown(wait=True)

    def _issue(self, now: int) -> None:
        req = self.src.new_request(now)
        if req.policy == "served":
            self.in_flight[self.pool.submit(self.src.score, req)] = req
        else:
            self.src.show(req, None, now)

    def _harvest(self, done_only: bool) -> None:
        for fut in [f for f in self.in_flight if f.done() or not done_only]:
            req = self.in_flight.pop(fut)
            outcome: Answer | ScoringError = fut.result()
            self.src.show(req, outcome, self.clock.now_ms())

    def _wait(self, next_due: float, stop: threading.Event) -> None:
        now = self.clock.now_ms()
        due = min(next_due, float(self.src.next_due_ms() or next_due))
        wait_s = min(MAX_WAIT_S, max(0.0, (due - now) / 1000))
        blocked = len(self.in_flight) >= self.max_in_flight
        if self.in_flight and (wait_s > 0 or blocked):
            wait(list(self.in_flight), timeout=wait_s if not blocked else MAX_WAIT_S, return_when=FIRST_COMPLETED)
        elif wait_s > 0:
            stop.wait(wait_s)

    def _progress(self, elapsed_ms: int, behind_s: float) -> None:
        s, m = self.src.stats, self.src.metrics
        rate = s["impressions"] / max(elapsed_ms / 1000, 1e-9) if elapsed_ms else 0.0
        log.info("live traffic impressions=%d rate=%.0f/s behind_s=%.1f pending=%d served=%d fallback=%d "
                 "explore=%d model_version=%d", s["impressions"], rate, behind_s, len(self.src.heap),
                 s["requests_served"], s["requests_fallback"], s["requests_explore"], int(m.value("model_version")))


def main(argv: list[str]) -> int:
    p = flags.parser("live-traffic", "the always-on simulated product: requests ranked by serving "
                     "replicas, impressions and delayed actions to Kafka in real time "
                     "(settings: [live_traffic], e.g. --set live_traffic.replica_urls=http://localhost:8600)")
    args = p.parse_args(argv)
    kafka = flags.load(args, KafkaConfig, "kafka")
    topics = flags.load(args, TopicsConfig, "topics")
    cfg = flags.load(args, LiveTrafficConfig, "live_traffic")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    create_topics(kafka, topics)
    metrics = LiveMetrics(cfg.window)
    if cfg.metrics_port:
        metrics.start(cfg.metrics_port, cfg.metrics_host)
    urls = cfg.urls()
    scorer = ReplicaScorer(urls, cfg.request_timeout_s, max_connections=2 * cfg.scoring_threads) if urls else None
    sink = KafkaSink(kafka, topics, metrics)
    src = LiveTraffic(cfg, sink, scorer, metrics)
    path = state_path(cfg)
    resumed = load_state(src, path)
    log.info("live traffic start resumed=%s state=%s run_id=%s requests_so_far=%d pending_actions=%d "
             "replicas=%s rate=%.0f/s", resumed, path, src.run_id, src.n, len(src.heap), urls or "none (random policy)",
             cfg.impressions_per_s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        Pacer(src, save=lambda s: save_state(s, path)).run(stop)
    finally:
        try:
            sink.flush()
        finally:
            save_state(src, path)
            sink.close()
        if scorer is not None:
            scorer.close()
        metrics.close()
    log.info("live traffic stopped state=%s %s", path, " ".join(f"{k}={v}" for k, v in sorted(src.stats.items())))
    if sink.failures:
        raise KafkaIOError(f"{sink.failures} records were not accepted by Kafka")
    return 0
