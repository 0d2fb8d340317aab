"""Benchmark of dedup + realtime features: events/s per slot of the Flink job against the
same topology forwarding bytes (``--bare``) in the same run, the core's speed and state size
per million entities, online-store lookup latency, and a Flink SQL OVER-window aggregation
for the SQL-vs-Python decision.

    .venv/bin/python -m bench.features_bench                  # everything (~2-3 min, 2 cores)
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

import numpy as np

from bench.common import fresh_topics, kafka_for_bench, write_result
from streaming.features.online_store import OnlineStore
from streaming.features.pipeline import FeaturePipeline
from streaming.features.spec import FeatureSpec
from streamtrain.paths import REPO_ROOT
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

log = logging.getLogger("bench.features")
NOW_MS = 1_800_000_000_000


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


def flink_runs(impressions: int) -> dict:
    events = gen_events(50_000, 5_000, impressions, seed=9)
    out = {"events": len(events)}
    with kafka_for_bench(None) as kafka:
        for name, flags in (("startup_empty", ["--bare"]), ("bare", ["--bare"]), ("features", [])):
            topics = fresh_topics(kafka, f"fb-{name}")
            if name != "startup_empty":
                produce(events, kafka, topics)
            cmd = [sys.executable, "-m", "streamtrain.cli", "features", "--bounded", *flags,
                   "--set", f"kafka.bootstrap={kafka.bootstrap}", "--set", "flink.checkpoint_interval_ms=0",
                   "--set", "features_job.start=earliest", "--set", f"features_job.group_id=fb-{name}"]
            for role in topics.NAME_FIELDS:
                cmd += ["--set", f"topics.{role}={getattr(topics, role)}"]
            t0 = time.monotonic()
            res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
            wall = time.monotonic() - t0
            if res.returncode != 0:
                raise RuntimeError(f"{name} failed: {res.stderr[-2000:]}")
            out[f"{name}_wall_s"] = round(wall, 1)
    startup = out["startup_empty_wall_s"]
    for name in ("bare", "features"):
        out[f"{name}_events_per_s_incl_startup"] = round(len(events) / out[f"{name}_wall_s"])
        out[f"{name}_events_per_s"] = round(len(events) / max(0.1, out[f"{name}_wall_s"] - startup))
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
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--impressions", type=int, default=150_000, help="core/state run")
    p.add_argument("--flink-impressions", type=int, default=30_000)
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
        result["flink_job"] = flink_runs(args.flink_impressions)
        print("flink job (parallelism 1 = one slot):", result["flink_job"], flush=True)
        try:
            result["flink_sql_over_window"] = flink_sql_over_window(1_000_000)
            print("flink sql over window:", result["flink_sql_over_window"], flush=True)
        except Exception as exc:  # the SQL figure is a side measurement: report, do not fail
            result["flink_sql_over_window"] = {"error": str(exc)[:500]}
            print("flink sql over window failed:", str(exc)[:300], flush=True)
    path = write_result("features_bench", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
