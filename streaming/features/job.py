"""The feature job: Kafka ``impressions`` + ``actions`` -> gate + dedup + user features (keyed
by user) -> item features (keyed by item) -> Kafka ``impressions-enriched`` (impressions with
point-in-time features attached), ``actions-deduped``, ``features`` (FeatureUpdates for the
online store) and ``dead-letter``.

The joiner then reads the enriched/deduplicated topics:

    streamtrain features --bounded
    streamtrain join --bounded --set topics.impressions=impressions-enriched \\
                               --set topics.actions=actions-deduped

Taobao replay (its action types): ``--set features.action_types=cart,fav,buy
--set features.ctr_action=buy``. ``--bare`` runs the same topology forwarding bytes (the
benchmark's pass-through baseline).

On a Flink cluster:
    flink run -py streaming/features/job.py -pyfs . \\
        --jarfile infra/jars/flink/flink-sql-connector-kafka-5.0.0-2.2.jar \\
        -- --no-jar --set kafka.bootstrap=broker:9092
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from pyflink.common import Types
from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction

from streaming.features.flink_functions import (ItemFeatureFunction, UserFeatureFunction,
                                                actions_tag, features_tag, step_output_type,
                                                user_key)
from streaming.features.spec import FeatureSpec
from streaming.flink_env import (FlinkConfig, bytes_type, dead_letter_tag, kafka_sink, kafka_source,
                                 make_env, watermarks)
from streamtrain import cli_common
from streamtrain.config import check
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureJobConfig:
    """``[features_job]``: how the job runs (what it computes is ``[features]``)."""

    group_id: str = "streamtrain-features"
    start: str = "committed"  # earliest | latest | committed

    def __post_init__(self) -> None:
        check(self.start in ("earliest", "latest", "committed"), "features_job.start", self.start,
              "earliest | latest | committed")


class _BareUser(KeyedCoProcessFunction):
    def process_element1(self, value, ctx):
        yield 0, 0, value

    def process_element2(self, value, ctx):
        yield 1, 0, value


class _BareItem(KeyedProcessFunction):
    def process_element(self, value, ctx):
        yield value[2]


def build(env, kafka: KafkaConfig, topics: TopicsConfig, flink: FlinkConfig, spec: FeatureSpec,
          job: FeatureJobConfig, bounded: bool, bare: bool = False) -> None:
    strategy = watermarks(flink)

    def source(topic: str, name: str):
        src = kafka_source(kafka, [topic], group_id=f"{job.group_id}-{name}", bounded=bounded,
                           start=job.start)
        return env.from_source(src, strategy, f"kafka:{topic}").uid(f"source-{name}")

    users = source(topics.impressions, "impressions").connect(source(topics.actions, "actions")) \
        .key_by(user_key, user_key, key_type=Types.LONG())
    user_fn = _BareUser() if bare else UserFeatureFunction(spec, topics.impressions, topics.actions)
    by_user = users.process(user_fn, output_type=step_output_type()).name("dedup-user-features") \
        .uid("user-features")
    item_fn = _BareItem() if bare else ItemFeatureFunction(spec)
    by_item = by_user.key_by(lambda t: t[1], key_type=Types.LONG()) \
        .process(item_fn, output_type=bytes_type()).name("item-features").uid("item-features")

    def sink(stream, topic: str, uid: str):
        stream.sink_to(kafka_sink(kafka, topic)).name(f"kafka:{topic}").uid(uid)

    sink(by_item, topics.impressions_enriched, "sink-impressions-enriched")
    sink(by_item.get_side_output(actions_tag()), topics.actions_deduped, "sink-actions-deduped")
    sink(by_user.get_side_output(features_tag()).union(by_item.get_side_output(features_tag())),
         topics.features, "sink-features")
    sink(by_user.get_side_output(dead_letter_tag()), topics.dead_letter, "sink-dead-letter")


def main(argv: list[str] | None = None) -> int:
    p = cli_common.parser("features", "dedup + realtime features in front of the joiner")
    p.add_argument("--bounded", action="store_true", help="stop at the offsets latest at start")
    p.add_argument("--bare", action="store_true",
                   help="benchmark baseline: the same topology forwarding bytes")
    p.add_argument("--no-jar", action="store_true", help="the cluster provides the connector jar")
    args = p.parse_args(argv)
    kafka = cli_common.load(args, KafkaConfig, "kafka")
    topics = cli_common.load(args, TopicsConfig, "topics")
    flink = cli_common.load(args, FlinkConfig, "flink")
    spec = cli_common.load(args, FeatureSpec, "features")
    job = cli_common.load(args, FeatureJobConfig, "features_job")
    create_topics(kafka, topics)
    env = make_env(flink, with_jar=not args.no_jar)
    build(env, kafka, topics, flink, spec, job, args.bounded, args.bare)
    log.info("running features impressions=%s actions=%s enriched=%s deduped=%s features=%s "
             "windows_ms=%s bounded=%s", topics.impressions, topics.actions,
             topics.impressions_enriched, topics.actions_deduped, topics.features,
             spec.windows_ms, args.bounded)
    env.execute(f"streamtrain-features{'-bare' if args.bare else ''}")
    log.info("features finished enriched=%s", topics.impressions_enriched)
    return 0


if __name__ == "__main__":
    from streamtrain.cli import setup_logging

    setup_logging()
    sys.exit(main())
