"""Benchmark of dedup + realtime features: events/s per slot of the Flink job against the
same topology forwarding bytes and the same decoding and encoding each record
(bench/bare_operators.py: ``bare`` and ``codec``) in the same run, the core's speed
and state size per million entities, online-store lookup latency, and a Flink SQL
OVER-window aggregation for the SQL-vs-Python decision.

The core and state figures come from ~60 events per user and ~150 per item (5k users,
2k items, 300k impressions), so the state holds real histories. The Flink figures time
each job from its first input read to its last output written (broker append times, see
``bench.common.mark_start``), on 100k impressions over an hour and over ``--long-days`` of
event time, feature job and bare twin on the same backlog.

    .venv/bin/python -m bench.features_bench                  # everything (~10 min, 2 cores)
    .venv/bin/python -m bench.features_bench --skip-flink     # core, state, store only

Writes bench/results/features_bench.json.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace

import numpy as np

from bench.bare_operators import bare_command
from bench.common import (
    fresh_topics,
    input_to_output_s,
    kafka_for_bench,
    log_append_time,
    mark_start,
    topic_settings,
    write_result,
)
from streaming.features.online_store import OnlineStore
from streaming.features.pipeline import FeaturePipeline
from streaming.features.spec import FeatureSpec
from streamtrain.kafka_io import TopicsConfig, create_topics
from streamtrain.paths import REPO_ROOT
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

log = logging.getLogger("bench.features")
NOW_MS = 1_800_000_000_000
OUTPUT_ROLES = ("impressions_enriched", "actions_deduped", "features", "dead_letter")


def gen_events(users: int, items: int, impressions: int, seed: int = 3):
    rate = 500.0
    cfg = GeneratorConfig(seed=seed, users=users, items=items, impressions_per_s=rate,
                          duration_s=impressions / rate, malformed_rate=0.0,
                          start_ms=1_700_000_000_000)
    return list(TrafficGenerator(cfg).events())


def core_and_state(users: int, items: int, impressions: int) -> tuple[dict, list]:
    """The engine-free core over generator traffic: events/s, then its memory per entity
    (Python heap, tracemalloc) and per-entity pickled size (what Flink state holds)."""
    events = gen_events(users, items, impressions)
    pipe = FeaturePipeline(FeatureSpec())
    t0 = time.perf_counter()
    half = len(events) // 2
    for ev in events[:half]:
        pipe.update(ev.topic, ev.value, NOW_MS)
    core_s = time.perf_counter() - t0  # speed from the first half (tracemalloc slows the rest)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ev in events[half:]:
        pipe.update(ev.topic, ev.value, NOW_MS)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    states = list(pipe.user.states.values()) + list(pipe.item.states.values())
    pickled = sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states)
    # the heap figure covers everything retained in the second half (entity states and the
    # outputs the pipeline keeps in lists); the per-entity figure is the pickled state
    n = len(states)
    pipe.finish()
    result = {
        "events": len(events), "core_events_per_s": round(half / core_s),
        "entities_live": n, "users_live": len(pipe.user.states), "items_live": len(pipe.item.states),
        "state_pickled_bytes_per_entity": round(pickled / max(n, 1), 1),
        "state_pickled_mb_per_million_entities": round(pickled / max(n, 1), 1),  # bytes x 1e6 / 1e6
        "heap_grown_second_half_mb": round(grown / 2**20, 1),
        "note": "pickled bytes/entity x 1e6 / 1e6 = MB per million entities (Flink keyed state, "
                "24 h of history at this traffic); the Python heap holds ~3-5x the pickled size",
    }
    return result, pipe.features


def store_latency(updates: list, n_lookups: int = 20_000) -> dict:
    spec = FeatureSpec()
    with tempfile.TemporaryDirectory() as tmp:
        store = OnlineStore(tmp)
        t0 = time.perf_counter()
        for i in range(0, len(updates), 1000):
            store.update_many(updates[i:i + 1000])
        write_s = time.perf_counter() - t0
        rng = random.Random(1)
        names = {"user": spec.names("user")[:5], "item": spec.names("item")[:5]}
        lat_latest, lat_asof = [], []
        for _ in range(n_lookups):
            fu = updates[rng.randrange(len(updates))]
            entity = (fu.entity_type, fu.entity_id)
            t0 = time.perf_counter_ns()
            store.get(entity, names[fu.entity_type])
            t1 = time.perf_counter_ns()
            store.get(entity, names[fu.entity_type], as_of_ms=fu.event_time_ms + rng.randrange(60_000))
            lat_asof.append(time.perf_counter_ns() - t1)
            lat_latest.append(t1 - t0)
        store.close()
    pct = lambda xs, q: round(float(np.percentile(xs, q)) / 1000, 1)  # noqa: E731
    return {"updates_written": len(updates), "writes_per_s": round(len(updates) / write_s),
            "get_latest_p50_us": pct(lat_latest, 50), "get_latest_p99_us": pct(lat_latest, 99),
            "get_as_of_p50_us": pct(lat_asof, 50), "get_as_of_p99_us": pct(lat_asof, 99)}


def output_topics(kafka, base: TopicsConfig, name: str) -> tuple[TopicsConfig, dict[str, str]]:
    """``base`` with output topics of the run ``name`` (created, LogAppendTime), and those
    outputs by role."""
    outs = {role: f"{getattr(base, role)}.{name}" for role in OUTPUT_ROLES}
    topics = replace(base, **outs)
    create_topics(kafka, topics)
    log_append_time(kafka, list(outs.values()))
    return topics, outs


# the job as measured: each step's records sorted by event time in the JVM (the default;
# explicit, as the artifacts record it: docs/features.md "Waiting in the JVM")
JOB_SETTINGS = ("features_job.jvm_sort=true",)


def job_flags(kafka, topics: TopicsConfig, name: str, parallelism: int) -> list[str]:
    """The flags of a bounded feature job (or its bare twin) over ``topics``, from the
    earliest offsets, no checkpoints."""
    flags = ["--bounded", "--set", f"kafka.bootstrap={kafka.bootstrap}",
             "--set", "flink.checkpoint_interval_ms=0", "--set", "features_job.start=earliest",
             "--set", f"features_job.group_id=fb-{name}",
             "--set", f"flink.parallelism={parallelism}"]
    for setting in JOB_SETTINGS:  # the twins keep their keyed topology whatever these say
        flags += ["--set", setting]
    for role in topics.NAME_FIELDS:
        flags += ["--set", f"topics.{role}={getattr(topics, role)}"]
    return flags


def backlog(kafka, span: str, seconds: float, impressions: int, users: int,
            items: int) -> tuple[TopicsConfig, int]:
    """Fresh input topics holding ``impressions`` (and their actions) over ``seconds`` of
    event time, headed by start markers; returns them and the event count."""
    cfg = GeneratorConfig(seed=9, users=users, items=items, duration_s=seconds,
                          impressions_per_s=impressions / seconds, malformed_rate=0.0,
                          start_ms=int(time.time() * 1000) - int(seconds * 1000) - 5 * 3600_000)
    events = list(TrafficGenerator(cfg).events())
    base = fresh_topics(kafka, f"fb-{span}")
    topic_settings(kafka, [base.impressions, base.actions], append_time=False)
    mark_start(kafka, [base.impressions, base.actions], events[0].timestamp_ms)
    return base, sum(produce(events, kafka, base).values())


JOBS = ("bare", "codec", "pycodec", "features")  # the three baselines (bench/bare_operators.py KINDS), the job


def flink_run(kafka, base: TopicsConfig, n_in: int, name: str, job: str,
              parallelism: int = 1) -> dict:
    """One bounded run of the feature job (or a baseline: ``job`` bare | codec) over
    ``base``'s inputs into output topics of its own; events/s from first input read to
    last output written."""
    topics, outs = output_topics(kafka, base, name)
    start = [sys.executable, "-m", "streamtrain.cli", "features"] if job == "features" \
        else bare_command("features", job)
    cmd = [*start, *job_flags(kafka, topics, name, parallelism)]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{name} failed: {res.stderr[-2000:]}")
    span, counts = input_to_output_s(kafka, list(outs.values()))
    r = {"job": job, "parallelism": parallelism, "input_events": n_in,
         "outputs": {role: counts[t] for role, t in outs.items()}, "active_s": round(span, 2),
         "events_per_s": round(n_in / span), "wall_s_with_startup": round(wall, 1)}
    print(f"{name}: {r['events_per_s']:,} events/s ({n_in:,} events, {r['active_s']}s "
          f"first input -> last output, {r['wall_s_with_startup']}s with start-up)", flush=True)
    return r


def flink_runs(impressions: int, users: int, items: int, long_days: float,
               parallelism: int = 2) -> dict:
    """The feature job against its baselines (same sources, keying, sinks) in the same run,
    on an hour of event time and on ``long_days`` (same impression count); the hour span
    also at ``parallelism`` (whole-job figures; 1 = skip)."""
    out: dict = {"impressions": impressions, "users": users, "items": items,
                 "long_days": long_days, "settings": list(JOB_SETTINGS), "runs": [],
                 "timing": "first input read (earliest output: a start marker written out) "
                           "-> last output written, broker append times"}
    spans = {"hour": 3600.0} | ({"long": long_days * 86400} if long_days > 0 else {})
    with kafka_for_bench(None) as kafka:
        for span, seconds in spans.items():
            base, n_in = backlog(kafka, span, seconds, impressions, users, items)
            for job in JOBS:
                out["runs"].append(flink_run(kafka, base, n_in, f"{span}-{job}", job) | {"span": span})
            if span == "hour" and parallelism > 1:
                for job in JOBS:
                    out["runs"].append(flink_run(kafka, base, n_in, f"{span}-{job}-p{parallelism}",
                                                 job, parallelism) | {"span": span})
    rate = {(r["span"], r["job"]): r["events_per_s"] for r in out["runs"] if r["parallelism"] == 1}
    if parallelism > 1:
        par = {r["job"]: r["events_per_s"] for r in out["runs"] if r["parallelism"] > 1}
        out["parallelism_scaling"] = {
            "parallelism": parallelism,
            "features": round(par["features"] / rate["hour", "features"], 3),
            "bare": round(par["bare"] / rate["hour", "bare"], 3),
            "codec": round(par["codec"] / rate["hour", "codec"], 3),
            "features_over_bare": round(par["features"] / par["bare"], 3),
            "features_over_codec": round(par["features"] / par["codec"], 3)}
    out["features_over_bare"] = round(rate["hour", "features"] / rate["hour", "bare"], 3)
    out["features_over_codec"] = round(rate["hour", "features"] / rate["hour", "codec"], 3)
    out["features_over_pycodec"] = round(rate["hour", "features"] / rate["hour", "pycodec"], 3)
    if "long" in spans:
        out["features_over_bare_long"] = round(rate["long", "features"] / rate["long", "bare"], 3)
        out["features_over_codec_long"] = round(rate["long", "features"] / rate["long", "codec"], 3)
        out["features_long_over_hour"] = round(rate["long", "features"] / rate["hour", "features"], 3)
        out["bare_long_over_hour"] = round(rate["long", "bare"] / rate["hour", "bare"], 3)
    return out


def flink_sql_over_window(rows: int) -> dict:
    """Per-user counts over a 1 h RANGE OVER window in Flink SQL (JVM, datagen source)."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", "1")
    t_env.execute_sql(f"""CREATE TABLE ev (user_id BIGINT, ts AS LOCALTIMESTAMP,
        WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('connector' = 'datagen',
        'number-of-rows' = '{rows}', 'rows-per-second' = '100000000',
        'fields.user_id.min' = '1', 'fields.user_id.max' = '50000')""")
    t_env.execute_sql("CREATE TABLE sink (user_id BIGINT, n BIGINT) WITH ('connector' = 'blackhole')")
    t0 = time.monotonic()
    t_env.execute_sql("""INSERT INTO sink SELECT user_id, COUNT(*) OVER (PARTITION BY user_id
        ORDER BY ts RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) FROM ev""").wait()
    wall = time.monotonic() - t0
    return {"rows": rows, "wall_s_incl_startup": round(wall, 1),
            "rows_per_s_incl_startup": round(rows / wall)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--items", type=int, default=2_000)
    p.add_argument("--impressions", type=int, default=300_000, help="core/state run")
    p.add_argument("--flink-impressions", type=int, default=100_000)
    p.add_argument("--flink-users", type=int, default=5_000)
    p.add_argument("--flink-items", type=int, default=1_000)
    p.add_argument("--long-days", type=float, default=180.0,
                   help="event-time span of the long-span Flink scenario (0 = skip it)")
    p.add_argument("--parallelism", type=int, default=2,
                   help="also run the Flink jobs on the hour span at this parallelism (1 = skip)")
    p.add_argument("--skip-sql", action="store_true")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    p.add_argument("--skip-flink", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    result: dict = {}
    core, updates = core_and_state(args.users, args.items, args.impressions)
    result["core"] = core
    print("core:", core, flush=True)
    result["online_store"] = store_latency(updates[:100_000])
    print("online store:", result["online_store"], flush=True)
    if not args.skip_flink:
        result["flink_job"] = flink_runs(args.flink_impressions, args.flink_users,
                                         args.flink_items, args.long_days, args.parallelism)
        fj = result["flink_job"]
        print(f"flink job (parallelism 1 = one slot): features / codec baseline = "
              f"{fj['features_over_codec']}, / bare = {fj['features_over_bare']}, / codec keyed in "
              f"Python = {fj['features_over_pycodec']}; long / hour span: "
              f"{fj.get('features_long_over_hour')}; parallelism scaling: "
              f"{fj.get('parallelism_scaling')}", flush=True)
    if not args.skip_flink and not args.skip_sql:
        try:
            result["flink_sql_over_window"] = flink_sql_over_window(1_000_000)
            print("flink sql over window:", result["flink_sql_over_window"], flush=True)
        except Exception as exc:  # the SQL figure is a side measurement: report, do not fail
            result["flink_sql_over_window"] = {"error": str(exc)[:500]}
            print("flink sql over window failed:", str(exc)[:300], flush=True)
    path = write_result("features_bench" + (f"_{args.tag}" if args.tag else ""), result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
