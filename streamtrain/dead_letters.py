"""The one way a process sends dead letters: a counter, a log line and the dead-letter topic.

Every stage that decodes input (the trainer's sample stream, the serving consumer, the
traffic tools) hands its ``DeadLetter`` records to a :class:`DeadLetterSink`; nothing is
dropped silently. Flink jobs use their side output instead (``streaming/flink_env.py``).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from schemas import DeadLetter, codec_for
from streamtrain.kafka_io import KafkaConfig, KafkaIOError, make_producer

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger(__name__)


class DeadLetterSink:
    """Counts, logs and produces dead letters to ``topic``; the producer opens on first use.

    ``send`` is asynchronous; ``flush`` waits and raises ``KafkaIOError`` if the broker
    refused any, ``close`` flushes and closes.
    """

    def __init__(self, kafka: KafkaConfig, topic: str, stage: str = "") -> None:
        self.kafka, self.topic, self.stage = kafka, topic, stage
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self._codec = codec_for(DeadLetter)
        self._producer: KafkaProducer | None = None
        self._failures: list[Exception] = []

    def send(self, dl: DeadLetter) -> None:
        self.count += 1
        self.reasons[dl.reason.split(":")[0]] += 1
        log.warning("dead letter stage=%s topic=%s partition=%d offset=%d reason=%s", dl.stage,
                    dl.source_topic, dl.partition, dl.offset, dl.reason)
        if self._producer is None:
            self._producer = make_producer(self.kafka)
        self._producer.send(self.topic, value=self._codec.encode(dl)).add_errback(self._failures.append)

    def flush(self, timeout_s: float = 30.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout_s)
        if self._failures:
            first, n = self._failures[0], len(self._failures)
            self._failures.clear()
            raise KafkaIOError(f"{n} dead letters were not accepted by Kafka topic {self.topic}: {first!r}")

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            self.flush(timeout_s)
        finally:
            if self._producer is not None:
                self._producer.close(timeout=timeout_s)
                self._producer = None
