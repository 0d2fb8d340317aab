"""Prometheus metrics of a serving replica (``GET /metrics``; names listed in docs/operations.md).

Model state is read from the replica when Prometheus scrapes (a collector: nothing on the
apply path changes for it); request counts and latencies are recorded by the app as they
happen. Each app has its own registry, so several replicas in one process do not clash.

    registry = replica_registry(replica)      # versions, lag, version age, apply counters
    http = HttpMetrics(registry)              # request latency histogram, requests by code
    registry.register(replica.freshness.histogram)  # freshness per stage (sync.freshness)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "streamtrain_replica"
# (metric suffix, key in ServingReplica.metrics(), help)
GAUGES = (
    ("version", "applied_version", "Sparse model version visible to predictions (-1: none)"),
    ("dense_version", "dense_version", "Dense weights' version predictions use (-1: none)"),
    ("lag_records", "lag_records", "model-deltas records not yet consumed (-1: not measured)"),
    ("version_age_seconds", "version_age_ms", "Now minus the visible version's creation time at the trainer"),
    ("rows_applied_per_second", "rows_applied_per_s", "Rows applied per second (recent average)"),
    ("incomplete_versions", "incomplete_versions", "Versions staged with parts still missing"),
    ("uptime_seconds", "uptime_ms", "Seconds since the replica started"),
    ("features_lag_records", "features_lag_records",
     "Request-time features: feature job outputs not yet taken into the history store (-1: not measured or off)"),
    ("features_newest_event_age_seconds", "features_newest_age_ms",
     "Request-time features: now minus the newest event time taken (-1: none or off)"),
)
COUNTERS = (
    ("rows_applied", "rows_applied", "Rows written into the store"),
    ("rows_bootstrapped", "rows_bootstrapped", "Rows loaded from the dump at bootstrap"),
    ("tombstones_applied", "tombstones_applied", "Evicted ids removed"),
    ("versions_committed", "versions_committed", "Model versions made visible"),
    ("abandoned_versions", "abandoned_versions", "Versions given up on (parts never arrived)"),
    ("gaps", "gaps", "Gaps detected in the version sequence"),
    ("duplicates", "duplicates", "Delta parts received twice (ignored)"),
    ("stale_messages", "stale_messages", "Delta parts older than the applied version (ignored)"),
    ("dead_letters", "dead_letters", "Undecodable or malformed model messages sent to the dead-letter topic"),
    ("apply_errors", "apply_errors", "Failed rounds of the apply loop"),
    ("feature_lookups", "feature_lookups", "Request-time features: entity (user, item) lookups"),
    ("feature_misses", "feature_misses", "Request-time features: lookups of entities never seen (new-entity values)"),
    ("feature_completions", "feature_completions", "Instances completed with request-time features"),
    ("feature_events_applied", "feature_events_applied", "Feature job events taken into the history store"),
    ("feature_errors", "feature_errors", "Failed rounds of the request-time features' tailing loop"),
)
MS_KEYS = {"version_age_ms", "uptime_ms", "features_newest_age_ms"}
LATENCY_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1.0, 2.5)
ROUTES = ("/predict", "/health", "/ready", "/status", "/metrics", "/openapi.json")
# freshness (sync.freshness): 0.1 s .. 2 h
FRESHNESS_BUCKETS = (.1, .25, .5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
                     1800.0, 3600.0, 7200.0)


def _number(value: Any, key: str) -> float:
    if value is None:
        return -1.0
    if isinstance(value, list | dict):  # e.g. incomplete_versions lists them
        return float(len(value))
    return float(value) / 1000 if key in MS_KEYS else float(value)


class ReplicaCollector(Collector):
    """Reads ``status()`` (``ServingReplica.metrics``) and ``ready()`` at each scrape."""

    def __init__(self, model: str, status: Callable[[], dict[str, Any]],
                 ready: Callable[[], dict[str, Any]]) -> None:
        self.model = model
        self.status = status
        self.ready = ready

    def collect(self) -> Iterator[Metric]:
        s = self.status()
        for name, key, doc in GAUGES:
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])
            g.add_metric([self.model], _number(s.get(key), key))
            yield g
        for name, key, doc in COUNTERS:
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])
            c.add_metric([self.model], _number(s.get(key, 0), key))
            yield c
        r = GaugeMetricFamily(f"{PREFIX}_ready", "1 when /ready answers 200", labels=["model"])
        r.add_metric([self.model], 1.0 if self.ready()["ready"] else 0.0)
        yield r


class HttpMetrics:
    """Request latency (by route) and requests (by route and status code)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(f"{PREFIX}_request_duration_seconds",
                                 "Time from request received to response sent", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests answered", ["route", "code"],
                                registry=registry)
        self.instances = Histogram(f"{PREFIX}_predict_instances", "Instances per predict request",
                                   buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
                                   registry=registry)

    def observe(self, path: str, code: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        self.latency.labels(route).observe(seconds)
        self.requests.labels(route, str(code)).inc()


def freshness_histogram(model: str, stages: tuple[str, ...]) -> Histogram:
    """``streamtrain_replica_freshness_seconds{model, stage}``, in no registry: the replica
    observes into it on its apply thread (``sync.freshness.FreshnessTracker``) and each app
    serving that replica registers it. Every stage's series exists from the start (zeros)."""
    h = Histogram(f"{PREFIX}_freshness_seconds",
                  "Action produced -> replica answers with a version trained on it, per stage "
                  "(end_to_end = join_wait + sample_to_trained + trained_to_published + "
                  "published_to_applied), for a uniform sample of the actions",
                  ["model", "stage"], buckets=FRESHNESS_BUCKETS, registry=None)
    for stage in stages:
        h.labels(model, stage)
    return h
