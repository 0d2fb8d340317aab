"""Kafka client setup shared by every stage: connection config, the system's topics,
producers and consumers with the settings this system relies on.

    kafka = KafkaConfig(bootstrap="localhost:9092")
    create_topics(kafka, TopicsConfig())          # idempotent
    producer = make_producer(kafka)

Every client of the system is built here (or, for Flink, from ``kafka_security.java_properties``)
so that the TLS/SASL settings of ``[kafka]`` reach all of them (docs/deploy.md, "Secured Kafka").
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from streamtrain import kafka_security
from streamtrain.config import check

log = logging.getLogger(__name__)


class KafkaIOError(RuntimeError):
    """Kafka cannot be reached or a topic operation failed."""


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are and how to authenticate to them. The SASL password is never a
    field: it is read when a client is built, from ``sasl_password_file`` or the environment
    variable named by ``sasl_password_env`` (``streamtrain.kafka_security``)."""

    bootstrap: str = "localhost:9092"
    client_id: str = "streamtrain"
    request_timeout_ms: int = 30000
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = "SCRAM-SHA-512"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL_* only)
    sasl_username: str = ""
    sasl_password_file: str = ""  # a file holding the password (one trailing newline ignored)
    sasl_password_env: str = ""  # or an environment variable holding it: STREAMTRAIN_KAFKA_PASSWORD
    ssl_cafile: str = ""  # PEM CA bundle the brokers' certificates chain to ("" = system CAs)
    ssl_certfile: str = ""  # client certificate (PEM), for brokers that require mutual TLS
    ssl_keyfile: str = ""  # its private key (PEM, unencrypted PKCS#8)
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        check(bool(self.bootstrap.strip()), "kafka.bootstrap", self.bootstrap, "host:port[,host:port]")
        check(self.request_timeout_ms > 0, "kafka.request_timeout_ms", self.request_timeout_ms, "> 0")
        kafka_security.validate(self)

    def client_settings(self) -> dict[str, Any]:
        """kafka-python keyword arguments every client gets: bootstrap, client id, timeout and
        the security settings (the password included: never log them)."""
        return dict(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                    request_timeout_ms=self.request_timeout_ms,
                    **kafka_security.python_settings(self))


@dataclass(frozen=True)
class TopicsConfig:
    """Names, partition counts and retention of every topic of the system."""

    impressions: str = "impressions"
    actions: str = "actions"
    samples: str = "samples"
    features: str = "features"
    model_deltas: str = "model-deltas"
    model_dense: str = "model-dense"
    dead_letter: str = "dead-letter"
    # between the feature/dedup job and the joiner: impressions with point-in-time realtime
    # features attached, and actions with duplicates removed
    impressions_enriched: str = "impressions-enriched"
    actions_deduped: str = "actions-deduped"
    partitions: int = 2
    model_deltas_partitions: int = 4
    retention_hours: int = 168
    dead_letter_retention_hours: int = 720

    def __post_init__(self) -> None:
        check(self.partitions >= 1, "topics.partitions", self.partitions, ">= 1")
        check(self.model_deltas_partitions >= 1, "topics.model_deltas_partitions",
              self.model_deltas_partitions, ">= 1 (one per serving shard)")
        check(self.retention_hours >= 1 or self.retention_hours == -1, "topics.retention_hours",
              self.retention_hours, ">= 1, or -1 to keep forever (replays of old logs: Kafka "
              "expires records by their event-time timestamp)")

    NAME_FIELDS = ("impressions", "actions", "samples", "features", "model_deltas", "model_dense",
                   "dead_letter", "impressions_enriched", "actions_deduped")

    def suffixed(self, suffix: str) -> TopicsConfig:
        """The same settings with every topic name suffixed (tests and benchmarks keep apart)."""
        renamed: dict[str, Any] = {f: f"{getattr(self, f)}.{suffix}" for f in self.NAME_FIELDS}
        return dataclasses.replace(self, **renamed)

    def names(self) -> list[str]:
        return [getattr(self, f) for f in self.NAME_FIELDS]

    def specs(self) -> list[tuple[str, int, dict[str, str]]]:
        """(name, partitions, topic configs) for every topic."""
        hours = lambda h: {"retention.ms": str(h * 3600 * 1000 if h > 0 else -1)}  # noqa: E731
        out = []
        for name in dict.fromkeys(self.names()):  # a job may point two roles at one topic
            parts = self.model_deltas_partitions if name == self.model_deltas else self.partitions
            if name == self.model_dense:
                parts = 1  # chunks of one snapshot must stay in order
            retention = self.dead_letter_retention_hours if name == self.dead_letter else self.retention_hours
            configs = hours(retention)
            if name in (self.model_dense,):
                configs["max.message.bytes"] = str(8 * 1024 * 1024)
            out.append((name, parts, configs))
        return out


def _connect(kafka: KafkaConfig, factory, *args, unreachable: bool = True, **settings):
    """``factory(*args, **settings)``. A failed authentication becomes a ``KafkaIOError``
    that names the bootstrap, the mechanism and the user; other Kafka errors become one
    saying the broker is unreachable (``unreachable``), or pass through as they are."""
    from kafka.errors import KafkaError

    failed_auth = kafka_security.preflight(kafka)
    if failed_auth:
        raise KafkaIOError(failed_auth)
    try:
        return factory(*args, **settings)
    except KafkaError as exc:
        failed_auth = kafka_security.auth_failure(kafka, exc)
        if failed_auth:
            raise KafkaIOError(failed_auth) from None  # the chain would repeat the handshake
        if not unreachable:
            raise
        raise KafkaIOError(
            f"cannot reach Kafka at {kafka.bootstrap} (security_protocol={kafka.security_protocol}: "
            f"{exc}); is the broker running? (`streamtrain kafka start` for a local one)"
        ) from exc


def admin_client(kafka: KafkaConfig):
    from kafka import KafkaAdminClient

    return _connect(kafka, KafkaAdminClient, **kafka.client_settings())


def create_topics(kafka: KafkaConfig, topics: TopicsConfig, extra: Sequence[str] = ()) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = admin_client(kafka)
    try:
        existing = set(admin.list_topics())
        wanted = topics.specs() + [(name, topics.partitions, {}) for name in extra]
        new = [NewTopic(name, parts, 1, topic_configs=cfg)
               for name, parts, cfg in wanted if name not in existing]
        if new:
            try:
                admin.create_topics(new, timeout_ms=kafka.request_timeout_ms)
            except TopicAlreadyExistsError:
                pass
            _wait_for_topics(admin, [t.name for t in new])
        for t in new:
            log.info("created topic=%s partitions=%d", t.name, t.num_partitions)
        return [t.name for t in new]
    finally:
        admin.close()


def _wait_for_topics(admin, names: list[str], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if set(names) <= set(admin.list_topics()):
            return
        time.sleep(0.1)
    raise KafkaIOError(f"topics {names} did not appear within {timeout_s:.0f}s")


def make_producer(kafka: KafkaConfig, **overrides):
    from kafka import KafkaProducer

    settings = dict(kafka.client_settings(), acks="all", linger_ms=5, batch_size=256 * 1024,
                    compression_type=None)
    settings.update(overrides)
    return _connect(kafka, KafkaProducer, unreachable=False, **settings)


ISOLATION_LEVELS = ("read_committed", "read_uncommitted")


def make_consumer(kafka: KafkaConfig, *topics: str, isolation_level: str = "read_uncommitted",
                  **overrides):
    """A consumer with the system's settings. ``isolation_level="read_committed"`` returns
    only records of committed transactions (and non-transactional ones), and reads no
    further than the last stable offset: what a reader of an ``exactly_once`` writer needs."""
    from kafka import KafkaConsumer

    check(isolation_level in ISOLATION_LEVELS, "isolation_level", isolation_level,
          " | ".join(ISOLATION_LEVELS))
    settings = dict(kafka.client_settings(), auto_offset_reset="earliest", enable_auto_commit=False,
                    max_poll_records=2000, fetch_max_bytes=64 * 1024 * 1024,
                    isolation_level=isolation_level)
    settings.update(overrides)
    return _connect(kafka, KafkaConsumer, *topics, unreachable=False, **settings)


def topic_partitions(kafka: KafkaConfig, topic: str) -> list[int]:
    """Partition numbers of a topic, asked of the broker (not a client's cached metadata)."""
    admin = admin_client(kafka)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    if not described or described[0].get("error_code", 0) != 0 or not described[0]["partitions"]:
        raise KafkaIOError(f"topic {topic} does not exist on {kafka.bootstrap}")
    return sorted(p["partition_index"] for p in described[0]["partitions"])


def assign(consumer, kafka: KafkaConfig, topic: str, start: dict[int, int] | None = None,
           partitions: list[int] | None = None) -> list:
    """Assign ``consumer`` every partition of ``topic`` (or ``partitions``) and seek each to
    ``start[partition]``, or to the beginning where ``start`` has none. Returns the
    ``TopicPartition`` list."""
    from kafka import TopicPartition

    parts = topic_partitions(kafka, topic) if partitions is None else partitions
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    for tp in tps:
        if start and tp.partition in start:
            consumer.seek(tp, start[tp.partition])
        else:
            consumer.seek_to_beginning(tp)
    return tps


def drain(consumer, tps: list, timeout_s: float | None = 30.0, expected: int | None = None,
          until_end: bool = True) -> Iterator[list]:
    """Poll the assigned partitions ``tps`` and yield each non-empty poll's records (one list
    per poll). Stops once every partition reached the end offset it had when draining began
    (``until_end``), or once ``expected`` records came, or at ``timeout_s``; with
    ``until_end=False`` and no ``expected`` it polls until the timeout (``None``: forever)."""
    end = consumer.end_offsets(tps)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen = 0
    while deadline is None or time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=200)
        records = [r for recs in polled.values() for r in recs]
        if records:
            seen += len(records)
            yield records
        if expected is not None:
            if seen >= expected:
                return
            continue
        if until_end and all(consumer.position(tp) >= end[tp] for tp in tps):
            return


def read_all(kafka: KafkaConfig, topic: str, expected: int | None = None,
             timeout_s: float = 30.0) -> list:
    """Read a topic from the beginning: until ``expected`` records arrived (or the timeout),
    or, without ``expected``, up to the end offsets seen at the start. For tests, tools and
    the demo."""
    consumer = make_consumer(kafka, group_id=None)
    try:
        tps = assign(consumer, kafka, topic)
        return [r for records in drain(consumer, tps, timeout_s, expected) for r in records]
    finally:
        consumer.close()
