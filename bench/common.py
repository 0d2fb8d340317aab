"""Shared plumbing of the benchmarks: a broker to run against, result files, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port

RESULTS_DIR = Path(__file__).parent / "results"


@contextlib.contextmanager
def kafka_for_bench(bootstrap: str | None):
    """The broker at ``bootstrap``, or a fresh local one for the duration of the benchmark."""
    if bootstrap:
        yield KafkaConfig(bootstrap=bootstrap)
        return
    with tempfile.TemporaryDirectory(prefix="streamtrain-bench-") as tmp:
        broker = LocalKafka(LocalKafkaConfig(port=free_port(), controller_port=free_port(),
                                             data_dir=Path(tmp), heap="1g"))
        broker.start()
        try:
            yield KafkaConfig(bootstrap=broker.config.bootstrap)
        finally:
            broker.stop()


def fresh_topics(kafka: KafkaConfig, stem: str) -> TopicsConfig:
    """Every system topic under names unique to this run, created."""
    topics = TopicsConfig().suffixed(f"{stem}-{uuid.uuid4().hex[:6]}")
    create_topics(kafka, topics)
    return topics


def write_result(name: str, result: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}, **result}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
