"""Shared bits of the sync benchmarks: a throwaway local broker and result writing."""

from __future__ import annotations

import contextlib
import json
import platform
import tempfile
import time
import uuid
from pathlib import Path

from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def broker(bootstrap: str | None = None):
    """An existing broker (``bootstrap``) or a fresh local one on free ports, stopped after."""
    if bootstrap:
        yield KafkaConfig(bootstrap=bootstrap)
        return
    port, ctrl = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        k = LocalKafka(LocalKafkaConfig(port=port, controller_port=ctrl, data_dir=Path(tmp), heap="1g"))
        k.start()
        try:
            yield KafkaConfig(bootstrap=k.config.bootstrap)
        finally:
            k.stop()


def fresh_topics(kafka: KafkaConfig, stem: str) -> TopicsConfig:
    s = f"{stem}-{uuid.uuid4().hex[:6]}"
    t = TopicsConfig(impressions=f"impressions.{s}", actions=f"actions.{s}", samples=f"samples.{s}",
                     features=f"features.{s}", model_deltas=f"model-deltas.{s}",
                     model_dense=f"model-dense.{s}", dead_letter=f"dead-letter.{s}")
    create_topics(kafka, t)
    return t


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"bench": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": platform.machine(), "python": platform.python_version(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    return path
