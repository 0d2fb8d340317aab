"""The joiner job end to end on the local MiniCluster (Kafka in -> Kafka out), against a
bare pass-through of the same shape (two Kafka sources, connect, key by join bucket, a
keyed co-process function that forwards bytes, Kafka sink) in the same run, plus the join
latency from action to sample written (policy ``early``, live paced traffic).

Throughput: both jobs read the same backlog (parallelism 1 = one slot); events/s = input
events / (last - first broker append time of the output; the sample topics use
LogAppendTime), so the JVM/Python start-up is not counted. Latency: broker append time of
each positive sample minus its action's event time (= the time it was produced, paced).

    python -m bench.joiner_job [--impressions 100000] [--mode thread|process] [--bundle 1000]
        [--set joiner_job.state_backend=rocksdb --tag rocksdb]   # any setting, both jobs
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import fresh_topics, kafka_for_bench, write_result
from schemas import Sample, codec_for
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, admin_client, read_all
from streamtrain.paths import REPO_ROOT
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce


def _topic_settings(kafka: KafkaConfig, topics: TopicsConfig) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = admin_client(kafka)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, n, configs={
            "retention.ms": "-1", "message.timestamp.type": "LogAppendTime"})
            for n in topics.names()])
    finally:
        admin.close()


def _cmd(kafka, topics, work: Path, args, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "streamtrain.cli", "join",
           "--set", f"kafka.bootstrap={kafka.bootstrap}",
           "--set", f"joiner_job.checkpoint_dir={work / 'chk'}",
           "--set", f"joiner_job.kv_dir={work / 'kv'}",
           "--set", "joiner_job.start=earliest", "--set", "joiner_job.max_restarts=0",
           "--set", f"joiner_job.group_id=bench-{topics.samples}",
           "--set", f"flink.execution_mode={args.mode}",
           "--set", f"flink.bundle_size={args.bundle}",
           "--set", "joiner.stall_policy=off"]
    for role in ("impressions", "actions", "samples", "dead_letter"):
        cmd += ["--set", f"topics.{role}={getattr(topics, role)}"]
    for e in (*args.settings, *extra):
        cmd += ["--set", e] if "=" in e else [e]
    return cmd


def throughput(kafka, topics, work, args, n_in: int, bare: bool) -> dict:
    extra = ["--bounded", "joiner.window_ms=10000"] + (["--bare"] if bare else [])
    t0 = time.monotonic()
    res = subprocess.run(_cmd(kafka, topics, work, args, *extra), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    out = read_all(kafka, topics.samples, timeout_s=120)
    ts = sorted(r.timestamp for r in out)
    span = max((ts[-1] - ts[0]) / 1000, 1e-3)
    return {"job": "bare" if bare else "joiner", "input_events": n_in, "output_records": len(out),
            "active_s": round(span, 2), "events_per_s": round(n_in / span),
            "wall_s_with_startup": round(wall, 1)}


def latency(kafka, topics, work, args, seconds: float, rate: float) -> dict:
    proc = subprocess.Popen(_cmd(kafka, topics, work, args, "joiner.policy=early",
                                 "joiner.window_ms=600000"),
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # let the job start (reading nothing yet), then produce live traffic paced 1:1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((work / "chk").glob("*/chk-*")):
            time.sleep(1)
        gen = TrafficGenerator(GeneratorConfig(seed=5, duration_s=seconds, impressions_per_s=rate,
                                               speedup=1.0, malformed_rate=0.0, drain=False,
                                               click_delay_median_s=3, base_ctr=0.1),
                               now_ms=int(time.time() * 1000))
        produce(gen.events(), kafka, topics, speedup=1.0)
        time.sleep(5)  # the last actions' samples are written within this
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    codec = codec_for(Sample)
    lat = []
    for r in read_all(kafka, topics.samples, timeout_s=60):
        s = codec.decode(r.value)
        if s.label_types:
            lat.append(r.timestamp - (s.event_time_ms + s.label_delays_ms[-1]))
    a = np.array(lat)
    return {"policy": "early", "impressions_per_s": rate, "seconds": seconds, "labels": len(lat),
            "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
            "p99_ms": float(np.percentile(a, 99)) if len(a) else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impressions", type=int, default=100_000)
    p.add_argument("--mode", default="thread", choices=["thread", "process"])
    p.add_argument("--bundle", type=int, default=1000)
    p.add_argument("--latency-seconds", type=float, default=30)
    p.add_argument("--latency-rate", type=float, default=300)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for both jobs (e.g. flink.state_cache_size=1000)")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    args = p.parse_args()
    with kafka_for_bench(args.bootstrap) as kafka, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = fresh_topics(kafka, "joinerbench")
        _topic_settings(kafka, base)
        rate = 2000.0
        gen = TrafficGenerator(GeneratorConfig(seed=1, duration_s=args.impressions / rate,
                                               impressions_per_s=rate, malformed_rate=0.0),
                               now_ms=int(time.time() * 1000) - 3600_000)
        sent = produce(gen.events(), kafka, base)
        n_in = sum(sent.values())
        runs = []
        for bare in (True, False):
            topics = replace(base, samples=f"{base.samples}.{'bare' if bare else 'join'}")
            from streamtrain.kafka_io import create_topics
            create_topics(kafka, topics)
            _topic_settings(kafka, topics)
            runs.append(throughput(kafka, topics, work / ("bare" if bare else "join"), args,
                                   n_in, bare))
            print(f"{runs[-1]['job']}: {runs[-1]['events_per_s']:,} events/s per slot "
                  f"({n_in:,} events, {runs[-1]['output_records']:,} out, "
                  f"{runs[-1]['active_s']}s active, {runs[-1]['wall_s_with_startup']}s with start-up)")
        ratio = runs[1]["events_per_s"] / runs[0]["events_per_s"]
        print(f"joiner / bare pass-through = {ratio:.2f}")
        result = {"mode": args.mode, "bundle_size": args.bundle, "parallelism": 1,
                  "settings": args.settings,
                  "throughput": runs, "joiner_over_bare": round(ratio, 3)}
        if not args.skip_latency:
            live = fresh_topics(kafka, "joinerlat")
            _topic_settings(kafka, live)
            result["latency"] = latency(kafka, live, work / "lat", args, args.latency_seconds,
                                        args.latency_rate)
            lt = result["latency"]
            print(f"join latency (action -> sample written, early policy, "
                  f"{args.latency_rate:.0f} imp/s live): p50 {lt['p50_ms']} ms, "
                  f"p99 {lt['p99_ms']} ms over {lt['labels']} labels")
        name = f"joiner_job_{args.mode}" + ("" if args.bundle == 1000 else f"_b{args.bundle}") \
            + (f"_{args.tag}" if args.tag else "")
        print("wrote", write_result(name, result))


if __name__ == "__main__":
    main()
