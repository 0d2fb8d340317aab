"""What the live view, ``streamtrain status``, the run summary and the tests know about a
running stack: every process's Prometheus endpoint (one source of truth, the same an
operator's dashboards read), plus the topics' end offsets and the dead letters by reason
straight from Kafka.

    obs = Observer(stack_urls, kafka, topics)
    row = obs.sample()      # one flat dict of figures (see ``Observer.sample``)

A row's keys are stable names (``imps_per_s``, ``click_auc``, ``served_ctr`` ...), a value is
None when its source is not up (yet) or does not export it.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from schemas import DeadLetter, codec_for
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, make_consumer

log = logging.getLogger(__name__)
Samples = dict[str, list[tuple[dict[str, str], float]]]  # metric sample name -> (labels, value)
RATE_TOPICS = ("impressions", "actions", "impressions_enriched", "actions_deduped", "samples",
               "features", "model_deltas", "dead_letter")


def scrape(url: str, timeout_s: float = 1.0) -> Samples | None:
    """Every sample of a Prometheus text endpoint by name; None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    out: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    except ValueError as exc:
        log.warning("unparsable metrics from %s: %s", url, exc)
        return None
    return out


def value(samples: Samples | None, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` whose labels include ``labels`` (None: none)."""
    if not samples:
        return None
    found = [v for lab, v in samples.get(name, ()) if all(lab.get(k) == w for k, w in labels.items())]
    found = [v for v in found if not math.isnan(v)]
    return sum(found) if found else None


def ending(samples: Samples | None, suffix: str) -> float | None:
    """The sum of every sample whose name ends with ``suffix`` (Flink's reporter prefixes
    metric names with their scope: ``flink_taskmanager_job_task_operator_<group>_<name>``)."""
    if not samples:
        return None
    found = [v for name, rows in samples.items() if name.endswith(suffix) for _, v in rows if not math.isnan(v)]
    return sum(found) if found else None


def histogram_quantile(samples: Samples | None, name: str, q: float, **labels: str) -> float | None:
    """The q-quantile of a Prometheus histogram (linear inside the bucket, as PromQL does)."""
    if not samples:
        return None
    buckets: dict[float, float] = {}
    for lab, v in samples.get(f"{name}_bucket", ()):
        if all(lab.get(k) == w for k, w in labels.items()):
            buckets[float(lab["le"])] = buckets.get(float(lab["le"]), 0.0) + v
    if buckets.get(math.inf, 0.0) <= 0:
        return None
    edges = sorted(buckets)
    rank, prev_edge, prev_count = q * buckets[math.inf], 0.0, 0.0
    for edge in edges:
        if buckets[edge] >= rank:
            if math.isinf(edge):
                return prev_edge
            span = buckets[edge] - prev_count
            return prev_edge + (edge - prev_edge) * ((rank - prev_count) / span if span else 1.0)
        prev_edge, prev_count = edge, buckets[edge]
    return prev_edge


class Observer:
    """Samples the stack: ``urls`` maps a stage name to its metrics URL."""

    def __init__(self, urls: dict[str, str], kafka: KafkaConfig, topics: TopicsConfig) -> None:
        self.urls = urls
        self.kafka = kafka
        self.topics = topics
        self._consumer: Any = None
        self._dead_assigned = False
        self.dead_by_reason: Counter[str] = Counter()
        self._prev: tuple[float, dict[str, int]] | None = None
        self._dead_codec = codec_for(DeadLetter)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- Kafka side --------------------------------------------------------------------------
    def _consumer_ready(self) -> Any:
        if self._consumer is None:
            self._consumer = make_consumer(self.kafka, group_id=None)
        return self._consumer

    def end_offsets(self) -> dict[str, int]:
        """Records ever written per topic role (sum of the partitions' end offsets)."""
        from kafka import TopicPartition

        c = self._consumer_ready()
        out: dict[str, int] = {}
        for role in RATE_TOPICS:
            topic = getattr(self.topics, role)
            parts = c.partitions_for_topic(topic) or set()
            ends = c.end_offsets([TopicPartition(topic, p) for p in parts]) if parts else {}
            out[role] = int(sum(ends.values()))
        return out

    def poll_dead_letters(self, max_records: int = 5000) -> None:
        """Count the dead letters written since the last call, by reason."""
        from kafka import TopicPartition

        c = self._consumer_ready()
        topic = self.topics.dead_letter
        if not self._dead_assigned:
            tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or set()]
            if not tps:
                return
            c.assign(tps)
            c.seek_to_beginning(*tps)
            self._dead_assigned = True
        for records in c.poll(timeout_ms=200, max_records=max_records).values():
            for r in records:
                try:
                    reason = self._dead_codec.decode(r.value).reason
                except Exception:  # noqa: BLE001 - a dead letter we cannot read is still one
                    reason = "undecodable dead letter"
                self.dead_by_reason[_short(reason)] += 1

    # -- one sample --------------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        now = time.time()
        m = {name: scrape(url) for name, url in self.urls.items()}
        row: dict[str, Any] = {"t": now, "up": {name: s is not None for name, s in m.items()}}
        try:
            ends = self.end_offsets()
            self.poll_dead_letters()
        except Exception as exc:  # noqa: BLE001 - the broker may be restarting; the view goes on
            log.debug("kafka side not sampled: %s", exc)
            ends = {}
        if ends and self._prev is not None:
            dt = max(now - self._prev[0], 1e-6)
            for role, n in ends.items():
                row[f"{role}_per_s"] = max(0.0, (n - self._prev[1].get(role, n)) / dt)
        if ends:
            self._prev = (now, ends)
            row.update({f"{role}_total": n for role, n in ends.items()})
        row["dead_letters"] = dict(self.dead_by_reason)
        row.update(_trainer(m.get("train")))
        row.update(_traffic(m.get("traffic")))
        row.update(_joiner(m.get("join"), m.get("features")))
        replicas = {name: s for name, s in m.items() if name.startswith("serve")}
        row["replicas"] = {name: _replica(s) for name, s in replicas.items()}
        row.update(_freshness(replicas))
        return row


def _short(reason: str) -> str:
    """A reason without its per-record details (``orphan action: request r-17`` -> ``orphan action``)."""
    return reason.split(":")[0].strip()[:60] or "?"


def _trainer(s: Samples | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "trained_samples": value(s, "streamtrain_trainer_samples_total"),
        "trainer_samples_per_s": value(s, "streamtrain_trainer_samples_per_second"),
        "trainer_lag": value(s, "streamtrain_trainer_lag_records"),
        "published_version": value(s, "streamtrain_trainer_published_version"),
    }
    for head in ("click", "like", "conversion"):
        for metric in ("auc", "ne", "calibration"):
            out[f"{head}_{metric}"] = value(s, "streamtrain_trainer_progressive", head=head,
                                            window="window", metric=metric)
    return out


def _traffic(s: Samples | None) -> dict[str, Any]:
    """Served / random / oracle CTR on the requests the model served (expected clicks per shown
    impression, from the true probabilities; cumulative and over the source's last window)."""
    out: dict[str, Any] = {}
    n = value(s, "streamtrain_traffic_policy_impressions_total", policy="served")
    out["served_impressions"] = n
    for choice, key in (("shown", "served"), ("random", "random"), ("oracle", "oracle")):
        exp = value(s, "streamtrain_traffic_expected_clicks_total", policy="served", choice=choice)
        out[f"{key}_expected_clicks"] = exp
        out[f"{key}_ctr"] = exp / n if exp is not None and n else None
        out[f"{key}_window_ctr"] = value(s, "streamtrain_traffic_window_ctr", policy="served", choice=choice)
    for policy in ("explore", "fallback"):
        out[f"{policy}_impressions"] = value(s, "streamtrain_traffic_policy_impressions_total", policy=policy)
    out["traffic_behind_s"] = value(s, "streamtrain_traffic_behind_seconds")
    out["traffic_version_seen"] = value(s, "streamtrain_traffic_model_version")
    for head in ("click", "like", "conversion"):
        for metric in ("auc", "ne", "calibration"):
            out[f"oracle_{head}_{metric}"] = value(s, "streamtrain_traffic_oracle_progressive", head=head,
                                                   window="window", metric=metric)
    for who in ("model", "oracle"):  # the served model vs the oracle on the impressions it ranked
        for metric in ("auc", "ne", "calibration"):
            out[f"served_{who}_click_{metric}"] = value(s, "streamtrain_traffic_served_progressive", who=who,
                                                        window="window", metric=metric)
    return out


def _joiner(join: Samples | None, features: Samples | None) -> dict[str, Any]:
    return {
        "window_occupancy": ending(join, "joiner_window_occupancy"),
        "late_corrections": ending(join, "joiner_late_corrections"),
        "orphans": ending(join, "joiner_orphans"),
        "joined_labels": ending(join, "joiner_joined_labels"),
        "features_up": features is not None,
        "join_up": join is not None,
    }


def _replica(s: Samples | None) -> dict[str, Any]:
    return {
        "up": s is not None,
        "version": value(s, "streamtrain_replica_version"),
        "version_age_s": value(s, "streamtrain_replica_version_age_seconds"),
        "lag": value(s, "streamtrain_replica_lag_records"),
        "ready": value(s, "streamtrain_replica_ready"),
    }


def _freshness(replicas: dict[str, Samples | None]) -> dict[str, Any]:
    """End-to-end freshness p50/p99 over every replica's histogram (since they started)."""
    merged: Samples = {}
    for s in replicas.values():
        for name, rows in (s or {}).items():
            if name.startswith("streamtrain_replica_freshness_seconds"):
                merged.setdefault(name, []).extend(rows)
    name = "streamtrain_replica_freshness_seconds"
    return {"freshness_p50_s": histogram_quantile(merged, name, 0.5, stage="end_to_end"),
            "freshness_p99_s": histogram_quantile(merged, name, 0.99, stage="end_to_end"),
            "freshness_count": value(merged, f"{name}_count", stage="end_to_end")}
