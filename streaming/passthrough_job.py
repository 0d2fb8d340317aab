"""The template PyFlink job: Kafka bytes in -> decode + validate -> encode -> Kafka bytes out,
bad records to the dead-letter topic. It proves the connector jar, the Python workers and
the Kafka wiring, and is the shape the joiner and feature jobs follow: a thin Flink wrapper
(`GateFunction`) around an engine-free class (`streaming.record_gate.RecordGate`), wired
and run by the jobs' shared skeleton (`streaming.job_skeleton.FlinkJob`).

    streamtrain passthrough --input impressions --output impressions.checked --bounded

On a Flink cluster (the connector jar travels with --jarfile; -pyfs ships the code):
    flink run -py streaming/passthrough_job.py -pyfs . \
        --jarfile infra/jars/flink/flink-sql-connector-kafka-5.0.0-2.2.jar \
        -- --set kafka.bootstrap=broker:9092 --no-jar
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator

from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext, StreamExecutionEnvironment

from schemas import Action, DeadLetter, Impression, codec_for
from schemas.validation import ValidationLimits
from streaming.flink_env import FlinkConfig, bytes_type, dead_letter_tag, kafka_sink, kafka_source, watermarks
from streaming.job_skeleton import FlinkJob, JobRun, run_as_script
from streaming.record_gate import RecordGate
from streamtrain.clock import now_ms
from streamtrain.kafka_io import KafkaConfig, TopicsConfig

log = logging.getLogger(__name__)
RECORD_TYPES = {"impression": Impression, "action": Action}


class GateFunction(ProcessFunction):
    """Flink wrapper of RecordGate: good records re-encoded downstream, dead letters to the
    side output, counters in Flink metrics (records_passed, dead_letters)."""

    def __init__(self, record_type: str, stage: str, topic: str, limits: ValidationLimits | None = None):
        self.record_type, self.stage, self.topic, self.limits = record_type, stage, topic, limits

    def open(self, runtime_context: RuntimeContext) -> None:
        self.gate = RecordGate(RECORD_TYPES[self.record_type], self.stage, self.topic,
                               self.limits or ValidationLimits())
        self.codec = self.gate.codec
        self.dl_codec = codec_for(DeadLetter)
        self.dl_tag = dead_letter_tag()
        group = runtime_context.get_metrics_group()
        self.passed = group.counter("records_passed")
        self.dead = group.counter("dead_letters")

    def process_element(self, value: bytes,
                        ctx: ProcessFunction.Context) -> Iterator[bytes | tuple[OutputTag, bytes]]:
        out = self.gate.update(bytes(value), now_ms())
        if isinstance(out, DeadLetter):
            self.dead.inc()
            yield self.dl_tag, self.dl_codec.encode(out)
        else:
            self.passed.inc()
            yield self.codec.encode(out)


def build(env: StreamExecutionEnvironment, kafka: KafkaConfig, topics: TopicsConfig,
          flink: FlinkConfig, input_topic: str, output_topic: str, record_type: str,
          bounded: bool, limits: ValidationLimits | None = None) -> None:
    source = kafka_source(kafka, [input_topic], group_id=f"streamtrain-passthrough-{output_topic}",
                          bounded=bounded)
    raw = env.from_source(source, watermarks(flink), f"kafka:{input_topic}")
    gated = raw.process(GateFunction(record_type, "passthrough", input_topic, limits),
                        output_type=bytes_type()).name("decode-validate-encode")
    gated.sink_to(kafka_sink(kafka, output_topic)).name(f"kafka:{output_topic}")
    gated.get_side_output(dead_letter_tag()).sink_to(
        kafka_sink(kafka, topics.dead_letter)).name(f"kafka:{topics.dead_letter}")


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", help="source topic (default: topics.impressions)")
    p.add_argument("--output", help="sink topic (default: <input>.checked, created if missing)")
    p.add_argument("--record-type", choices=sorted(RECORD_TYPES), default="impression")


def _prepare(run: JobRun) -> None:
    """The topics' defaults; the Flink job is named after its input."""
    run.args.input = run.args.input or run.topics.impressions
    run.args.output = run.args.output or f"{run.args.input}.checked"
    run.name = f"streamtrain-passthrough-{run.args.input}"


def _build(env: StreamExecutionEnvironment, run: JobRun) -> None:
    build(env, run.kafka, run.topics, run.flink, run.args.input, run.args.output,
          run.args.record_type, run.args.bounded, run.validation)


JOB = FlinkJob(
    command="passthrough", label="passthrough",
    description="decode + validate + re-encode a topic (template job)",
    add_flags=_flags, prepare=_prepare, extra_topics=lambda run: [run.args.output],
    build=_build, describe=lambda run: f"input={run.args.input} output={run.args.output}")


def main(argv: list[str] | None = None) -> int:
    return JOB.main(argv)


if __name__ == "__main__":
    run_as_script(main)
