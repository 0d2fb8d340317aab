"""The feature job: Kafka ``impressions`` + ``actions`` -> gate + dedup + user features (keyed
by user) -> item features (keyed by item) -> Kafka ``impressions-enriched`` (impressions with
point-in-time features attached), ``actions-deduped``, ``features`` (FeatureUpdates for the
online store) and ``dead-letter``.

The joiner then reads the enriched/deduplicated topics:

    streamtrain features --bounded
    streamtrain join --bounded --set topics.impressions=impressions-enriched \\
                               --set topics.actions=actions-deduped

Durable state: the dedup keys, the entity histories (24 h windows), the pending impressions
and their event-time timers live in Flink keyed state; checkpoints go to
``features_job.checkpoint_dir`` (the newest 3 retained when the job is cancelled or dies) and
a restart resumes from one, state and Kafka offsets together (at least once: outputs of the
epoch after the restored checkpoint may be written twice, with the same values):

    streamtrain features                       # unbounded, checkpoints every flink.checkpoint_interval_ms
    streamtrain features --restore latest      # after a crash: resume from the newest checkpoint

Taobao replay (its action types): ``--set features.action_types=cart,fav,buy
--set features.ctr_action=buy`` (the joiner and the trainer need the same list:
``validation.action_types``, ``model.heads``; schemas/contracts.py). The benchmark's pass-through baseline runs the same
topology with operators that forward bytes (bench/bare_operators.py).

On a Flink cluster:
    flink run -py streaming/features/job.py -pyfs . \\
        --jarfile infra/jars/flink/flink-sql-connector-kafka-5.0.0-2.2.jar \\
        -- --no-jar --set kafka.bootstrap=broker:9092 \\
           --set features_job.checkpoint_dir=s3://bucket/features-chk
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction, StreamExecutionEnvironment

from schemas.validation import ValidationLimits
from streaming.features.flink_functions import (
    EventTimeStamp,
    ItemFeatureFunction,
    OrderedUserFeatureFunction,
    UserFeatureFunction,
    actions_tag,
    features_tag,
    gate_limits,
    step_output_type,
    user_key,
)
from streaming.features.spec import FeatureSpec
from streaming.flink_env import (
    START_FROM,
    STATE_BACKENDS,
    FlinkConfig,
    StartFrom,
    StateBackend,
    bytes_type,
    dead_letter_tag,
    kafka_sink,
    kafka_source,
    side_output,
    watermarks,
)
from streaming.job_skeleton import FlinkJob, JobRun, run_as_script
from streaming.jvm_ops import (
    field_in_order,
    item_features_jvm,
    keyed_in_jvm,
    stamp_event_time_jvm,
    users_in_order,
)
from streamtrain import flags
from streamtrain.config import check
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from streamtrain.paths import STATE_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureJobConfig:
    """``[features_job]``: how the job runs (what it computes is ``[features]``).

    group_id / start: the sources' consumer groups (``<group_id>-impressions``, ``-actions``)
        and where a fresh start reads from; a restored run resumes from the checkpoint's
        offsets whatever ``start`` says.
    checkpoint_dir / restore: where checkpoints go (a path or a URI; the newest 3 are retained
        when the job is cancelled or dies) and what to restore: ``latest`` (the newest
        checkpoint there; a fresh start if there is none), a checkpoint path, or empty.
        ``streamtrain features --restore latest|<path>`` overrides ``restore``.
    state_backend: ``hashmap`` (heap) or ``rocksdb``.
    jvm_sort: each step's records wait for the watermark in the JVM and reach the Python
        step in event-time order (``streamtrain.flink.EventTimeSort``), instead of waiting
        in the Python state with an event-time timer each (false; ~1.6x slower); needs
        ``flink.jvm_ops``. Records the gate may reject do not wait (``streamtrain.flink.Screen``)
        and the input is counted on arrival (docs/features.md, "Waiting in the JVM"). Keep
        it across a restore.
    jvm_item_step: with ``jvm_sort``, the item step (its counts and CTRs) runs whole in the
        JVM (``streamtrain.flink.ItemFeatures``, the twin of the Python step: the same
        outputs), one Python call per event fewer; false: the Python step. Keep it across a
        restore (the two keep their state under different operator ids).
    max_restarts: -1 keeps Flink's restart strategy (exponential delay, forever); n >= 0
        restarts at most n times, then the job fails (tests use 0 to fail fast).
    """

    group_id: str = "streamtrain-features"
    start: StartFrom = "committed"
    checkpoint_dir: str = str(STATE_DIR / "features-checkpoints")
    restore: str = ""
    state_backend: StateBackend = "hashmap"
    max_restarts: int = -1
    jvm_sort: bool = True
    jvm_item_step: bool = True

    def __post_init__(self) -> None:
        check(self.start in START_FROM, "features_job.start", self.start, " | ".join(START_FROM))
        check(bool(self.checkpoint_dir), "features_job.checkpoint_dir", self.checkpoint_dir,
              "a directory or a URI")
        check(self.state_backend in STATE_BACKENDS, "features_job.state_backend",
              self.state_backend, " | ".join(STATE_BACKENDS))
        check(self.max_restarts >= -1, "features_job.max_restarts", self.max_restarts,
              ">= -1 (-1 = Flink's default)")


def build(env: StreamExecutionEnvironment, kafka: KafkaConfig, topics: TopicsConfig,
          flink: FlinkConfig, spec: FeatureSpec, job: FeatureJobConfig, bounded: bool,
          user_step: KeyedCoProcessFunction | None = None,
          item_step: KeyedProcessFunction | None = None, limits: ValidationLimits | None = None) -> None:
    """The topology; ``user_step`` / ``item_step`` replace the feature functions (a
    benchmark's bare operators)."""
    strategy = watermarks(flink)

    def source(topic: str, name: str):
        src = kafka_source(kafka, [topic], group_id=f"{job.group_id}-{name}", bounded=bounded,
                           start=job.start)
        return env.from_source(src, strategy, f"kafka:{topic}").uid(f"source-{name}")

    impressions, actions = source(topics.impressions, "impressions"), source(topics.actions, "actions")
    # the feature functions' own steps take each key's records in event-time order, sorted
    # in the JVM; a benchmark's bare operators (and jvm_sort off) keep the keyed streams
    ordered = job.jvm_sort and user_step is None and item_step is None
    users = users_in_order(flink, impressions, actions, step_output_type(),
                           gate_limits(spec, limits)) if ordered else None
    if users is not None:
        user_step = OrderedUserFeatureFunction(spec, topics.impressions, topics.actions, limits,
                                               cache_size=flink.state_cache_size)
    else:
        ordered = False
        users = keyed_in_jvm(flink, (impressions, actions), "UserKey", Types.LONG())
        if users is None:
            users = impressions.connect(actions).key_by(user_key, user_key, key_type=Types.LONG())
    if user_step is None:
        user_step = UserFeatureFunction(spec, topics.impressions, topics.actions, limits,
                                        cache_size=flink.state_cache_size)
    by_user = users.process(user_step, output_type=step_output_type()).name("dedup-user-features") \
        .uid("user-features")
    # (kind, item, bytes) keyed by item
    items = field_in_order(flink, by_user, 1, step_output_type(), "item") if ordered else \
        keyed_in_jvm(flink, (by_user,), "FieldKey", Types.LONG(), 1)
    if items is None:
        items = by_user.key_by(lambda t: t[1], key_type=Types.LONG())
    by_item = item_features_jvm(items, spec, (actions_tag(), features_tag(), dead_letter_tag())) \
        if ordered and job.jvm_item_step else None
    if by_item is not None:
        log.info("features: records sorted in the JVM, item step in the JVM (streamtrain.flink.ItemFeatures)")
        by_item = by_item.name("item-features").uid("item-features-jvm")
    else:
        if item_step is None:
            item_step = ItemFeatureFunction(spec, cache_size=flink.state_cache_size, ordered=ordered)
        by_item = items.process(item_step, output_type=bytes_type()).name("item-features") \
            .uid("item-features")

    def sink(stream, topic: str, uid: str):
        stream.sink_to(kafka_sink(kafka, topic)).name(f"kafka:{topic}").uid(uid)

    def stamped(stream, action: bool, uid: str):
        """Kafka timestamp = event time: the joiner's watermarks read it (EventTimeStamp)."""
        in_jvm = stamp_event_time_jvm(flink, stream, action)
        if in_jvm is not None:
            return in_jvm.name(f"event-time:{uid}").uid(f"event-time-{uid}")
        return stream.assign_timestamps_and_watermarks(
            WatermarkStrategy.no_watermarks().with_timestamp_assigner(EventTimeStamp(action))) \
            .name(f"event-time:{uid}").uid(f"event-time-{uid}")

    # the main output keeps its element timestamps, and those are event times already: an
    # impression leaves on its own timer (at its time) or, late, with its input's stamp
    sink(by_item, topics.impressions_enriched, "sink-impressions-enriched")
    def side(stream, tag):
        return side_output(stream, tag, flink)

    sink(stamped(side(by_item, actions_tag()), True, "actions"), topics.actions_deduped,
         "sink-actions-deduped")
    sink(side(by_user, features_tag()).union(side(by_item, features_tag())),
         topics.features, "sink-features")
    sink(side(by_user, dead_letter_tag()).union(side(by_item, dead_letter_tag())),
         topics.dead_letter, "sink-dead-letter")


def _sections(args: argparse.Namespace) -> dict[str, Any]:
    return {"features": flags.load(args, FeatureSpec, "features"),
            "features_job": flags.load(args, FeatureJobConfig, "features_job")}


def _build(env: StreamExecutionEnvironment, run: JobRun, **operators) -> None:
    build(env, run.kafka, run.topics, run.flink, run["features"], run["features_job"],
          run.args.bounded, limits=run.validation, **operators)


def _describe(run: JobRun) -> str:
    topics = run.topics
    return (f"impressions={topics.impressions} actions={topics.actions} "
            f"enriched={topics.impressions_enriched} deduped={topics.actions_deduped} "
            f"features={topics.features} windows_ms={run['features'].windows_ms}")


JOB = FlinkJob(
    command="features", label="features",
    description="dedup + realtime features in front of the joiner",
    sections=_sections, durable_state="features_job",
    build=_build, describe=_describe)


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv)


if __name__ == "__main__":
    run_as_script(main)
