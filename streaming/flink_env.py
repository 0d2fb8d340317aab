"""Building blocks every PyFlink job of streamtrain shares: the execution environment (Python
worker settings, connector jar, checkpointing), Kafka byte sources and sinks, the dead-letter
side output, the event-time watermark strategy and the Prometheus reporter
(``flink.metrics_port``: every metric of the job's MiniCluster, the Python functions' own
counters included, on ``GET http://HOST:PORT/metrics``; names in docs/operations.md).
``streaming.job_skeleton`` runs every job on them (flags, settings, topics, environment,
``execute``).

Records cross Kafka as raw bytes (``ByteArraySchema``); the step before a sink must declare
``output_type=BYTES`` or PyFlink pickles the values. Event time is the Kafka record timestamp,
which the generator and the replay tool set to the event's own time.

    env = make_env(FlinkConfig())
    ds = env.from_source(kafka_source(kafka, ["impressions"], "my-job"), watermarks(...), "impressions")
    ds.process(MyFn(), output_type=BYTES).sink_to(kafka_sink(kafka, "samples"))
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from streamtrain.config import check
from streamtrain.kafka_io import KafkaConfig
from streamtrain.kafka_security import java_properties
from streamtrain.paths import JARS_DIR

log = logging.getLogger(__name__)
CONNECTOR_JAR_GLOB = "flink-sql-connector-kafka-*.jar"
ExecutionMode = Literal["thread", "process"]
StartFrom = Literal["earliest", "latest", "committed"]  # where a Kafka source starts reading
EXECUTION_MODES: tuple[ExecutionMode, ...] = get_args(ExecutionMode)
START_FROM: tuple[StartFrom, ...] = get_args(StartFrom)
StateBackend = Literal["hashmap", "rocksdb"]
STATE_BACKENDS: tuple[StateBackend, ...] = get_args(StateBackend)
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
RETAINED_CHECKPOINTS = 3  # execution.checkpointing.num-retained of a job with durable state


class FlinkSetupError(RuntimeError):
    """The Flink environment cannot be built (missing jar, bad settings)."""


@dataclass(frozen=True)
class FlinkConfig:
    parallelism: int = 1
    execution_mode: ExecutionMode = "thread"  # thread: ~1.8x process mode's throughput (docs/joiner.md)
    bundle_size: int = 1000
    bundle_time_ms: int = 1000
    state_cache_size: int = 100_000
    checkpoint_interval_ms: int = 10_000
    out_of_orderness_ms: int = 5_000
    idleness_ms: int = 10_000
    jars_dir: str = str(JARS_DIR / "flink")
    # Flink's Prometheus reporter (GET http://HOST:PORT/metrics): "0" = off; a port ("9250"),
    # a range ("9250-9259": the first free one) or a list ("9250,9252"). Each job process
    # runs its own MiniCluster, so each needs its own port (docs/operations.md)
    metrics_port: str = "0"
    # key selectors and event-time stamps as Java maps (streaming/jvm_ops.py, a jar javac
    # builds on first use) instead of Python operators sharing the functions' interpreter
    jvm_ops: bool = True

    def __post_init__(self) -> None:
        check(self.parallelism >= 1, "flink.parallelism", self.parallelism, ">= 1")
        check(self.execution_mode in EXECUTION_MODES, "flink.execution_mode",
              self.execution_mode, "thread or process")
        check(self.bundle_size >= 1, "flink.bundle_size", self.bundle_size, ">= 1")
        check(self.bundle_time_ms >= 1, "flink.bundle_time_ms", self.bundle_time_ms, ">= 1")
        check(self.checkpoint_interval_ms >= 0, "flink.checkpoint_interval_ms",
              self.checkpoint_interval_ms, ">= 0 (0 disables checkpointing)")
        check(self.out_of_orderness_ms >= 0, "flink.out_of_orderness_ms", self.out_of_orderness_ms, ">= 0")
        check(valid_port_spec(self.metrics_port), "flink.metrics_port", self.metrics_port,
              '"0" (off), a port, a range "9250-9259" or a list "9250,9252" (ports 1..65535)')


def valid_port_spec(spec: str) -> bool:
    """A reporter port setting: "0" (off), a port, a range or a comma-separated list of them.

    >>> [valid_port_spec(s) for s in ("0", "9250", "9250-9259", "9250,9252-9253", "x", "9-1", "70000")]
    [True, True, True, True, False, False, False]
    """
    if spec == "0":
        return True
    for part in str(spec).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            return False
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= lo <= hi <= 65535:
            return False
    return True


def prometheus_settings(port: str) -> dict[str, str]:
    """Flink settings of the Prometheus reporter on ``port`` (a port, a range or a list);
    none when ``port`` is "0". The reporter serves every metric of the Flink process (job,
    operators, the Python functions' own groups) as ``flink_<scope>_<name>``."""
    if str(port) == "0":
        return {}
    return {"metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
            "metrics.reporter.prom.port": str(port)}


def prometheus_jar() -> Path | None:
    """The reporter jar PyFlink's wheel ships (``pyflink/plugins/metrics-prometheus``)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        return None
    jars = sorted((Path(spec.origin).parent / "plugins" / "metrics-prometheus").glob(
        "flink-metrics-prometheus-*.jar"))
    return jars[-1] if jars else None


def _reporter_on_classpath() -> None:
    """Put the Prometheus reporter jar on the classpath of the JVM PyFlink is about to start.

    The MiniCluster of a local run gets no plugin manager (PerJobMiniClusterFactory sets
    none), so it finds reporters on the JVM's classpath only, never in the plugins dir; the
    gateway launcher (``pyflink_gateway_server``) appends ``HADOOP_CLASSPATH`` to that
    classpath. A session cluster loads the same jar as a plugin instead
    (``streamtrain flink``, ``flink_cluster.metrics_port``)."""
    jar = prometheus_jar()
    if jar is None:
        log.warning("flink.metrics_port is set but PyFlink ships no flink-metrics-prometheus jar: "
                    "no metrics will be exported")
        return
    entries = [e for e in os.environ.get("HADOOP_CLASSPATH", "").split(os.pathsep) if e]
    if str(jar) not in entries:
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join([*entries, str(jar)])


def _check_reporter_loaded(port: str) -> None:
    """Warn when the JVM was started before the jar went on its classpath (an earlier
    PyFlink call in this process) or is a cluster's client (``flink run``: the cluster's own
    reporters apply there)."""
    from pyflink.java_gateway import get_gateway

    try:
        get_gateway().jvm.java.lang.Class.forName(PROMETHEUS_FACTORY)
    except Exception:  # noqa: BLE001 - py4j wraps the ClassNotFoundException
        log.warning("flink.metrics_port=%s: the Prometheus reporter is not on this JVM's "
                    "classpath (PyFlink's JVM started before make_env, or this runs under "
                    "`flink run`, where the cluster's reporters apply: flink_cluster.metrics_port)",
                    port)
    else:
        log.info("flink metrics: Prometheus reporter on port %s (GET /metrics)", port)


def connector_jar(cfg: FlinkConfig) -> Path:
    jars = sorted(Path(cfg.jars_dir).glob(CONNECTOR_JAR_GLOB))
    if not jars:
        raise FlinkSetupError(
            f"flink-sql-connector-kafka jar not found in {cfg.jars_dir}: run `streamtrain jars` "
            "(or `mvn -q -f infra/pom.xml package`)"
        )
    return jars[-1]


def make_env(cfg: FlinkConfig, with_jar: bool = True, extra: dict[str, str] | None = None):
    """A StreamExecutionEnvironment: local MiniCluster when run with `python`, the cluster's
    when submitted with `flink run -py` (there the connector jar comes from --jarfile).
    ``extra``: more Flink settings (e.g. checkpoint directory, state-recovery path)."""
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

    # thread mode embeds CPython in the JVM (pemja); it finds its site-packages through the
    # `python` on PATH, so put this interpreter's bin first (a virtualenv not on PATH otherwise)
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    metrics = prometheus_settings(cfg.metrics_port)
    if metrics:
        _reporter_on_classpath()  # before Configuration(): that starts PyFlink's JVM
    conf = Configuration()
    conf.set_string("python.execution-mode", cfg.execution_mode)
    conf.set_string("python.fn-execution.bundle.size", str(cfg.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(cfg.bundle_time_ms))
    conf.set_string("python.state.cache-size", str(cfg.state_cache_size))
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    for key, value in {**metrics, **(extra or {})}.items():
        conf.set_string(key, value)
    if with_jar:
        conf.set_string("pipeline.jars", connector_jar(cfg).resolve().as_uri())
    root = logging.getLogger()
    level = root.level
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    root.setLevel(level)  # PyFlink's gateway sets the root logger to WARN: the job's own lines vanished
    if metrics:
        _check_reporter_loaded(cfg.metrics_port)
    if cfg.jvm_ops:
        from streaming.jvm_ops import ops_jar

        jar = ops_jar(Path(cfg.jars_dir))
        if jar is not None:  # shipped with the job on a cluster as well (pipeline.jars)
            env.add_jars(jar.resolve().as_uri())
    env.set_parallelism(cfg.parallelism)
    if cfg.checkpoint_interval_ms > 0:
        env.enable_checkpointing(cfg.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    return env


SAVEPOINTS_SUBDIR = "savepoints"  # <checkpoint_dir>/savepoints: where a clean stop's savepoint goes


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest completed checkpoint (``<dir>/<job id>/chk-<n>`` with ``_metadata``) or
    savepoint of a clean stop (``<dir>/savepoints/savepoint-*/_metadata``): the latest
    written, the higher ``n`` on a tie (a restored job continues the numbers)."""
    root = Path(checkpoint_dir)
    metas = [*root.glob("*/chk-*/_metadata"), *root.glob(f"{SAVEPOINTS_SUBDIR}/savepoint-*/_metadata")]

    def newest(meta: Path) -> tuple[float, int]:
        n = meta.parent.name.removeprefix("chk-")
        return meta.stat().st_mtime, int(n) if n.isdigit() else -1
    return max(metas, key=newest).parent if metas else None


def checkpoint_settings(checkpoint_dir: str, restore: str = "", state_backend: str = "hashmap",
                        max_restarts: int = -1, label: str = "job") -> dict[str, str]:
    """Flink settings of a job with durable state (``make_env(extra=...)``): checkpoints go to
    ``checkpoint_dir`` (a local path or a URI such as ``s3://...``), the newest
    ``RETAINED_CHECKPOINTS`` are kept when the job is cancelled or dies; ``state_backend``;
    ``max_restarts`` -1 keeps Flink's restart strategy, 0 none (fail fast), n at most n
    fixed-delay restarts; ``restore``: ``latest`` (the newest completed checkpoint in
    ``checkpoint_dir``, a fresh start when there is none), a checkpoint path, or empty (a
    fresh start). A restored job resumes its Kafka sources from the offsets in the checkpoint
    (the sources' ``start`` applies to a fresh start only) together with its keyed state and
    timers."""
    chk = Path(checkpoint_dir).resolve().as_uri() if "://" not in checkpoint_dir else checkpoint_dir
    settings = {
        "execution.checkpointing.dir": chk,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": str(RETAINED_CHECKPOINTS),
        "state.backend.type": state_backend,
    }
    if max_restarts == 0:
        settings["restart-strategy.type"] = "none"
    elif max_restarts > 0:
        settings.update({"restart-strategy.type": "fixed-delay",
                         "restart-strategy.fixed-delay.attempts": str(max_restarts)})
    if restore == "latest":
        found = latest_checkpoint(checkpoint_dir)
        restore = str(found) if found else ""
        log.info("%s restore=latest checkpoint=%s", label, restore or "none (fresh start)")
    if restore:
        settings["execution.state-recovery.path"] = restore
    return settings


def bytes_type():
    from pyflink.common import Types

    return Types.PRIMITIVE_ARRAY(Types.BYTE())


def dead_letter_tag():
    from pyflink.datastream import OutputTag

    return OutputTag("dead-letter", bytes_type())


def side_output(stream, tag, cfg: FlinkConfig):
    """``stream.get_side_output(tag)`` without the Python identity map PyFlink appends to
    every side output (one more operator call per record), in thread mode: there the Python
    function's side outputs already arrive typed by the tag (process mode keeps the map)."""
    from pyflink.datastream import DataStream

    if cfg.execution_mode != "thread":
        return stream.get_side_output(tag)
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


def kafka_source(kafka: KafkaConfig, topics: list[str], group_id: str, bounded: bool = False,
                 start: StartFrom = "earliest"):
    """Bytes from Kafka. ``bounded`` stops at the offsets that were latest when the job started
    (tests and the demo end by themselves). ``start``: earliest | latest | committed (resume a
    consumer group from its committed offsets, earliest where it has none)."""
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream.connectors.kafka import KafkaOffsetResetStrategy, KafkaOffsetsInitializer, KafkaSource

    starts = {
        "earliest": KafkaOffsetsInitializer.earliest,
        "latest": KafkaOffsetsInitializer.latest,
        "committed": lambda: KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST),
    }
    check(start in starts, "start", start, " | ".join(starts))
    builder = (KafkaSource.builder()
               .set_bootstrap_servers(kafka.bootstrap)
               .set_topics(*topics)
               .set_group_id(group_id)
               .set_starting_offsets(starts[start]())
               .set_value_only_deserializer(ByteArraySchema())
               .set_property("partition.discovery.interval.ms", "10000")
               .set_property("commit.offsets.on.checkpoint", "true"))
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return _secured(builder, kafka).build()


def _secured(builder, kafka: KafkaConfig):
    """The TLS/SASL settings of ``kafka`` on a KafkaSource/KafkaSink builder (Java client
    properties: ``security.protocol``, ``sasl.jaas.config``, a PEM trust store, ...)."""
    if kafka.security_protocol != "PLAINTEXT":
        for key, value in java_properties(kafka).items():
            builder = builder.set_property(key, value)
    return builder


def kafka_sink(kafka: KafkaConfig, topic: str, exactly_once_prefix: str | None = None):
    """Bytes to Kafka, at-least-once (flushed on every checkpoint); or exactly-once
    (transactions committed on each checkpoint, read with isolation.level=read_committed)
    when a transactional-id prefix unique to the job is given."""
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    builder = (KafkaSink.builder()
               .set_bootstrap_servers(kafka.bootstrap)
               .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                      .set_topic(topic)
                                      .set_value_serialization_schema(ByteArraySchema())
                                      .build()))
    builder = _secured(builder, kafka)
    if exactly_once_prefix is None:
        return builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE).build()
    # the sink's default transaction timeout (1 h) exceeds the broker's maximum (15 min)
    return (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(exactly_once_prefix)
            .set_property("transaction.timeout.ms", "600000")
            .build())


def watermarks(cfg: FlinkConfig):
    """Event time = Kafka record timestamp, bounded out-of-orderness, idle partitions skipped."""
    from pyflink.common import Duration, WatermarkStrategy

    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(cfg.out_of_orderness_ms))
    if cfg.idleness_ms > 0:
        strategy = strategy.with_idleness(Duration.of_millis(cfg.idleness_ms))
    return strategy
