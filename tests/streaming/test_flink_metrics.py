"""The Flink jobs' metrics through Flink's Prometheus reporter (``flink.metrics_port``): the
feature job and the joiner run unbounded on the MiniCluster, each in its own process with its
own port (as ``streamtrain up`` runs them), on generator traffic with duplicates, malformed
records and injected bad ones; their ``/metrics`` are scraped until the counters match what
was produced.

The feature job's records wait for the watermark (sorted in the JVM) before its user step
dedups and counts them, so the stream ends with a valid impression and its click three hours
of event time later (the sources stay active; idleness would leave the watermark where the
first input to go idle put it): the watermark then passes every generated record. The bad
records carry event times beyond it: they are dead-lettered only because they do not wait
(``streamtrain.flink.Screen``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from schemas import Action, Impression, codec_for
from streamtrain.local_kafka import free_port
from streamtrain.paths import REPO_ROOT
from tests.helpers.joiner_jobs import features_command, join_command, wait_for
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

pytestmark = pytest.mark.integration

OP = "flink_taskmanager_job_task_operator_"  # operator scope, as the reporter names it
SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")


def scrape(port: int) -> dict[str, float] | None:
    """Every series of ``/metrics`` summed over its labels (subtasks); None while the
    reporter does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if m and not line.startswith("#"):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the job's process group: Python and its JVM
    proc.wait(timeout=30)


START_MS = 1_700_000_000_000
END_MS = START_MS + 3 * 3_600_000  # after every generated event (its actions drain for ~2 h)


def _bad_records(producer, topics) -> None:
    """Missing user id (one impression, one action), absurd timestamp, unknown action type:
    sent at the end of the stream, their event times past every other."""
    imp, act, t = codec_for(Impression), codec_for(Action), END_MS + 3_600_000
    for raw in (imp.encode(Impression("bad-1", 0, 5, t)), imp.encode(Impression("bad-2", 3, 5, 12))):
        producer.send(topics.impressions, value=raw, timestamp_ms=END_MS)
    for raw in (act.encode(Action("bad-3", 3, 5, "teleport", t)), act.encode(Action("bad-4", -1, 5, "click", t))):
        producer.send(topics.actions, value=raw, timestamp_ms=END_MS)
    producer.flush()


def _last_records(producer, topics) -> None:
    """An impression and its click after every generated event: they move the watermark past
    the generated ones (and wait for a later one themselves)."""
    producer.send(topics.impressions, value=codec_for(Impression).encode(
        Impression("last", 3, 5, END_MS)), timestamp_ms=END_MS)
    producer.send(topics.actions, value=codec_for(Action).encode(
        Action("last", 3, 5, "click", END_MS + 1000)), timestamp_ms=END_MS + 1000)
    producer.flush()


def test_flink_jobs_export_their_counters_to_prometheus(kafka_broker, topics, producer, tmp_path):
    gen = TrafficGenerator(GeneratorConfig(seed=5, duration_s=30, impressions_per_s=20,
                                           duplicate_rate=0.05, out_of_order_rate=0.05,
                                           malformed_rate=0.02, start_ms=START_MS))
    events = list(gen.events())
    assert max(ev.timestamp_ms for ev in events if ev.key != b"malformed") < END_MS - 10_000
    produce(events, kafka_broker, topics)
    _bad_records(producer, topics)
    _last_records(producer, topics)
    s = gen.stats
    n_imp = sum(ev.topic == "impressions" for ev in events) + 3
    n_act = sum(ev.topic == "actions" for ev in events) + 3
    # the generator's malformed records are impressions (the counts below rely on it)
    assert n_imp == s["impressions"] + s["duplicate_impressions"] + s["malformed"] + 3
    assert s["duplicate_impressions"] > 0 and s["malformed_zero_timestamp"] > 0

    f_port, j_port = free_port(), free_port()
    while j_port == f_port:
        j_port = free_port()
    features = features_command(kafka_broker, topics, f"flink.metrics_port={f_port}",
                                f"features_job.checkpoint_dir={tmp_path / 'f-chk'}",
                                "features_job.max_restarts=0")
    features.remove("--bounded")
    join = join_command(kafka_broker, topics, tmp_path / "join", f"flink.metrics_port={j_port}",
                        "flink.checkpoint_interval_ms=0", bounded=False)
    procs = [_start(features, tmp_path / "features.log"), _start(join, tmp_path / "join.log")]
    try:
        f_want = {
            "features_user_impressions_in": n_imp, "features_user_actions_in": n_act,
            "features_user_impressions": s["impressions"],
            "features_user_duplicate_impressions": s["duplicate_impressions"],
            "features_user_duplicate_actions": s["duplicate_actions"],
            "features_user_dead_letters": s["malformed"] + 4,
            "features_user_dead_letters_missing_user_id": 2,
            "features_user_dead_letters_unknown_action_type": 1,
            "features_user_dead_letters_absurd_timestamp": 1 + s["malformed_zero_timestamp"],
        }
        j_want = {
            "joiner_impressions": s["impressions"] + s["duplicate_impressions"] + 1,
            "joiner_duplicate_impressions": s["duplicate_impressions"],
            "joiner_unknown_action_types": 1,
            "joiner_dead_letters_missing_user_id": 2,
            "joiner_dead_letters_absurd_timestamp": 1 + s["malformed_zero_timestamp"],
        }
        seen: dict[int, dict[str, float]] = {}

        def matches(port: int, want: dict[str, int]) -> bool:
            got = scrape(port)
            if got is None:
                return False
            seen[port] = got
            return all(got.get(OP + name) == value for name, value in want.items())

        def both() -> bool:
            for proc, name in zip(procs, ("features", "join"), strict=True):
                if proc.poll() is not None:
                    raise AssertionError(f"the {name} job exited (rc={proc.returncode}):\n"
                                         + (tmp_path / f"{name}.log").read_text()[-3000:])
            return matches(f_port, f_want) and matches(j_port, j_want) and settled()

        def settled() -> bool:
            """What the steps emitted agrees, once the input is read and the watermark
            stands still (the gauges of one scrape are read one by one while the job runs):
            every enriched impression published its item's FeatureUpdate, every impression
            the user step passed on published the user's."""
            f, j = seen[f_port], seen[j_port]
            return (f[OP + "features_item_enriched"] > 0 and j[OP + "joiner_joined_labels"] > 0
                    and f[OP + "features_item_feature_updates"] == f[OP + "features_item_enriched"]
                    and f[OP + "features_user_feature_updates"] == f[OP + "features_user_impressions_out"]
                    and f[OP + "features_item_impressions_in"] == f[OP + "features_user_impressions_out"])

        try:
            wait_for("the counters on /metrics", both, 300)
        except AssertionError as exc:
            mine = {port: {k[len(OP):]: v for k, v in got.items()
                           if k.startswith(OP) and k[len(OP):] in {*f_want, *j_want}}
                    for port, got in seen.items()}
            raise AssertionError(f"{exc}; scraped: {mine}") from None
        f = seen[f_port]
        assert 0 < f[OP + "features_user_entities"] and 0 < f[OP + "features_item_entities"]
    finally:
        for proc in procs:
            _kill(proc)
