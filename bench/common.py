"""Shared plumbing of the benchmarks: a broker to run against, result files, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port

RESULTS_DIR = Path(__file__).parent / "results"


@contextlib.contextmanager
def exit_on_sigterm():
    """While inside: SIGTERM ends the process as an exception would (``SystemExit(143)``),
    so the ``finally`` blocks run and what the benchmark started (its broker, the jobs
    ``subprocess.run`` waits on) stops with it. Only in the main thread (where signals are
    handled); elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def kafka_for_bench(bootstrap: str | None):
    """The broker at ``bootstrap``, or a fresh local one for the duration of the benchmark
    (stopped on SIGTERM too: ``exit_on_sigterm``)."""
    if bootstrap:
        yield KafkaConfig(bootstrap=bootstrap)
        return
    with exit_on_sigterm(), tempfile.TemporaryDirectory(prefix="streamtrain-bench-") as tmp:
        broker = LocalKafka(LocalKafkaConfig(port=free_port(), controller_port=free_port(),
                                             data_dir=Path(tmp), heap="1g"))
        broker.start()
        try:
            yield KafkaConfig(bootstrap=broker.config.bootstrap)
        finally:
            broker.stop()


def fresh_topics(kafka: KafkaConfig, stem: str) -> TopicsConfig:
    """Every system topic under names unique to this run, created; they keep records of any
    age (the replays are stamped in 2017, which the default retention would delete mid-run)."""
    topics = TopicsConfig(retention_hours=-1, dead_letter_retention_hours=-1).suffixed(f"{stem}-{uuid.uuid4().hex[:6]}")
    create_topics(kafka, topics)
    return topics


def python_gc_env(stats: Path, mode: str = "tuned") -> dict[str, str]:
    """The environment of a job run whose Python functions append their garbage collector's
    figures to ``stats`` (``streaming/python_gc.py``); ``mode`` off: CPython's defaults."""
    from streaming.python_gc import ENV_MODE, ENV_STATS

    stats.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, ENV_STATS: str(stats)}
    if mode == "off":
        env[ENV_MODE] = "off"
    return env


def read_python_gc(stats: Path) -> list[dict]:
    """The lines ``python_gc.report`` wrote (none when the run's functions never closed)."""
    if not stats.exists():
        return []
    return [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]


def write_result(name: str, result: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}, **result}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def topic_settings(kafka: KafkaConfig, names: list[str], append_time: bool) -> None:
    """Keep every record of ``names`` (``retention.ms=-1``: a backlog of months of event
    time would otherwise fall to time-based retention before a job reads it); with
    ``append_time`` stamp records with the broker's append time (output topics: the time a
    job wrote each record). Input topics keep CreateTime = event time, which the jobs read
    as event time."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from streamtrain.kafka_io import admin_client

    configs = {"retention.ms": "-1"} | ({"message.timestamp.type": "LogAppendTime"}
                                        if append_time else {})
    admin = admin_client(kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, n, configs=configs)
                             for n in names])
    finally:
        admin.close()


def log_append_time(kafka: KafkaConfig, names: list[str]) -> None:
    """Output topics: kept, stamped with the broker's append time."""
    topic_settings(kafka, names, append_time=True)


START_MARKER = b"streamtrain-bench: start marker (undecodable on purpose)"


def mark_start(kafka: KafkaConfig, topics: list[str], timestamp_ms: int) -> int:
    """Put one undecodable record at the head of every partition of ``topics`` (before the
    backlog): the job reads one of them first and dead-letters it at once, so the first
    dead letter's append time is when the job read its first input (to within one Python
    bundle). Returns the number of markers."""
    from streamtrain.kafka_io import make_producer, topic_partitions

    producer = make_producer(kafka)
    n = 0
    try:
        for topic in topics:
            for p in topic_partitions(kafka, topic):
                producer.send(topic, value=START_MARKER, partition=p, timestamp_ms=timestamp_ms)
                n += 1
        producer.flush()
    finally:
        producer.close()
    return n


def input_to_output_s(kafka: KafkaConfig, outputs: list[str],
                      timeout_s: float = 120) -> tuple[float, dict[str, int]]:
    """Seconds from the job's first input record to its last output record, and the
    records per output topic. ``outputs`` are every topic the job writes (dead letters
    included), all LogAppendTime. The first input is one of ``mark_start``'s markers,
    which a job writes out at once (dead-lettered, or forwarded by a bare job), so the
    earliest append time over ``outputs`` is when the job read it."""
    from streamtrain.kafka_io import read_all

    first, last, counts = None, None, {}
    for topic in outputs:
        recs = read_all(kafka, topic, timeout_s=timeout_s)
        counts[topic] = len(recs)
        if recs:
            ts = [r.timestamp for r in recs]
            first = min(ts) if first is None else min(first, min(ts))
            last = max(ts) if last is None else max(last, max(ts))
    if first is None or last is None:
        raise RuntimeError(f"the job wrote nothing to {outputs}")
    return max(last - first, 1) / 1000, counts
