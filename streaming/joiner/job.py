"""The joiner as a PyFlink job: Kafka ``impressions`` + ``actions`` -> keyed by a bucket of the
join key -> ``JoinFunction`` (``JoinCore`` per bucket) -> Kafka ``samples`` (+ dead letter).

Event time is the Kafka record timestamp (bounded out-of-orderness, idle partitions skipped:
``[flink]`` settings); checkpointing is on, checkpoints are retained on cancellation so a
restart can resume from the newest one (``--restore latest``).

    streamtrain join                                  # unbounded, local MiniCluster
    streamtrain join --bounded --set joiner.window_ms=600000 --set joiner.policy=early
    streamtrain join --restore latest                 # resume from the newest checkpoint

On a Flink cluster (the connector jar travels with --jarfile; -pyfs ships the code):
    flink run -py streaming/joiner/job.py -pyfs . \\
        --jarfile infra/jars/flink/flink-sql-connector-kafka-5.0.0-2.2.jar \\
        -- --no-jar --set kafka.bootstrap=broker:9092 \\
           --set joiner_job.checkpoint_dir=s3://bucket/joiner-chk --set flink.parallelism=4
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pyflink.common import Types
from pyflink.datastream import KeyedCoProcessFunction, StreamExecutionEnvironment

from schemas.validation import ValidationLimits
from streaming.flink_env import (
    START_FROM,
    FlinkConfig,
    StartFrom,
    bytes_type,
    checkpoint_settings,
    dead_letter_tag,
    kafka_sink,
    kafka_source,
    latest_checkpoint,  # noqa: F401  (moved to flink_env; still importable from here)
    side_output,
    watermarks,
)
from streaming.job_skeleton import FlinkJob, JobRun, run_as_script
from streaming.joiner.config import JoinerConfig
from streaming.joiner.join_function import JoinFunction, join_bucket
from streaming.jvm_ops import keyed_in_jvm
from streamtrain import flags
from streamtrain.config import check
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from streamtrain.paths import STATE_DIR

log = logging.getLogger(__name__)
Delivery = Literal["at_least_once", "exactly_once"]
StateBackend = Literal["hashmap", "rocksdb"]
DELIVERIES: tuple[Delivery, ...] = get_args(Delivery)
STATE_BACKENDS: tuple[StateBackend, ...] = get_args(StateBackend)


@dataclass(frozen=True)
class JoinerJobConfig:
    """``[joiner_job]``: how the job runs (the join itself is ``[joiner]``).

    buckets: key groups of the join key (>= parallelism; fixed for the life of the state).
    delivery: ``at_least_once`` (samples emitted after the last checkpoint may appear twice
        after a failure) or ``exactly_once`` (Kafka transactions per checkpoint; consumers
        read with isolation.level=read_committed; samples visible only at checkpoints).
    checkpoint_dir / restore: where checkpoints go; ``restore`` = ``latest`` (the newest
        retained checkpoint there, if any), a checkpoint path, or empty.
    alignment_drift_ms: > 0 aligns the two sources' watermarks (a source more than this
        ahead in event time pauses), so a backlog or replay is read in event-time step and
        late actions meet their impressions in the KV as they would live; 0 = off. Unbounded
        runs only: with --bounded, connector 5.0.0-2.2 fails pausing a finished split
        ("No current assignment for partition").
    max_restarts: -1 keeps Flink's restart strategy (exponential delay, forever); n >= 0
        restarts at most n times, then the job fails (tests use 0 to fail fast).
    """

    buckets: int = 128
    group_id: str = "streamtrain-joiner"
    start: StartFrom = "committed"
    delivery: Delivery = "at_least_once"
    checkpoint_dir: str = str(STATE_DIR / "joiner-checkpoints")
    restore: str = ""
    kv_dir: str = str(STATE_DIR / "joiner-kv")
    state_backend: StateBackend = "hashmap"
    timer_tick_ms: int = 1000
    log_interval_s: float = 30.0
    alignment_drift_ms: int = 0
    max_restarts: int = -1

    def __post_init__(self) -> None:
        check(self.buckets >= 1, "joiner_job.buckets", self.buckets, ">= 1")
        check(self.start in START_FROM, "joiner_job.start", self.start, " | ".join(START_FROM))
        check(self.delivery in DELIVERIES, "joiner_job.delivery", self.delivery, f"one of {DELIVERIES}")
        check(self.state_backend in STATE_BACKENDS, "joiner_job.state_backend",
              self.state_backend, " | ".join(STATE_BACKENDS))
        check(self.alignment_drift_ms >= 0, "joiner_job.alignment_drift_ms",
              self.alignment_drift_ms, ">= 0 (0 = off)")
        check(self.timer_tick_ms >= 1, "joiner_job.timer_tick_ms", self.timer_tick_ms, ">= 1")


def flink_settings(job: JoinerJobConfig) -> dict[str, str]:
    """The checkpoint settings of the job (``flink_env.checkpoint_settings``; the skeleton
    applies them, ``durable_state="joiner_job"``)."""
    return checkpoint_settings(job.checkpoint_dir, job.restore, job.state_backend,
                               job.max_restarts, label="joiner")


def build(env: StreamExecutionEnvironment, kafka: KafkaConfig, topics: TopicsConfig,
          flink: FlinkConfig, joiner: JoinerConfig, job: JoinerJobConfig, bounded: bool,
          join: KeyedCoProcessFunction | None = None, limits: ValidationLimits | None = None) -> None:
    """The topology; ``join`` replaces the JoinFunction (a benchmark's bare operator)."""
    strategy = watermarks(flink)
    if job.alignment_drift_ms > 0:
        from pyflink.common import Duration

        strategy = strategy.with_watermark_alignment(
            "joiner-inputs", Duration.of_millis(job.alignment_drift_ms), Duration.of_millis(200))

    def source(topic: str, name: str):
        src = kafka_source(kafka, [topic], group_id=f"{job.group_id}-{name}", bounded=bounded,
                           start=job.start)
        return env.from_source(src, strategy, f"kafka:{topic}").uid(f"source-{name}")

    buckets = job.buckets
    impressions, actions = source(topics.impressions, "impressions"), source(topics.actions, "actions")
    keyed = keyed_in_jvm(flink, (impressions, actions), "JoinBucket", Types.INT(), buckets)
    if keyed is None:
        keyed = impressions.connect(actions).key_by(lambda raw: join_bucket(raw, buckets),
                                                    lambda raw: join_bucket(raw, buckets),
                                                    key_type=Types.INT())
    if join is None:
        join = JoinFunction(joiner, job.kv_dir, topics.impressions, topics.actions, buckets,
                            job.timer_tick_ms, job.log_interval_s, limits=limits,
                            out_of_orderness_ms=flink.out_of_orderness_ms)
    joined = keyed.process(join, output_type=bytes_type()).name("join").uid("join")
    prefix = None
    if job.delivery == "exactly_once":
        prefix = f"{job.group_id}-{topics.samples}"
    joined.sink_to(kafka_sink(kafka, topics.samples, prefix)).name(f"kafka:{topics.samples}") \
        .uid("sink-samples")
    dl_prefix = None if prefix is None else prefix + "-dl"
    side_output(joined, dead_letter_tag(), flink).sink_to(
        kafka_sink(kafka, topics.dead_letter, dl_prefix)).name(f"kafka:{topics.dead_letter}") \
        .uid("sink-dead-letter")


def _sections(args: argparse.Namespace) -> dict[str, Any]:
    return {"joiner": flags.load(args, JoinerConfig, "joiner"),
            "joiner_job": flags.load(args, JoinerJobConfig, "joiner_job")}


def _prepare(run: JobRun) -> None:
    buckets = run["joiner_job"].buckets
    check(buckets >= run.flink.parallelism, "joiner_job.buckets", buckets,
          f">= flink.parallelism ({run.flink.parallelism})")
    joiner = run["joiner"]
    for name in ("max_entries", "max_bytes", "max_dedup_entries"):
        bound = getattr(joiner, name)
        # job-wide bounds, bound // buckets per bucket core (JoinerConfig.per_core)
        check(bound == 0 or bound >= buckets, f"joiner.{name}", bound,
              f"0 (unbounded) or >= joiner_job.buckets ({buckets}): the bound is for the "
              "whole job, shared among its buckets")


def _build(env: StreamExecutionEnvironment, run: JobRun, **operators) -> None:
    build(env, run.kafka, run.topics, run.flink, run["joiner"], run["joiner_job"],
          run.args.bounded, limits=run.validation, **operators)


def _describe(run: JobRun) -> str:
    topics, joiner, job = run.topics, run["joiner"], run["joiner_job"]
    return (f"impressions={topics.impressions} actions={topics.actions} samples={topics.samples} "
            f"window_ms={joiner.window_ms} policy={joiner.policy} delivery={job.delivery}")


JOB = FlinkJob(
    command="join", label="joiner",
    description="join impressions with delayed actions into samples",
    bounded_help="stop at the offsets latest at start (closes every window at the end)",
    sections=_sections,
    prepare=_prepare, durable_state="joiner_job",
    build=_build, describe=_describe)


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv)


if __name__ == "__main__":
    run_as_script(main)
