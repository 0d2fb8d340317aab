"""The template PyFlink job: Kafka bytes in -> decode + validate -> encode -> Kafka bytes out,
bad records to the dead-letter topic. It proves the connector jar, the Python workers and
the Kafka wiring, and is the shape the joiner and feature jobs follow: a thin Flink wrapper
(`GateFunction`) around an engine-free class (`streaming.record_gate.RecordGate`).

    streamtrain passthrough --input impressions --output impressions.checked --bounded

On a Flink cluster (the connector jar travels with --jarfile; -pyfs ships the code):
    flink run -py streaming/passthrough_job.py -pyfs . \
        --jarfile infra/jars/flink/flink-sql-connector-kafka-5.0.0-2.2.jar \
        -- --set kafka.bootstrap=broker:9092 --no-jar
"""

from __future__ import annotations

import logging
import sys
import time

from pyflink.datastream import ProcessFunction

from schemas import Action, DeadLetter, Impression, codec_for
from streaming.flink_env import (FlinkConfig, bytes_type, dead_letter_tag, kafka_sink, kafka_source,
                                 make_env, watermarks)
from streaming.record_gate import RecordGate
from streamtrain import cli_common
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics

log = logging.getLogger(__name__)
RECORD_TYPES = {"impression": Impression, "action": Action}


class GateFunction(ProcessFunction):
    """Flink wrapper of RecordGate: good records re-encoded downstream, dead letters to the
    side output, counters in Flink metrics (records_passed, dead_letters)."""

    def __init__(self, record_type: str, stage: str, topic: str):
        self.record_type, self.stage, self.topic = record_type, stage, topic

    def open(self, runtime_context):
        self.gate = RecordGate(RECORD_TYPES[self.record_type], self.stage, self.topic)
        self.codec = self.gate.codec
        self.dl_codec = codec_for(DeadLetter)
        self.dl_tag = dead_letter_tag()
        group = runtime_context.get_metrics_group()
        self.passed = group.counter("records_passed")
        self.dead = group.counter("dead_letters")

    def process_element(self, value, ctx):
        out = self.gate.update(bytes(value), int(time.time() * 1000))
        if isinstance(out, DeadLetter):
            self.dead.inc()
            yield self.dl_tag, self.dl_codec.encode(out)
        else:
            self.passed.inc()
            yield self.codec.encode(out)


def build(env, kafka: KafkaConfig, topics: TopicsConfig, flink: FlinkConfig, input_topic: str,
          output_topic: str, record_type: str, bounded: bool) -> None:
    source = kafka_source(kafka, [input_topic], group_id=f"streamtrain-passthrough-{output_topic}",
                          bounded=bounded)
    raw = env.from_source(source, watermarks(flink), f"kafka:{input_topic}")
    gated = raw.process(GateFunction(record_type, "passthrough", input_topic),
                        output_type=bytes_type()).name("decode-validate-encode")
    gated.sink_to(kafka_sink(kafka, output_topic)).name(f"kafka:{output_topic}")
    gated.get_side_output(dead_letter_tag()).sink_to(
        kafka_sink(kafka, topics.dead_letter)).name(f"kafka:{topics.dead_letter}")


def main(argv: list[str] | None = None) -> int:
    p = cli_common.parser("passthrough", "decode + validate + re-encode a topic (template job)")
    p.add_argument("--input", help="source topic (default: topics.impressions)")
    p.add_argument("--output", help="sink topic (default: <input>.checked, created if missing)")
    p.add_argument("--record-type", choices=sorted(RECORD_TYPES), default="impression")
    p.add_argument("--bounded", action="store_true", help="stop at the offsets latest at start")
    p.add_argument("--no-jar", action="store_true", help="the cluster provides the connector jar")
    args = p.parse_args(argv)
    kafka = cli_common.load(args, KafkaConfig, "kafka")
    topics = cli_common.load(args, TopicsConfig, "topics")
    flink = cli_common.load(args, FlinkConfig, "flink")
    input_topic = args.input or topics.impressions
    output_topic = args.output or f"{input_topic}.checked"
    create_topics(kafka, topics, extra=[output_topic])
    env = make_env(flink, with_jar=not args.no_jar)
    build(env, kafka, topics, flink, input_topic, output_topic, args.record_type, args.bounded)
    log.info("running passthrough input=%s output=%s bounded=%s", input_topic, output_topic, args.bounded)
    env.execute(f"streamtrain-passthrough-{input_topic}")
    log.info("passthrough finished input=%s output=%s", input_topic, output_topic)
    return 0


if __name__ == "__main__":
    from streamtrain.cli import setup_logging

    setup_logging()
    sys.exit(main())
