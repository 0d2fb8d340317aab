"""Prometheus metrics of the live traffic source (``live_traffic.metrics_port``), prefix
``streamtrain_traffic_``. Counters and histograms are updated as things happen; the
oracle's progressive metrics are computed by the source every few seconds and read at
scrape time (nothing on the request path waits for a scrape).

    metrics = LiveMetrics()
    metrics.start(port=9500)                  # background HTTP server (0: any free port)
    metrics.shown("served", {"shown": 0.31, "random": 0.2, "oracle": 0.4}, impressions=3, clicks=1)
    metrics.close()

Policy accounting (``traffic.policy``): for requests of each ``policy`` (served | explore |
fallback), ``expected_clicks_total{policy, choice}`` sums the expected clicks of what was
shown (``choice="shown"``) and of the counterfactual random and oracle choices on the same
requests; divide by ``policy_impressions_total{policy}`` for an expected CTR, e.g.
``rate(expected_clicks_total{policy="served",choice="shown"}[1m]) /
rate(policy_impressions_total{policy="served"}[1m])``. ``window_ctr{policy, choice}`` gives
the same over the last ``window`` impressions of each policy, computed by the source.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamtrain.metrics_http import MetricsHttp
from traffic.policy import CHOICES, POLICIES

log = logging.getLogger(__name__)
PREFIX = "streamtrain_traffic"
PROGRESSIVE = ("auc", "logloss", "ne", "calibration", "pos_rate")
LATENCY_BUCKETS = (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1.0, 2.0)


class WindowCtr:
    """Expected CTR per choice and realized CTR over the last ``window`` impressions (by
    request: a request's impressions enter and leave together)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._rows: deque[tuple[int, float, float, float, int]] = deque()
        self._sums = [0, 0.0, 0.0, 0.0, 0]  # impressions, shown, random, oracle, clicks

    def add(self, impressions: int, expected: dict[str, float], clicks: int) -> None:
        row = (impressions, expected["shown"], expected["random"], expected["oracle"], clicks)
        self._rows.append(row)
        self._sums = [a + b for a, b in zip(self._sums, row)]
        while self._rows and self._sums[0] - self._rows[0][0] >= self.window:
            old = self._rows.popleft()
            self._sums = [a - b for a, b in zip(self._sums, old)]

    def ctr(self) -> dict[str, float]:
        n = self._sums[0]
        if n <= 0:
            return {}
        return {"shown": self._sums[1] / n, "random": self._sums[2] / n, "oracle": self._sums[3] / n,
                "realized": self._sums[4] / n}


def _progressive(name: str, doc: str, label: str, report: dict[str, Any]) -> GaugeMetricFamily:
    """A validator's report (``ProgressiveValidator.report``) as gauges {label, window, metric}."""
    family = GaugeMetricFamily(name, doc, labels=[label, "window", "metric"])
    for key, by_window in ((k, v) for k, v in report.items() if isinstance(v, dict)):
        for window in ("window", "cumulative"):
            values = by_window.get(window, {})
            for metric in PROGRESSIVE:
                v = values.get(metric)
                family.add_metric([key, window, metric], float("nan") if v is None else float(v))
    return family


class _Collector(Collector):
    def __init__(self, metrics: LiveMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        yield _progressive(f"{PREFIX}_oracle_progressive",
                           "The oracle (true probabilities) judged on the shown stream with the drawn "
                           "labels, per head; window = last live_traffic.window impressions",
                           "head", self.m.oracle_report)
        yield _progressive(f"{PREFIX}_served_progressive",
                           "Click quality on the impressions a replica ranked: the served model's "
                           "probability (scored at position 0, before the impression) and the oracle's, "
                           "against the drawn clicks; window = last live_traffic.window impressions",
                           "who", self.m.served_report)
        ctr = GaugeMetricFamily(f"{PREFIX}_window_ctr", "CTR over the last live_traffic.window impressions of "
                                "each policy: expected (choice shown|random|oracle) and realized",
                                labels=["policy", "choice"])
        for policy, win in self.m.windows.items():
            for choice, value in win.ctr().items():
                ctr.add_metric([policy, choice], value)
        yield ctr


class LiveMetrics:
    def __init__(self, window: int = 20_000) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(f"{PREFIX}_requests", "User requests, by the policy that chose what was shown",
                                ["policy"], registry=r)
        self.produced = Counter(f"{PREFIX}_produced", "Records sent to Kafka by topic role (impressions | "
                                "actions) and kind (valid | duplicate | malformed)", ["topic", "kind"], registry=r)
        self.actions = Counter(f"{PREFIX}_actions", "Actions sent (first copies), by action type",
                               ["action_type"], registry=r)
        self.fallbacks = Counter(f"{PREFIX}_fallbacks", "Requests shown at random because no replica answered "
                                 "usefully, by reason (no_replica | timeout | connect | http_<code> | bad_answer)",
                                 ["reason"], registry=r)
        self.replica_errors = Counter(f"{PREFIX}_replica_errors", "Failed predict calls, by replica and reason",
                                      ["replica", "reason"], registry=r)
        self.produce_errors = Counter(f"{PREFIX}_produce_errors", "Records Kafka did not accept", registry=r)
        self.expected = Counter(f"{PREFIX}_expected_clicks", "Sum of the true click probabilities of the "
                                "impressions shown (choice=shown) or of the random / oracle choice on the "
                                "same requests, by the policy that served them", ["policy", "choice"], registry=r)
        self.impressions = Counter(f"{PREFIX}_policy_impressions", "Impressions shown, by policy",
                                   ["policy"], registry=r)
        self.clicks = Counter(f"{PREFIX}_realized_clicks", "Clicks drawn for the impressions shown (sent "
                              "later, after their delay), by policy", ["policy"], registry=r)
        self.version = Gauge(f"{PREFIX}_model_version", "Sparse model version of the last replica answer (-1: none)",
                             registry=r)
        self.dense_version = Gauge(f"{PREFIX}_model_dense_version", "Dense version of the last replica answer "
                                   "(-1: none)", registry=r)
        self.latency = Histogram(f"{PREFIX}_scoring_seconds", "Time of a predict call (success or failure)",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.pending = Gauge(f"{PREFIX}_pending_actions", "Actions (and duplicates) waiting for their time",
                             registry=r)
        self.behind = Gauge(f"{PREFIX}_behind_seconds", "How far the source lags its request schedule "
                            "(0: keeping up with impressions_per_s)", registry=r)
        self.in_flight = Gauge(f"{PREFIX}_in_flight_requests", "Requests waiting for a replica", registry=r)
        self.target = Gauge(f"{PREFIX}_target_impressions_per_second", "live_traffic.impressions_per_s",
                            registry=r)
        self.version.set(-1)
        self.dense_version.set(-1)
        for p in POLICIES:  # every series exists from the start (a reader's division never misses one)
            self.requests.labels(p)
            self.impressions.labels(p)
            self.clicks.labels(p)
            for c in CHOICES:
                self.expected.labels(p, c)
        self.windows = {p: WindowCtr(window) for p in POLICIES}
        self.oracle_report: dict[str, Any] = {}
        self.served_report: dict[str, Any] = {}
        r.register(_Collector(self))
        self.http = MetricsHttp(r, "live traffic")

    def shown(self, policy: str, expected: dict[str, float], impressions: int, clicks: int) -> None:
        self.impressions.labels(policy).inc(impressions)
        self.clicks.labels(policy).inc(clicks)
        for choice in CHOICES:
            self.expected.labels(policy, choice).inc(expected[choice])
        self.windows[policy].add(impressions, expected, clicks)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent); for tests and the exit log."""
        return self.registry.get_sample_value(f"{PREFIX}_{name}", labels) or 0.0

    def start(self, port: int, host: str = "0.0.0.0") -> int:
        return self.http.start(port, host)

    def close(self) -> None:
        self.http.close()
