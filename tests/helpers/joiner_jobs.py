"""Helpers of the joiner's integration tests: run `streamtrain join` as a subprocess on the
MiniCluster, read topics (read_committed when the job writes transactionally)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from streamtrain.kafka_io import KafkaConfig, TopicsConfig, admin_client, make_consumer
from streamtrain.paths import REPO_ROOT


def join_command(kafka: KafkaConfig, topics: TopicsConfig, work: Path, *settings: str,
                 bounded: bool = True, restore: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "streamtrain.cli", "join",
           "--set", f"kafka.bootstrap={kafka.bootstrap}",
           "--set", f"joiner_job.checkpoint_dir={work / 'checkpoints'}",
           "--set", f"joiner_job.kv_dir={work / 'kv'}",
           "--set", "joiner_job.start=earliest",
           "--set", f"joiner_job.group_id=joiner-{topics.samples}",
           "--set", "joiner_job.buckets=16",
           "--set", "joiner_job.max_restarts=0"]
    for role in ("impressions", "actions", "samples", "dead_letter"):
        cmd += ["--set", f"topics.{role}={getattr(topics, role)}"]
    for s in settings:
        cmd += ["--set", s]
    if bounded:
        cmd.append("--bounded")
    if restore:
        cmd += ["--restore", restore]
    return cmd


def features_command(kafka: KafkaConfig, topics: TopicsConfig, *settings: str) -> list[str]:
    """`streamtrain features --bounded` from the start of ``topics``' impressions/actions
    into its enriched/deduped topics (run it with ``run_join``)."""
    cmd = [sys.executable, "-m", "streamtrain.cli", "features", "--bounded",
           "--set", f"kafka.bootstrap={kafka.bootstrap}", "--set", "flink.checkpoint_interval_ms=0",
           "--set", "features_job.start=earliest",
           "--set", f"features_job.group_id=features-{topics.features}"]
    for role in ("impressions", "actions", "features", "dead_letter", "impressions_enriched",
                 "actions_deduped"):
        cmd += ["--set", f"topics.{role}={getattr(topics, role)}"]
    for s in settings:
        cmd += ["--set", s]
    return cmd


def run_join(cmd: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def read_topic(kafka: KafkaConfig, topic: str, expected: int | None = None,
               timeout_s: float = 60.0, committed: bool = False) -> list:
    """Every record of a topic: until ``expected`` arrived (then a short extra poll to catch
    surplus records), or until the end offsets are reached and nothing new comes."""
    from kafka import TopicPartition

    extra = {"isolation_level": "read_committed"} if committed else {}
    consumer = make_consumer(kafka, group_id=None, **extra)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list = []
        deadline = time.monotonic() + timeout_s
        settle = None
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            for recs in batch.values():
                out.extend(recs)
            if batch:
                settle = None
                continue
            if expected is not None and len(out) < expected:
                continue
            end = consumer.end_offsets(tps)
            if all(consumer.position(tp) >= end[tp] for tp in tps):
                settle = settle or time.monotonic() + 1.0
                if time.monotonic() >= settle:
                    break
        return out
    finally:
        consumer.close()


def keep_forever(kafka: KafkaConfig, topics: TopicsConfig) -> None:
    """No time retention on the test's topics: replayed history (TalkingData is from 2017)
    carries old record timestamps, and a 168 h retention deletes it under the job's feet."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = admin_client(kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                            configs={"retention.ms": "-1"})
                             for name in topics.names()])
    finally:
        admin.close()


def wait_for(what: str, cond, timeout_s: float, proc=None) -> None:
    """Poll ``cond`` until it holds, with a deadline; fail at once if ``proc`` (a job's
    process) exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job exited (rc={proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def expected_keys(events) -> tuple[set, set]:
    """(impression keys, distinct (key, action type) labels of those impressions), straight
    from the generator's events."""
    from schemas import Action, Impression, codec_for

    imps, labels = set(), set()
    for ev in events:
        if ev.topic == "impressions":
            rec = codec_for(Impression).decode(ev.value)
            imps.add((rec.request_id, rec.item_id))
        else:
            act = codec_for(Action).decode(ev.value)
            labels.add((act.request_id, act.item_id, act.action_type))
    return imps, {lab for lab in labels if lab[:2] in imps}
