"""The feature job and the joiner on a real Flink session cluster (PyFlink's bundled
distribution, `streamtrain flink start`), submitted as users do (`streamtrain submit`, i.e.
`flink run -py`), both unbounded, the joiner reading the feature job's outputs. One story,
to keep the cluster's start-up cost to one:

1. the generator's first part goes in: samples come out (both jobs run on the cluster);
2. the joiner is stopped with a savepoint (`flink stop --savepointPath`), the second part
   goes in while it is down, and it is resubmitted from the savepoint (`flink run -s`) with
   a changed, compatible config (an upgrade);
3. the TaskManager is SIGKILLed while the third part is being sent (paced, mid-stream) and a
   new one is started (`streamtrain flink start`): both jobs recover from their checkpoints.

Then every impression has exactly one final sample and every label came out. The joiner
writes with ``exactly_once`` (samples read ``read_committed``), so no sample is there twice;
the feature job is at least once, and the copies it writes again after the crash (the
replayed epoch, far shorter in event time than the joiner's window) are absorbed by the
joiner's window."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from schemas import FLAG_LATE_CORRECTION, Action, Impression, Sample, codec_for
from streamtrain.cli.flink import FlinkCluster, FlinkClusterConfig
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, make_consumer
from streamtrain.local_kafka import free_port
from streamtrain.paths import REPO_ROOT
from tests.helpers.joiner_jobs import expected_keys, keep_forever, read_topic, wait_for
from traffic.generator import Event, GeneratorConfig, TrafficGenerator
from traffic.producer import produce

WINDOW_MS = 60_000


def _cli(*args: str, timeout_s: float = 180) -> str:
    res = subprocess.run([sys.executable, "-m", "streamtrain.cli", *args], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=timeout_s)
    assert res.returncode == 0, f"streamtrain {args[0]} {args[1]}: {res.stdout[-3000:]}{res.stderr[-3000:]}"
    return res.stdout


def _cluster(work: Path) -> tuple[FlinkCluster, list[str]]:
    """A cluster on free ports under ``work`` and the ``--set`` flags that name it."""
    rest, rpc = free_port(), free_port()
    while rpc == rest:
        rpc = free_port()
    cfg = FlinkClusterConfig(dir=str(work / "flink"), rest_port=rest, rpc_port=rpc,
                             taskmanager_memory="1600m")
    sets = [f"flink_cluster.dir={cfg.dir}", f"flink_cluster.rest_port={rest}",
            f"flink_cluster.rpc_port={rpc}", f"flink_cluster.taskmanager_memory={cfg.taskmanager_memory}"]
    return FlinkCluster(cfg), [a for s in sets for a in ("--set", s)]


def _job_settings(kafka: KafkaConfig, topics: TopicsConfig, work: Path) -> dict[str, list[str]]:
    common = [f"kafka.bootstrap={kafka.bootstrap}", "flink.checkpoint_interval_ms=2000"]
    common += [f"topics.{role}={getattr(topics, role)}" for role in
               ("impressions", "actions", "samples", "dead_letter", "features",
                "impressions_enriched", "actions_deduped")]
    features = common + [f"features_job.checkpoint_dir={work / 'features-chk'}",
                         f"features_job.group_id=f-{topics.features}", "features_job.start=earliest"]
    join = common + [f"joiner_job.checkpoint_dir={work / 'joiner-chk'}",
                     f"joiner_job.kv_dir={work / 'joiner-kv'}", "joiner_job.start=earliest",
                     f"joiner_job.group_id=j-{topics.samples}", "joiner_job.buckets=16",
                     "joiner_job.delivery=exactly_once", f"joiner.window_ms={WINDOW_MS}",
                     "joiner.kv_ttl_ms=86400000", "joiner.stall_policy=off",
                     # the joiner reads what the feature job writes
                     f"topics.impressions={topics.impressions_enriched}",
                     f"topics.actions={topics.actions_deduped}"]
    return {name: [a for s in sets for a in ("--set", s)]
            for name, sets in (("features", features), ("join", join))}


def _flush(t_ms: int) -> list[Event]:
    """One event far ahead in event time on both inputs: every window closes."""
    imp = Impression("flush", 10**9, 10**9, t_ms, [], [], [])
    act = Action("flush", 10**9, 10**9, "click", t_ms)
    return [Event("impressions", b"flush", codec_for(Impression).encode(imp), t_ms, t_ms),
            Event("actions", b"flush", codec_for(Action).encode(act), t_ms, t_ms)]


def _records(kafka: KafkaConfig, topic: str) -> int:
    """How many records a topic holds (the sum of its partitions' end offsets)."""
    from kafka import TopicPartition

    consumer = make_consumer(kafka, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def _samples(kafka: KafkaConfig, topics: TopicsConfig) -> list[Sample]:
    out = [codec_for(Sample).decode(r.value)
           for r in read_topic(kafka, topics.samples, committed=True, timeout_s=20)]
    return [s for s in out if s.request_id != "flush"]


def test_flink_cluster_conf_runs_the_jobs_python_and_shares_pemja(tmp_path):
    cluster = FlinkCluster(FlinkClusterConfig(dir=str(tmp_path), rest_port=18123, rpc_port=16999,
                                              slots=3, settings=("heartbeat.timeout=20000",)))
    conf = dict(line.split(": ", 1) for line in cluster.write_conf().read_text().splitlines()
                if not line.startswith("#"))
    assert conf["rest.port"] == '"18123"' and conf["jobmanager.rpc.port"] == '"16999"'
    assert conf["taskmanager.numberOfTaskSlots"] == '"3"' and conf["heartbeat.timeout"] == '"20000"'
    assert conf["python.executable"] == f'"{sys.executable}"'
    assert conf["execution.checkpointing.savepoint-dir"] == f'"{(tmp_path / "savepoints").as_uri()}"'
    assert "--add-opens" in conf["env.java.opts.all"]
    assert "pemja." in conf["classloader.parent-first-patterns.additional"]
    jars = {p.name for p in (tmp_path / "lib").iterdir()}
    assert any(j.startswith("flink-dist-") for j in jars) and any(j.startswith("flink-python-") for j in jars)
    assert cluster.env()["FLINK_CONF_DIR"] == str(tmp_path / "conf")


def test_flink_submit_runs_flink_run_py_with_the_jar_savepoint_and_job_flags(tmp_path, monkeypatch):
    cluster = FlinkCluster(FlinkClusterConfig(dir=str(tmp_path), rest_port=18124))
    calls = []
    monkeypatch.setattr(cluster, "flink", lambda *a, **kw: calls.append(a) or
                        "Job has been submitted with JobID " + "ab" * 16)
    assert cluster.submit("join", ["--set", "joiner.window_ms=1000"], savepoint="file:/sp/x") == "ab" * 16
    args = calls[0]
    assert args[:4] == ("run", "-m", "localhost:18124", "-d")
    assert args[args.index("-py") + 1].endswith("streaming/joiner/job.py")
    assert args[args.index("-pyexec") + 1] == sys.executable
    assert "flink-sql-connector-kafka" in args[args.index("-j") + 1]
    assert args[args.index("-s") + 1] == "file:/sp/x"
    assert args[args.index("--"):] == ("--", "--no-jar", "--set", "joiner.window_ms=1000")


def test_flink_cluster_config_names_a_bad_value():
    from streamtrain.config import ConfigError

    with pytest.raises(ConfigError, match="flink_cluster.rpc_port"):
        FlinkClusterConfig(rest_port=8081, rpc_port=8081)


@pytest.mark.integration
def test_flink_cluster_jobs_survive_savepoint_resubmit_and_taskmanager_loss(kafka_broker, topics,
                                                                             tmp_path):
    start = int(time.time() * 1000) - 3 * 3600_000
    gen = TrafficGenerator(GeneratorConfig(seed=5, duration_s=300, impressions_per_s=6,
                                           malformed_rate=0.0, start_ms=start, base_ctr=0.2,
                                           click_delay_median_s=20, conversion_delay_median_s=120,
                                           max_delay_s=600))
    events = list(gen.events())
    a, b = len(events) * 4 // 10, len(events) * 6 // 10
    c = max(i for i, ev in enumerate(events) if ev.topic == "impressions") + 1  # then the tail
    imps, labels = expected_keys(events)
    assert len(imps) > 1500 and len(labels) > 300
    keep_forever(kafka_broker, topics)
    cluster, cluster_args = _cluster(tmp_path)
    jobs = _job_settings(kafka_broker, topics, tmp_path)
    producer: threading.Thread | None = None
    try:
        _cli("flink", "start", *cluster_args)
        produce(events[:a], kafka_broker, topics)
        # 1. both jobs on the cluster (submitted side by side: each client is a JVM + Python)
        submitted: dict[str, str] = {}

        def submit(name: str, *extra: str) -> None:
            submitted[name] = _cli("submit", name, *cluster_args, *jobs[name], *extra)
        threads = [threading.Thread(target=submit, args=(n,)) for n in ("features", "join")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(submitted) == {"features", "join"}, "a submission failed (see the output above)"
        assert {j["name"] for j in cluster.jobs() if j["state"] == "RUNNING"} >= \
            {"streamtrain-features", "streamtrain-joiner"}
        wait_for("samples from the first part", lambda: len(_samples(kafka_broker, topics)) > 0, 150)

        # 2. stop the joiner with a savepoint, send the second part, resume from the savepoint
        out = _cli("flink", "stop-job", "join", "--savepoint-dir", str(tmp_path / "sp"), *cluster_args)
        savepoint = out.strip().splitlines()[-1]
        assert re.match(r"file:.*savepoint-", savepoint), out
        assert not any(j["name"] == "streamtrain-joiner" and j["state"] == "RUNNING" for j in cluster.jobs())
        produce(events[a:b], kafka_broker, topics)
        seen = len(_samples(kafka_broker, topics))
        # an upgrade as users make one: a changed, compatible setting, state from the savepoint
        _cli("submit", "join", "--savepoint", savepoint, *cluster_args, *jobs["join"],
             "--set", "flink.bundle_size=500", "--set", "joiner_job.log_interval_s=10")
        wait_for("samples after the resubmission", lambda: len(_samples(kafka_broker, topics)) > seen, 120)

        # 3. the TaskManager dies mid-stream; a new one takes over, the jobs recover
        def third_part() -> None:  # paced (10 event seconds a second), then the labels' tail
            produce(events[b:c], kafka_broker, topics, speedup=10.0)
            produce(events[c:] + _flush(start + 4 * 3600_000), kafka_broker, topics)
        producer = threading.Thread(target=third_part, daemon=True)
        producer.start()
        sent = sum(1 for ev in events[:b] if ev.topic == "impressions")
        wait_for("part of the third part sent (the crash comes mid-stream)",
                  lambda: _records(kafka_broker, topics.impressions) > sent + 100, 60)
        tm = cluster.pid("taskmanager")
        assert tm is not None
        os.kill(tm, signal.SIGKILL)
        _cli("flink", "start", *cluster_args)
        assert cluster.pid("taskmanager") not in (None, tm)

        missing: dict[str, list] = {}

        def complete() -> bool:
            out = _samples(kafka_broker, topics)
            got = {(s.request_id, s.item_id, t) for s in out for t in s.label_types}
            missing.update(impressions=sorted(imps - {(s.request_id, s.item_id) for s in out}),
                           labels=sorted(labels - got))
            return not (missing["impressions"] or missing["labels"])
        try:
            wait_for("every impression and label in the samples", complete, 150)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {len(missing['impressions'])} impressions missing "
                                 f"{missing['impressions'][:5]}, {len(missing['labels'])} labels "
                                 f"missing {missing['labels'][:5]}; status {cluster.status()}") from None
        out_samples = _samples(kafka_broker, topics)
    finally:
        if producer is not None:
            producer.join(60)
        cluster.stop()
    assert cluster.pid("jobmanager") is None and cluster.pid("taskmanager") is None
    finals = Counter((s.request_id, s.item_id) for s in out_samples
                     if not s.flags & FLAG_LATE_CORRECTION)
    assert set(finals) == imps, "every impression has a final sample"
    twice = {k: n for k, n in finals.items() if n > 1}
    assert not twice, f"exactly one final sample per impression: {sorted(twice)[:5]}"
    same = Counter((s.request_id, s.item_id, s.flags, tuple(s.label_types)) for s in out_samples)
    assert max(same.values()) == 1, "exactly once: no sample twice"
    got = {(s.request_id, s.item_id, t) for s in out_samples for t in s.label_types}
    assert got == labels, "no label lost, none made up"
