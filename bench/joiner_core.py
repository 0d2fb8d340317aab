"""Join core operations/s (engine-free, one core): impressions with 26-slot features, 10%
clicked (some later than the window, served from the rocksdict KV), watermark advances;
the HashQueue alone as a reference.

    python -m bench.joiner_core [--impressions 200000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from bench.common import write_result
from schemas.records import Action, Impression
from streaming.joiner import END_OF_TIME, HashQueue, JoinCore, JoinerConfig

SLOTS = 26


def make_stream(n: int, seed: int = 1):
    rng = random.Random(seed)
    imps, acts = [], []
    for i in range(n):
        t = 1_700_000_000_000 + i * 10  # 100 impressions per event-time second
        imps.append(Impression(f"r{i}", rng.randrange(1, 10**6), rng.randrange(1, 10**5), t,
                               list(range(SLOTS)), [rng.getrandbits(63) for _ in range(SLOTS)],
                               [rng.random() for _ in range(4)]))
        if rng.random() < 0.1:
            delay = int(rng.lognormvariate(10, 1.5))  # median ~22 s, tail of hours
            acts.append(Action(f"r{i}", imps[-1].user_id, imps[-1].item_id, "click", t + delay))
    return imps, sorted(acts, key=lambda a: a.event_time_ms)


def bench_core(imps, acts, window_ms: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        core = JoinCore(JoinerConfig(window_ms=window_ms, kv_path=f"{tmp}/kv", stall_policy="off"))
        ai = 0
        t0 = time.perf_counter()
        for k, imp in enumerate(imps):
            core.on_impression(imp, imp.event_time_ms)
            while ai < len(acts) and acts[ai].event_time_ms <= imp.event_time_ms:
                core.on_action(acts[ai], imp.event_time_ms)
                ai += 1
            if k % 100 == 0:
                core.advance(imp.event_time_ms)
        for a in acts[ai:]:
            core.on_action(a, a.event_time_ms)
        core.advance(END_OF_TIME)
        secs = time.perf_counter() - t0
        m = core.metrics
        core.close()
    events = len(imps) + len(acts)
    return {"window_ms": window_ms, "events": events, "seconds": round(secs, 3),
            "events_per_s": round(events / secs), "late_corrections": m.late_corrections,
            "joined_labels": m.joined_labels, "kv_size_end": m.kv_size}


def bench_hash_queue(n: int, skewed: bool = False) -> dict:
    """``skewed``: two partitions, one an hour of event time ahead of the other, pushed
    alternately (every second deadline arrives out of order and takes the heap lane)."""
    q: HashQueue[str, int] = HashQueue(max_entries=n // 2)
    keys = [f"r{i}|7" for i in range(n)]
    ahead = 3_600_000 if skewed else 0
    t0 = time.perf_counter()
    for i, k in enumerate(keys):
        q.push(k, i, i + (ahead if i % 2 else 0))
    t_push = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in keys:
        q.get(k)
    t_get = time.perf_counter() - t0
    t0 = time.perf_counter()
    expired = sum(1 for _ in q.expire(n + ahead))
    t_exp = time.perf_counter() - t0
    return {"push_per_s": round(n / t_push), "lookup_per_s": round(n / t_get),
            "expire_per_s": round(expired / t_exp) if expired else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impressions", type=int, default=200_000)
    args = p.parse_args()
    imps, acts = make_stream(args.impressions)
    results = {"impressions": len(imps), "actions": len(acts),
               "core": [bench_core(imps, acts, w) for w in (60_000, 600_000)],
               "hash_queue": bench_hash_queue(1_000_000),
               "hash_queue_skewed": bench_hash_queue(1_000_000, skewed=True)}
    for r in results["core"]:
        print(f"join core window={r['window_ms'] // 1000}s: {r['events_per_s']:,} events/s "
              f"({r['events']:,} events in {r['seconds']}s, late corrections {r['late_corrections']})")
    for name, label in (("hash_queue", "in deadline order"),
                        ("hash_queue_skewed", "two partitions 1 h apart")):
        hq = results[name]
        print(f"HashQueue ({label}): push {hq['push_per_s']:,}/s lookup "
              f"{hq['lookup_per_s']:,}/s expire {hq['expire_per_s']:,}/s")
    print("wrote", write_result("joiner_core", results))


if __name__ == "__main__":
    main()
