"""Shared fixtures. The real Kafka broker is started once per test session (on free ports,
in a temporary directory) by the first test that asks for it, and stopped at the end."""

from __future__ import annotations

import logging
import re
import uuid

import pytest

from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port
from streamtrain.paths import SHARED_DATA_DIR

logging.getLogger("kafka").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> KafkaConfig:
    """A real single-node KRaft broker for the whole test session."""
    port, controller = free_port(), free_port()
    while controller == port:
        controller = free_port()
    # retention off: topics a job creates itself keep the tests' old event times too
    broker = LocalKafka(LocalKafkaConfig(port=port, controller_port=controller, retention_hours=-1,
                                         data_dir=tmp_path_factory.mktemp("kafka")))
    broker.start()
    try:
        yield KafkaConfig(bootstrap=broker.config.bootstrap)
    finally:
        broker.stop()


@pytest.fixture
def topics(kafka_broker, request) -> TopicsConfig:
    """Every system topic, under names unique to this test (no cross-test interference).

    They keep records of any age: tests replay logs stamped years ago, and the broker's
    retention check (every 5 minutes, at any moment of a long session) would otherwise
    delete such records between the test writing them and reading them back."""
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40]
    suffix = f"{stem}-{uuid.uuid4().hex[:6]}"
    cfg = TopicsConfig(retention_hours=-1, dead_letter_retention_hours=-1).suffixed(suffix)
    create_topics(kafka_broker, cfg)
    return cfg


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data, or a skip that says why."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"real event logs not found at {SHARED_DATA_DIR} (see ../shared/data/README.md)")
    return SHARED_DATA_DIR


@pytest.fixture
def closing():
    """Register anything with ``close()`` (consumers, producers, publishers, replicas, stores):
    ``x = closing(make_consumer(...))``. Everything registered closes at teardown, newest
    first, even when the test failed; a test may still close early (close is idempotent on
    every object it is used with)."""
    opened: list = []

    def register(obj):
        opened.append(obj)
        return obj

    yield register
    errors = []
    for obj in reversed(opened):
        try:
            obj.close()
        except Exception as exc:  # close the rest, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def producer(kafka_broker, closing):
    """A producer to the session broker, closed at teardown."""
    from streamtrain.kafka_io import make_producer

    return closing(make_producer(kafka_broker))
