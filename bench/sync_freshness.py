"""Trainer-to-replica freshness (side rig): from a synthetic action's event time, stamped
as the trainer's input is generated in process, to a serving replica scoring with the row
that action updated, p50/p99, at a given sparse interval. Not end-to-end freshness: no
Kafka samples topic, feature job or joiner; the live system's traced freshness, stage by
stage, is the replica's ``streamtrain_replica_freshness_seconds`` (docs/sync.md).

Setup: the real trainer trains on a synthetic stream generated in real time (each sample is
stamped with the wall clock when generated = its action's event time) and ticks the
publisher after every batch; the reference replica runs as a separate process
(``streamtrain serve``); a prober reads the replica's /health every 20 ms and notes when
each model version is first served. A sample trained before push ``v`` reaches serving
when the replica first answers with version >= ``v``: freshness = that time - event time.
Not included: the joiner's waiting window and the samples topic hop (they come before the
trainer; see the joiner benchmarks).

    .venv/bin/python -m bench.sync_freshness --interval 5 --duration 40
    .venv/bin/python -m bench.sync_freshness --interval 60 --duration 200
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

from bench.common import fresh_topics, kafka_for_bench, write_result
from streamtrain.local_kafka import free_port
from sync.config import PublisherConfig
from sync.publisher import ModelPublisher
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer

MODEL = ModelConfig(slots=tuple(range(8)), dim=16, dense_dim=0, heads=("click",), hidden=(64, 32))


def start_replica(kafka, topics, dump_dir: str, port: int) -> subprocess.Popen:
    sets = [f"kafka.bootstrap={kafka.bootstrap}", f"topics.model_deltas={topics.model_deltas}",
            f"topics.model_dense={topics.model_dense}", f"topics.dead_letter={topics.dead_letter}",
            "serve.model=ctr", f"serve.dump_dir={dump_dir}", f"serve.port={port}",
            "serve.poll_interval_ms=50"]
    cmd = [sys.executable, "-m", "streamtrain.cli", "serve"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"STREAMTRAIN_STATE_DIR": dump_dir})


def probe(port: int, seen: dict[int, float], stop: threading.Event) -> None:
    """First wall-clock time each version is served."""
    url = f"http://127.0.0.1:{port}/health"
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                v = json.loads(resp.read()).get("version")
            now = time.time()
            if v is not None and v not in seen:
                for old in range(max(seen, default=v - 1) + 1, v + 1):
                    seen.setdefault(old, now)
        except OSError:
            pass
        stop.wait(0.02)


def run(interval: float, duration: float, rate: int, batch: int, kafka) -> dict:
    topics = fresh_topics(kafka, f"bench-fresh-{int(interval)}")
    dump_dir = tempfile.mkdtemp(prefix="bench-fresh-")
    trainer = Trainer(MODEL, TableConfig(dim=16), TrainerConfig(batch_size=batch, device="cpu"))
    stream = SyntheticStream(num_slots=8, users=20000, items=5000, vocab=1000, seed=0)
    builder = BatchBuilder(MODEL)
    trainer.train_batch(builder.build(stream.take(batch)))
    pub = ModelPublisher(PublisherConfig(model="ctr", sparse_interval_s=interval,
                                         dump_dir=f"{dump_dir}/dumps"), kafka, topics, trainer)
    pub.tick()  # first dump, so the replica can bootstrap
    port = free_port()
    replica = start_replica(kafka, topics, f"{dump_dir}/dumps", port)
    seen: dict[int, float] = {}
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(port, seen, stop), daemon=True)
    prober.start()
    deadline = time.monotonic() + 120
    while pub.version not in seen and time.monotonic() < deadline:
        time.sleep(0.1)  # the replica process is starting (imports torch)
    events: list[tuple[np.ndarray, int]] = []  # (event times, version that carries them)
    pushes = []
    t_end = time.monotonic() + duration
    next_at = time.monotonic()
    try:
        while time.monotonic() < t_end:
            now = time.time()
            samples = stream.take(batch)
            stamps = now - (batch - 1 - np.arange(batch)) / rate  # generated over the last batch/rate s
            for s, t in zip(samples, stamps):
                s.event_time_ms = s.emit_time_ms = int(t * 1000)
            trainer.train_batch(builder.build(samples))
            events.append((stamps, pub.version + 1))
            push = pub.tick()
            if push is not None:
                pushes.append({"version": push.version, "rows": push.rows, "bytes": push.bytes,
                               "publish_s": push.collect_s + push.encode_s + push.send_s})
            next_at += batch / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        final = pub.version
        wait_until = time.monotonic() + 30
        while max(seen, default=0) < final and time.monotonic() < wait_until:
            time.sleep(0.05)
    finally:
        stop.set()
        prober.join()
        replica.terminate()
        replica.wait(timeout=30)
        pub.close()
    fresh = np.concatenate([seen[v] - st for st, v in events if v in seen])
    late = sum(len(st) for st, v in events if v not in seen)
    return {"sparse_interval_s": interval, "duration_s": duration, "samples_per_s": rate,
            "samples": int(len(fresh)), "samples_not_served_in_run": int(late),
            "pushes": len(pushes), "freshness_p50_s": float(np.percentile(fresh, 50)),
            "freshness_p99_s": float(np.percentile(fresh, 99)),
            "freshness_max_s": float(fresh.max()), "freshness_mean_s": float(fresh.mean()),
            "mean_push_bytes": float(np.mean([p["bytes"] for p in pushes])) if pushes else 0.0,
            "mean_push_rows": float(np.mean([p["rows"] for p in pushes])) if pushes else 0.0,
            "delta_bytes_per_min": float(sum(p["bytes"] for p in pushes) / duration * 60),
            "mean_publish_s": float(np.mean([p["publish_s"] for p in pushes])) if pushes else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--rate", type=int, default=500, help="samples (actions) per second")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with kafka_for_bench(args.bootstrap) as kafka:
        r = run(args.interval, args.duration, args.rate, args.batch, kafka)
    print("trainer-to-replica freshness (side rig, no joiner or samples topic): "
          f"sparse_interval {r['sparse_interval_s']:g}s over {r['duration_s']:g}s, "
          f"{r['samples']} actions, {r['pushes']} pushes: freshness p50 {r['freshness_p50_s']:.2f}s "
          f"p99 {r['freshness_p99_s']:.2f}s (max {r['freshness_max_s']:.2f}s); "
          f"{r['delta_bytes_per_min'] / 1e6:.2f} MB of deltas per minute")
    path = write_result(f"sync_freshness_{int(args.interval)}s", r)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
