"""The joiner job end to end on the local MiniCluster (Kafka in -> Kafka out), against two
baselines of the same shape (two Kafka sources, connect, key by join bucket, a keyed
co-process function, Kafka sink: bench/bare_operators.py) in the same run: ``bare``
forwards bytes, ``codec`` decodes each record and encodes what it writes (an impression
as a Sample without labels; issue 15's baseline: "the same sources, sinks, decode and
encode"). Two event-time spans of the same event count (an hour, and ``--long-days``),
plus the join latency from action to sample written (policy ``early``, live paced traffic).

Throughput: every job reads the same backlog (parallelism 1 = one slot; the hour span is
also run at ``--parallelism``, both jobs, figures for the whole job); events/s = input
events / (first input read -> last output written). The first input read is the broker
append time of the earliest output: an undecodable marker heads every input partition
(``bench.common.mark_start``) and is written out as soon as it is read (dead-lettered by
the joiner, forwarded by the bare job); the last output is the latest append time on the
job's sample and dead-letter topics (both LogAppendTime).
So the joiner's waiting window (nothing is emitted before it passes) is inside the clock,
as is the bare job's; the JVM/Python start-up is not. Inputs keep CreateTime = event time.

    python -m bench.joiner_job [--impressions 100000] [--mode thread|process] [--bundle 1000]
        [--long-days 180] [--skip-latency]
        [--set joiner_job.state_backend=rocksdb --tag rocksdb]   # any setting, every job
        [--python-gc off --tag gcoff]   # CPython's collector defaults (streaming/python_gc.py)

Every run records its Python functions' garbage collections (``python_gc``).
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

from bench.bare_operators import bare_command
from bench.common import (
    fresh_topics,
    input_to_output_s,
    kafka_for_bench,
    log_append_time,
    mark_start,
    python_gc_env,
    read_python_gc,
    topic_settings,
    write_result,
)
from schemas import Sample, codec_for
from streamtrain.kafka_io import TopicsConfig, create_topics, read_all
from streamtrain.paths import REPO_ROOT
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

JOBS = ("bare", "codec", "pycodec", "joiner")  # the three baselines (bench/bare_operators.py KINDS), the job


def _cmd(kafka, topics, work: Path, args, *extra: str, job: str = "joiner") -> list[str]:
    start = [sys.executable, "-m", "streamtrain.cli", "join"] if job == "joiner" \
        else bare_command("join", job)
    cmd = [*start,
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


def throughput(kafka, topics, work, args, n_in: int, job: str, parallelism: int = 1) -> dict:
    extra = ["--bounded", "joiner.window_ms=10000", f"flink.parallelism={parallelism}"]
    stats = work / "python_gc.jsonl"
    t0 = time.monotonic()
    res = subprocess.run(_cmd(kafka, topics, work, args, *extra, job=job), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=900,
                         env=python_gc_env(stats, args.python_gc))
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    span, counts = input_to_output_s(kafka, [topics.samples, topics.dead_letter])
    return {"job": job, "parallelism": parallelism, "input_events": n_in,
            "output_records": counts[topics.samples], "dead_letters": counts[topics.dead_letter],
            "active_s": round(span, 2), "events_per_s": round(n_in / span),
            "wall_s_with_startup": round(wall, 1), "python_gc": read_python_gc(stats)}


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


def backlog(kafka, span: str, n_impressions: int, long_days: float) -> tuple[TopicsConfig, int]:
    """Fresh input topics holding ``n_impressions`` (and their actions) over an hour or
    over ``long_days``, headed by start markers; returns them and the event count."""
    base = fresh_topics(kafka, f"joinerbench-{span}")
    seconds = 3600.0 if span == "hour" else long_days * 86400
    now = int(time.time() * 1000)
    gen = TrafficGenerator(GeneratorConfig(seed=1, duration_s=seconds,
                                           impressions_per_s=n_impressions / seconds,
                                           malformed_rate=0.0),
                           now_ms=now - int(seconds * 1000) - 3600_000)
    events = list(gen.events())
    topic_settings(kafka, [base.impressions, base.actions], append_time=False)
    mark_start(kafka, [base.impressions, base.actions], events[0].timestamp_ms)
    sent = produce(events, kafka, base)
    return base, sum(sent.values())


def run_job(kafka, base: TopicsConfig, work: Path, args, n_in: int, span: str,
            job: str, parallelism: int = 1) -> dict:
    name = f"{span}-{job}" + (f"-p{parallelism}" if parallelism > 1 else "")
    topics = replace(base, samples=f"{base.samples}.{name}",
                     dead_letter=f"{base.dead_letter}.{name}")
    create_topics(kafka, topics)
    log_append_time(kafka, [topics.samples, topics.dead_letter])
    r = throughput(kafka, topics, work / name, args, n_in, job, parallelism) | {"span": span}
    print(f"{r['job']} ({span} span, parallelism {parallelism}): {r['events_per_s']:,} events/s "
          f"({n_in:,} events, {r['output_records']:,} out, {r['active_s']}s first input -> "
          f"last output, {r['wall_s_with_startup']}s with start-up)", flush=True)
    return r


def job_arguments(p: argparse.ArgumentParser) -> None:
    """The options every joiner job benchmark takes (this one, bench/joiner_cluster.py)."""
    p.add_argument("--impressions", type=int, default=100_000)
    p.add_argument("--mode", default="thread", choices=["thread", "process"])
    p.add_argument("--bundle", type=int, default=1000)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every job (e.g. flink.state_cache_size=1000)")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    p.add_argument("--python-gc", default="tuned", choices=["tuned", "off"],
                   help="the jobs' garbage collector: tuned (streaming/python_gc.py) or "
                        "CPython's defaults; every run records its collections")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    job_arguments(p)
    p.add_argument("--long-days", type=float, default=180.0,
                   help="event-time span of the long-span scenario (0 = skip it)")
    p.add_argument("--parallelism", type=int, default=2,
                   help="also run both jobs on the hour span at this parallelism (1 = skip)")
    p.add_argument("--latency-seconds", type=float, default=30)
    p.add_argument("--latency-rate", type=float, default=300)
    p.add_argument("--skip-latency", action="store_true")
    args = p.parse_args(argv)
    spans = ["hour"] + (["long"] if args.long_days > 0 else [])
    with kafka_for_bench(args.bootstrap) as kafka, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs: list[dict] = []
        for span in spans:
            base, n_in = backlog(kafka, span, args.impressions, args.long_days)
            for job in JOBS:
                runs.append(run_job(kafka, base, work, args, n_in, span, job))
            if span == "hour" and args.parallelism > 1:
                for job in JOBS:
                    runs.append(run_job(kafka, base, work, args, n_in, span, job,
                                        args.parallelism))
        rate = {(r["span"], r["job"]): r["events_per_s"] for r in runs if r["parallelism"] == 1}
        result: dict = {"mode": args.mode, "bundle_size": args.bundle, "parallelism": 1,
                        "python_gc": args.python_gc,
                        "settings": args.settings, "impressions": args.impressions,
                        "long_days": args.long_days, "throughput": runs,
                        "timing": "first input read (earliest output: a start marker written out) "
                                  "-> last output written, broker append times",
                        "joiner_over_bare": round(rate["hour", "joiner"] / rate["hour", "bare"], 3),
                        "joiner_over_codec": round(rate["hour", "joiner"] / rate["hour", "codec"], 3),
                        "joiner_over_pycodec": round(rate["hour", "joiner"] / rate["hour", "pycodec"], 3)}
        print(f"joiner / codec baseline (hour span) = {result['joiner_over_codec']:.2f}; "
              f"joiner / bare = {result['joiner_over_bare']:.2f}; joiner / codec keyed in Python = "
              f"{result['joiner_over_pycodec']:.2f}")
        if "long" in spans:
            result["joiner_over_bare_long"] = round(rate["long", "joiner"] / rate["long", "bare"], 3)
            result["joiner_over_codec_long"] = round(rate["long", "joiner"] / rate["long", "codec"], 3)
            result["joiner_long_over_hour"] = round(rate["long", "joiner"] / rate["hour", "joiner"], 3)
            result["bare_long_over_hour"] = round(rate["long", "bare"] / rate["hour", "bare"], 3)
            print(f"joiner / codec baseline ({args.long_days:g}-day span) = "
                  f"{result['joiner_over_codec_long']:.2f} (/ bare {result['joiner_over_bare_long']:.2f}); "
                  f"long / hour span: joiner {result['joiner_long_over_hour']:.2f}, "
                  f"bare {result['bare_long_over_hour']:.2f}")
        if args.parallelism > 1:
            par = {r["job"]: r["events_per_s"] for r in runs if r["parallelism"] > 1}
            result["parallelism_scaling"] = {
                "parallelism": args.parallelism,
                "joiner": round(par["joiner"] / rate["hour", "joiner"], 3),
                "bare": round(par["bare"] / rate["hour", "bare"], 3),
                "codec": round(par["codec"] / rate["hour", "codec"], 3),
                "joiner_over_bare": round(par["joiner"] / par["bare"], 3),
                "joiner_over_codec": round(par["joiner"] / par["codec"], 3)}
            ps = result["parallelism_scaling"]
            print(f"parallelism {args.parallelism} / 1 (hour span, whole job): joiner "
                  f"{ps['joiner']:.2f}, bare {ps['bare']:.2f}, codec {ps['codec']:.2f}")
        if not args.skip_latency:
            live = fresh_topics(kafka, "joinerlat")
            log_append_time(kafka, [live.samples])
            result["latency"] = latency(kafka, live, work / "lat", args, args.latency_seconds,
                                        args.latency_rate)
            lt = result["latency"]
            print(f"join latency (action -> sample written, early policy, "
                  f"{args.latency_rate:.0f} imp/s live): p50 {lt['p50_ms']} ms, "
                  f"p99 {lt['p99_ms']} ms over {lt['labels']} labels")
        name = f"joiner_job_{args.mode}" + ("" if args.bundle == 1000 else f"_b{args.bundle}") \
            + (f"_{args.tag}" if args.tag else "")
        print("wrote", write_result(name, result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
