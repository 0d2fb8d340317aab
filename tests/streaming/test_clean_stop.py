"""A clean stop of an unbounded job (what `streamtrain up` and Ctrl-C do): SIGTERM stops the
feature job with a savepoint and exit code 0; the next run with ``--restore latest``
resumes from it, so every impression comes out exactly once across the two runs (a kill
would replay what followed the last checkpoint; a savepoint leaves nothing to replay)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from schemas import Impression, codec_for
from streaming.flink_env import SAVEPOINTS_SUBDIR, latest_checkpoint
from streamtrain.paths import REPO_ROOT
from tests.helpers.joiner_jobs import features_command, read_topic, wait_for
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

pytestmark = pytest.mark.integration


def _unbounded(kafka, topics, work: Path) -> list[str]:
    cmd = features_command(kafka, topics, f"features_job.checkpoint_dir={work}",
                           "flink.checkpoint_interval_ms=60000", "features_job.max_restarts=0")
    cmd.remove("--bounded")
    return [*cmd, "--restore", "latest"]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _enriched(kafka, topics) -> Counter:
    codec = codec_for(Impression)
    return Counter(codec.decode(r.value).request_id
                   for r in read_topic(kafka, topics.impressions_enriched, timeout_s=30))


def _stop(proc: subprocess.Popen, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)  # to the job's process only, as `streamtrain up` does
    try:
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _impressions(seed: int, start_ms: int) -> tuple[list, int]:
    gen = TrafficGenerator(GeneratorConfig(seed=seed, duration_s=20, impressions_per_s=20,
                                           duplicate_rate=0, malformed_rate=0, start_ms=start_ms))
    events = list(gen.events())
    return events, gen.stats["impressions"]


def test_sigterm_stops_with_a_savepoint_and_the_restart_repeats_nothing(kafka_broker, topics, tmp_path):
    log = tmp_path / "features.log"
    first, n1 = _impressions(1, 1_700_000_000_000)
    produce(first, kafka_broker, topics)
    cmd = _unbounded(kafka_broker, topics, tmp_path / "ckpt")
    proc = _start(cmd, log)
    # the checkpoint interval (60 s) is longer than the run: only the savepoint can hold the offsets
    wait_for("the first batch enriched", lambda: sum(_enriched(kafka_broker, topics).values()) >= n1,
             240, proc)
    _stop(proc, log)
    saved = latest_checkpoint(tmp_path / "ckpt")
    assert saved is not None and saved.parent.name == SAVEPOINTS_SUBDIR, saved
    assert "with a savepoint" in log.read_text()

    second, n2 = _impressions(2, 1_700_000_100_000)
    produce(second, kafka_broker, topics)
    proc = _start(cmd, log)
    wait_for("the second batch enriched", lambda: sum(_enriched(kafka_broker, topics).values()) >= n1 + n2,
             240, proc)
    _stop(proc, log)
    counts = _enriched(kafka_broker, topics)
    assert len(counts) == n1 + n2 and max(counts.values()) == 1, counts.most_common(3)
    assert f"restore=latest checkpoint={saved}" in log.read_text()
