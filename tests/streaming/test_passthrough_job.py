"""The template Flink job on the real MiniCluster against the real broker, fed by the
generator's stream (duplicates, late and malformed records included)."""

import subprocess
import sys
from collections import Counter

import pytest

from schemas import DeadLetter, Impression, codec_for
from streamtrain.kafka_io import read_all
from streamtrain.paths import REPO_ROOT
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

pytestmark = pytest.mark.integration


def test_passthrough_job_moves_good_records_and_dead_letters_malformed_ones(kafka_broker, topics):
    gen = TrafficGenerator(GeneratorConfig(seed=11, duration_s=20, impressions_per_s=50,
                                           malformed_rate=0.03, start_ms=1_700_000_000_000))
    sent = produce(gen.events(), kafka_broker, topics)
    stats = gen.stats
    assert stats["malformed"] > 0
    output = f"{topics.impressions}.checked"
    cmd = [sys.executable, "-m", "streamtrain.cli", "passthrough", "--bounded",
           "--input", topics.impressions, "--output", output,
           "--set", f"kafka.bootstrap={kafka_broker.bootstrap}",
           "--set", f"topics.dead_letter={topics.dead_letter}",
           "--set", "flink.checkpoint_interval_ms=0"]
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    good = stats["impressions"] + stats["duplicate_impressions"]
    out = read_all(kafka_broker, output, expected=good, timeout_s=60)
    assert len(out) == good
    decoded = [codec_for(Impression).decode(r.value) for r in out]
    assert all(d.request_id and d.event_time_ms > 0 for d in decoded)

    dead = [codec_for(DeadLetter).decode(r.value)
            for r in read_all(kafka_broker, topics.dead_letter, expected=stats["malformed"], timeout_s=60)]
    assert len(dead) == stats["malformed"] == sent["impressions"] - good
    assert all(d.stage == "passthrough" and d.source_topic == topics.impressions for d in dead)
    reasons = Counter(d.reason.split(":")[0].split(" (")[0] for d in dead)
    expected = Counter()
    for kind, reason in [("garbage", "undecodable"), ("truncated", "undecodable"),
                         ("missing_request_id", "missing request_id"),
                         ("zero_timestamp", "absurd timestamp"), ("future_timestamp", "timestamp in the future")]:
        expected[reason] += stats[f"malformed_{kind}"]
    assert reasons == +expected
