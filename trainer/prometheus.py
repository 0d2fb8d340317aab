"""Prometheus metrics of the trainer (``trainer.metrics_port``; names in docs/operations.md).

Everything is read from the trainer, its sample source and its publisher when Prometheus
scrapes (a collector), except publish durations, which ``on_batch``/``on_idle`` time as
they happen. Nothing on the training path waits for a scrape.

    exporter = TrainerExporter(trainer, source, publisher)    # publisher may be None
    port = exporter.start(port=9400)                          # background HTTP server
    trainer.run(source, on_batch=exporter.on_batch(publisher.on_batch),
                on_idle=exporter.on_idle(on_idle))
    exporter.close()

The publisher is seen only through ``Publisher`` (version, last_push, last_dump): the
trainer does not import ``sync``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from streamtrain.kafka_io import make_consumer
from streamtrain.metrics_http import MetricsHttp

log = logging.getLogger(__name__)
PREFIX = "streamtrain_trainer"
PROGRESSIVE = ("auc", "logloss", "ne", "calibration", "pos_rate")
F = TypeVar("F", bound=Callable[..., None])


class Publisher(Protocol):
    version: int
    last_push: Any  # sync.publisher.PushStats | None
    last_dump: Any  # sync.dump.Dump | None


class _TrainerCollector(Collector):
    def __init__(self, exporter: TrainerExporter) -> None:
        self.x = exporter

    def collect(self) -> Iterator[Metric]:
        t, model = self.x.trainer, self.x.trainer.cfg.model_name
        yield _counter("samples", "Samples trained on", model, t.samples)
        yield _counter("steps", "Training steps (batches)", model, t.step)
        yield _counter("skipped_samples", "Samples of batches not trained on: non-finite loss or scores",
                       model, t.skipped_samples)
        yield _gauge("live_ids", "Live ids (rows) in the embedding table", model, t.table.num_live)
        yield _gauge("watermark_seconds", "Event time of the newest sample trained on (unix seconds; "
                     "0 before the first)", model, max(float(t.watermark_ms), 0.0) / 1000)
        report = t.validator.history[-1] if t.validator.history else {}
        yield _gauge("samples_per_second", "Samples per second (at the last report)", model,
                     float(report.get("samples_per_s") or 0.0))
        prog = GaugeMetricFamily(f"{PREFIX}_progressive", "Progressive validation (scored before "
                                 "trained on), per head; window = last trainer.window samples",
                                 labels=["model", "head", "window", "metric"])
        for head in t.model_cfg.heads:
            for window in ("window", "cumulative"):
                values = report.get(head, {}).get(window, {})
                for metric in PROGRESSIVE:
                    v = values.get(metric)
                    prog.add_metric([model, head, window, metric], float("nan") if v is None else float(v))
        yield prog
        ck = SummaryMetricFamily(f"{PREFIX}_checkpoint_duration_seconds", "Time to write a checkpoint",
                                 labels=["model"])
        ck.add_metric([model], t.checkpoints_saved, t.checkpoint_seconds)
        yield ck
        yield from self._lag(model)
        yield from self._publisher(model)

    def _lag(self, model: str) -> Iterator[Metric]:
        lag = GaugeMetricFamily(f"{PREFIX}_lag_records", "Records of the samples topic not yet "
                                "trained on, per partition (end offset minus the trainer's position; "
                                "a transaction's commit marker counts as one)", labels=["model", "partition"])
        pos = GaugeMetricFamily(f"{PREFIX}_position", "Next offset to train on, per partition",
                                labels=["model", "partition"])
        positions = dict(self.x.trainer.positions)
        ends = self.x.end_offsets()
        for p in sorted(set(positions) | set(ends)):
            pos.add_metric([model, str(p)], float(positions.get(p, 0)))
            if p in ends:
                lag.add_metric([model, str(p)], float(max(0, ends[p] - positions.get(p, 0))))
        yield lag
        yield pos
        dead = getattr(self.x.source, "dead_letters", None)
        if dead is not None:
            yield _counter("dead_letters", "Sample records sent to the dead-letter topic", model, dead)

    def _publisher(self, model: str) -> Iterator[Metric]:
        pub = self.x.publisher
        version = -1 if pub is None else pub.version
        yield _gauge("published_version", "Model version last pushed to serving (-1: none)", model, version)
        dump = None if pub is None else pub.last_dump
        yield _gauge("dense_version", "Version of the last dense push + dump (-1: none)", model,
                     -1 if dump is None else getattr(dump, "version", -1))
        push = None if pub is None else pub.last_push
        yield _gauge("last_push_rows", "Rows in the last sparse push", model, 0 if push is None else push.rows)
        yield _gauge("last_push_bytes", "Bytes in the last sparse push", model, 0 if push is None else push.bytes)


def _gauge(name: str, doc: str, model: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])
    g.add_metric([model], float(value))
    return g


def _counter(name: str, doc: str, model: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["model"])
    c.add_metric([model], float(value))
    return c


class TrainerExporter:
    def __init__(self, trainer: Any, source: Any = None, publisher: Publisher | None = None) -> None:
        self.trainer, self.source, self.publisher = trainer, source, publisher
        self.registry = CollectorRegistry()
        self.registry.register(_TrainerCollector(self))
        self.publish = Histogram(f"{PREFIX}_publish_duration_seconds",
                                 "Time of a push to serving (sparse: delta; dense: + weights + dump)",
                                 ["model", "kind"], registry=self.registry,
                                 buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self._ends: dict[int, int] = {}
        self._ends_at = -1e9
        self._consumer: Any = None  # for end offsets, used by the scrape thread only
        self.http = MetricsHttp(self.registry, "trainer")

    def end_offsets(self) -> dict[int, int]:
        """Partition -> end offset of the samples topic, asked by a consumer of the exporter's
        own (the source's belongs to its prefetch worker), at most every 2 s; the last good
        values when the broker does not answer."""
        kafka, topic = getattr(self.source, "kafka", None), getattr(self.source, "topic", None)
        if kafka is None or topic is None or time.monotonic() - self._ends_at < 2.0:
            return self._ends
        self._ends_at = time.monotonic()
        try:
            from kafka import TopicPartition

            if self._consumer is None:
                self._consumer = make_consumer(kafka, group_id=None,
                                               isolation_level=self.trainer.cfg.isolation_level)
            parts = self._consumer.partitions_for_topic(topic) or set()
            ends = self._consumer.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])
            self._ends = {tp.partition: int(off) for tp, off in ends.items()}
        except Exception:  # the broker is away: keep the last values (the scrape still answers)
            log.debug("end offsets of %s unavailable", topic, exc_info=True)
        return self._ends

    def _timed(self, fn: F) -> F:
        def call(*args: Any) -> None:
            pub = self.publisher
            before = (pub.last_push, pub.last_dump) if pub is not None else None
            started = time.perf_counter()
            fn(*args)
            if pub is not None and before is not None and pub.last_push is not before[0]:
                kind = "dense" if pub.last_dump is not before[1] else "sparse"
                self.publish.labels(self.trainer.cfg.model_name, kind).observe(time.perf_counter() - started)
        return call  # type: ignore[return-value]

    def on_batch(self, fn: F) -> F:
        """``fn`` (the publisher's on_batch), timing the pushes it makes."""
        return self._timed(fn)

    def on_idle(self, fn: F) -> F:
        return self._timed(fn)

    def start(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve /metrics on ``port`` (0: any free one) in a background thread; the port."""
        return self.http.start(port, host)

    def close(self) -> None:
        self.http.close()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
