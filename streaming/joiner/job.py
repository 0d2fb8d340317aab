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

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import KeyedCoProcessFunction

from streaming.flink_env import (FlinkConfig, bytes_type, dead_letter_tag, kafka_sink, kafka_source,
                                 make_env, watermarks)
from streaming.joiner.config import JoinerConfig
from streaming.joiner.join_function import JoinFunction, join_bucket
from streamtrain import cli_common
from streamtrain.config import check
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.paths import STATE_DIR

log = logging.getLogger(__name__)
DELIVERIES = ("at_least_once", "exactly_once")


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
    start: str = "committed"
    delivery: str = "at_least_once"
    checkpoint_dir: str = str(STATE_DIR / "joiner-checkpoints")
    restore: str = ""
    kv_dir: str = str(STATE_DIR / "joiner-kv")
    state_backend: str = "hashmap"
    timer_tick_ms: int = 1000
    log_interval_s: float = 30.0
    alignment_drift_ms: int = 0
    max_restarts: int = -1

    def __post_init__(self) -> None:
        check(self.buckets >= 1, "joiner_job.buckets", self.buckets, ">= 1")
        check(self.start in ("earliest", "latest", "committed"), "joiner_job.start", self.start,
              "earliest | latest | committed")
        check(self.delivery in DELIVERIES, "joiner_job.delivery", self.delivery, f"one of {DELIVERIES}")
        check(self.state_backend in ("hashmap", "rocksdb"), "joiner_job.state_backend",
              self.state_backend, "hashmap | rocksdb")
        check(self.alignment_drift_ms >= 0, "joiner_job.alignment_drift_ms",
              self.alignment_drift_ms, ">= 0 (0 = off)")
        check(self.timer_tick_ms >= 1, "joiner_job.timer_tick_ms", self.timer_tick_ms, ">= 1")


class ForwardFunction(KeyedCoProcessFunction):
    """The bare pass-through of the same shape as the joiner (for the benchmark)."""

    def process_element1(self, value, ctx):
        yield value

    def process_element2(self, value, ctx):
        yield value


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest completed checkpoint (``<dir>/<job id>/chk-<n>`` with ``_metadata``)."""
    metas = list(Path(checkpoint_dir).glob("*/chk-*/_metadata"))
    return max(metas, key=lambda p: p.stat().st_mtime).parent if metas else None


def flink_settings(job: JoinerJobConfig) -> dict[str, str]:
    chk = Path(job.checkpoint_dir).resolve().as_uri() if "://" not in job.checkpoint_dir \
        else job.checkpoint_dir
    settings = {
        "execution.checkpointing.dir": chk,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "state.backend.type": job.state_backend,
    }
    if job.max_restarts == 0:
        settings["restart-strategy.type"] = "none"
    elif job.max_restarts > 0:
        settings.update({"restart-strategy.type": "fixed-delay",
                         "restart-strategy.fixed-delay.attempts": str(job.max_restarts)})
    restore = job.restore
    if restore == "latest":
        found = latest_checkpoint(job.checkpoint_dir)
        restore = str(found) if found else ""
        log.info("joiner restore=latest checkpoint=%s", restore or "none (fresh start)")
    if restore:
        settings["execution.state-recovery.path"] = restore
    return settings


def build(env, kafka: KafkaConfig, topics: TopicsConfig, flink: FlinkConfig,
          joiner: JoinerConfig, job: JoinerJobConfig, bounded: bool, bare: bool = False) -> None:
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
    keyed = source(topics.impressions, "impressions").connect(source(topics.actions, "actions")) \
        .key_by(lambda raw: join_bucket(raw, buckets), lambda raw: join_bucket(raw, buckets),
                key_type=Types.INT())
    if bare:
        fn = ForwardFunction()
    else:
        fn = JoinFunction(joiner, job.kv_dir, topics.impressions, topics.actions, buckets,
                          job.timer_tick_ms, job.log_interval_s)
    joined = keyed.process(fn, output_type=bytes_type()).name("join").uid("join")
    prefix = None
    if job.delivery == "exactly_once":
        prefix = f"{job.group_id}-{topics.samples}"
    joined.sink_to(kafka_sink(kafka, topics.samples, prefix)).name(f"kafka:{topics.samples}") \
        .uid("sink-samples")
    dl_prefix = None if prefix is None else prefix + "-dl"
    joined.get_side_output(dead_letter_tag()).sink_to(
        kafka_sink(kafka, topics.dead_letter, dl_prefix)).name(f"kafka:{topics.dead_letter}") \
        .uid("sink-dead-letter")


def main(argv: list[str] | None = None) -> int:
    p = cli_common.parser("join", "join impressions with delayed actions into samples")
    p.add_argument("--bounded", action="store_true",
                   help="stop at the offsets latest at start (closes every window at the end)")
    p.add_argument("--restore", default=None,
                   help="'latest' or a checkpoint path (overrides joiner_job.restore)")
    p.add_argument("--bare", action="store_true",
                   help="benchmark baseline: the same topology forwarding bytes, no join")
    p.add_argument("--no-jar", action="store_true", help="the cluster provides the connector jar")
    args = p.parse_args(argv)
    kafka = cli_common.load(args, KafkaConfig, "kafka")
    topics = cli_common.load(args, TopicsConfig, "topics")
    flink = cli_common.load(args, FlinkConfig, "flink")
    joiner = cli_common.load(args, JoinerConfig, "joiner")
    job = cli_common.load(args, JoinerJobConfig, "joiner_job")
    if args.restore is not None:
        from dataclasses import replace

        job = replace(job, restore=args.restore)
    check(job.buckets >= flink.parallelism, "joiner_job.buckets", job.buckets,
          f">= flink.parallelism ({flink.parallelism})")
    create_topics(kafka, topics)
    env = make_env(flink, with_jar=not args.no_jar, extra=flink_settings(job))
    build(env, kafka, topics, flink, joiner, job, args.bounded, args.bare)
    log.info("running joiner impressions=%s actions=%s samples=%s window_ms=%d policy=%s "
             "bounded=%s delivery=%s", topics.impressions, topics.actions, topics.samples,
             joiner.window_ms, joiner.policy, args.bounded, job.delivery)
    env.execute(f"streamtrain-joiner{'-bare' if args.bare else ''}")
    log.info("joiner finished samples=%s", topics.samples)
    return 0


if __name__ == "__main__":
    from streamtrain.cli import setup_logging

    setup_logging()
    sys.exit(main())
