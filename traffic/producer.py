"""Sending generated or replayed events to Kafka, paced in event time, with progress.

Each event's Kafka timestamp is its event time and its key the request id, so an impression
and its actions land in the same partition and Flink reads event time off the record.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from schemas import DeadLetter
from streamtrain.dead_letters import DeadLetterSink
from streamtrain.kafka_io import KafkaConfig, KafkaIOError, TopicsConfig, make_producer
from traffic.generator import Event

log = logging.getLogger(__name__)


def produce(events: Iterable[Event], kafka: KafkaConfig, topics: TopicsConfig, speedup: float = 0.0,
            progress_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> Counter:
    """Send events in order. ``speedup`` > 0 paces them: event seconds per wall second,
    measured from the first event's arrival time. Returns counts per topic."""
    names = {"impressions": topics.impressions, "actions": topics.actions}
    producer = make_producer(kafka)
    sent: Counter[str] = Counter()
    failures: list[Exception] = []
    start_wall = clock()
    last_log = start_wall
    first_ms = None
    try:
        for ev in events:
            if first_ms is None:
                first_ms = ev.arrival_ms
            if speedup > 0:
                ahead = (ev.arrival_ms - first_ms) / 1000 / speedup - (clock() - start_wall)
                if ahead > 0:
                    sleep(ahead)
            producer.send(names[ev.topic], key=ev.key, value=ev.value,
                          timestamp_ms=ev.timestamp_ms).add_errback(failures.append)
            sent[ev.topic] += 1
            now = clock()
            if now - last_log >= progress_every_s:
                total = sum(sent.values())
                log.info("produced events=%d impressions=%d actions=%d rate=%.0f/s event_time_ms=%d",
                         total, sent["impressions"], sent["actions"], total / (now - start_wall),
                         ev.timestamp_ms)
                last_log = now
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise KafkaIOError(f"{len(failures)} of {sum(sent.values())} records were not accepted by Kafka; "
                           f"first error: {failures[0]!r}")
    elapsed = max(clock() - start_wall, 1e-9)
    log.info("produced events=%d in %.1fs (%.0f/s) impressions=%d actions=%d", sum(sent.values()),
             elapsed, sum(sent.values()) / elapsed, sent["impressions"], sent["actions"])
    return sent


def produce_dead_letters(dead: list[DeadLetter], kafka: KafkaConfig, topics: TopicsConfig) -> None:
    """Send the records the replay/generator could not turn into events to the dead-letter topic."""
    if not dead:
        return
    sink = DeadLetterSink(kafka, topics.dead_letter, stage=dead[0].stage)
    try:
        for d in dead:
            sink.send(d)
    finally:
        sink.close()
    log.warning("dead letters=%d sent to topic=%s (first reason: %s)", len(dead), topics.dead_letter,
                dead[0].reason)
