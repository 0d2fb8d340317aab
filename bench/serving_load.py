"""Serving under load: the replica's ASGI front (``sync.app`` on uvicorn) against the old
standard-library ``http.server`` front, in the same run, while deltas are applied.

Setup: a local broker; a feeder process trains the real trainer (default ``ModelConfig``:
8 slots, 3 dense, 3 heads, FM + MLP 256-128) and publishes a sparse delta every
``--delta-interval`` s (default 60 s, the default ``sync.sparse_interval_s``; the first
one right away); one replica per front runs as its own process (``streamtrain serve``, or
this module with ``--legacy-serve`` for the old front, kept here only as the baseline),
both up for the whole run and both applying the deltas; the load generator (this process;
asyncio + aiohttp, open loop: requests are sent on a fixed schedule whether or not earlier
ones were answered, and latency counts from the scheduled time, so a stalled server cannot
hide its queue) steps through rates for batches of 1 and 64 instances, each rate on each
front back to back, so both fronts meet the same machine. A step is *sustained* when it
answered >= 99% of the offered rate with no error; the figure that matters is the highest
sustained rate with p99 < 20 ms. The replica's CPU time per request is measured too: it
does not depend on what else the machine runs.

    .venv/bin/python -m bench.serving_load                       # ~6 min on 2 cores
    .venv/bin/python -m bench.serving_load --duration 5 --rates1 200,800 --rates64 50
    streamtrain bench serving_load

Writes bench/results/serving_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import fresh_topics, kafka_for_bench, write_result
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from streamtrain.local_kafka import free_port

P99_TARGET_MS = 20.0


# -- the old front (was sync/server.py), the baseline ------------------------------------
def legacy_server(replica: Any, host: str, port: int) -> ThreadingHTTPServer:
    """The stdlib ``http.server`` front the replica had before ``sync.app`` (one thread per
    request, hand-written router, JSON /metrics), unchanged but for the /status alias."""
    from sync.errors import SyncError
    from sync.replica import BadRequest

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                h = replica.health()
                self._send(200 if h["status"] == "ok" else 503, h)
            elif self.path in ("/metrics", "/status"):
                self._send(200, replica.metrics())
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/predict":
                self._send(404, {"error": f"no route {self.path}"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self._send(200, replica.predict(body["instances"]))
            except (ValueError, KeyError, TypeError, BadRequest) as exc:
                self._send(400, {"error": f"bad request: {exc}"})
            except SyncError as exc:
                self._send(503, {"error": str(exc)})

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def legacy_serve(argv: list[str]) -> int:
    """``--legacy-serve --set ...``: the replica behind the old front, until terminated."""
    import signal

    import torch

    from streamtrain import flags
    from sync.config import ReplicaConfig
    from sync.replica import ServingReplica

    p = flags.parser("bench serving_load --legacy-serve", "the old http.server front")
    args = p.parse_args(argv)
    config = flags.load(args, ReplicaConfig, "serve")
    torch.set_num_threads(config.torch_threads)  # as `streamtrain serve`: only the front differs
    replica = ServingReplica(config, flags.load(args, KafkaConfig, "kafka"),
                             flags.load(args, TopicsConfig, "topics"))
    replica.start()
    server = legacy_server(replica, config.host, config.port)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        replica.close()
    return 0


# -- the delta feeder (its own process) ---------------------------------------------------
def feed(bootstrap: str, topics: TopicsConfig, dump_dir: str, interval: float,
         samples_per_push: int, ready: Any, stop: Any, pushes: Any) -> None:
    import torch

    from sync.config import PublisherConfig
    from sync.publisher import ModelPublisher
    from trainer.batch import BatchBuilder
    from trainer.config import ModelConfig, TableConfig, TrainerConfig
    from trainer.synthetic import SyntheticStream
    from trainer.trainer import Trainer

    torch.set_num_threads(1)
    model = ModelConfig()
    trainer = Trainer(model, TableConfig(dim=model.dim), TrainerConfig(batch_size=512, device="cpu"))
    stream = SyntheticStream(num_slots=len(model.slots), dense_dim=model.dense_dim, heads=model.heads,
                             users=20_000, items=5_000, vocab=20_000, seed=0)
    builder = BatchBuilder(model)
    for _ in range(8):
        trainer.train_batch(builder.build(stream.take(512)))
    pub = ModelPublisher(PublisherConfig(model="ctr", sparse_interval_s=interval, dump_dir=dump_dir),
                         KafkaConfig(bootstrap=bootstrap), topics, trainer)
    pub.tick()  # the dump a replica bootstraps from
    ready.set()
    while not stop.is_set():
        for _ in range(max(1, samples_per_push // 512)):
            trainer.train_batch(builder.build(stream.take(512)))
        push = pub.push_sparse()
        pushes.put({"version": push.version, "rows": push.rows, "bytes": push.bytes, "at": time.time()})
        stop.wait(interval)
    pub.close()


# -- the load generator ---------------------------------------------------------------------
def bodies(batch: int, n: int = 64) -> list[bytes]:
    from trainer.config import ModelConfig
    from trainer.synthetic import SyntheticStream

    model = ModelConfig()
    stream = SyntheticStream(num_slots=len(model.slots), dense_dim=model.dense_dim, heads=model.heads,
                             users=20_000, items=5_000, vocab=20_000, seed=1)
    out = []
    for _ in range(n):
        inst = [{"slots": s.slots, "ids": s.ids, "dense": s.dense} for s in stream.take(batch)]
        out.append(json.dumps({"instances": inst}).encode())
    return out


async def _step(url: str, payloads: list[bytes], rate: float, duration: float, timeout_s: float) -> dict:
    import aiohttp

    n = int(rate * duration)
    lat = np.full(n, np.nan)
    errors: dict[str, int] = {}
    versions: set[int] = set()
    conn = aiohttp.TCPConnector(limit=512, force_close=False)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async def one(i: int, at: float) -> None:
            try:
                async with session.post(url, data=payloads[i % len(payloads)], headers=headers) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        errors[f"http {resp.status}"] = errors.get(f"http {resp.status}", 0) + 1
                        return
                    versions.add(json.loads(body)["version"])
                lat[i] = time.perf_counter() - at
            except Exception as exc:  # timeouts, resets: counted, never fatal
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        tasks = []
        t0 = time.perf_counter() + 0.05
        for i in range(n):
            at = t0 + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i, at)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    done = lat[~np.isnan(lat)] * 1000
    pct = (lambda q: round(float(np.percentile(done, q)), 2)) if len(done) else (lambda q: None)
    return {"offered_rps": rate, "requests": n, "ok": int(len(done)), "errors": errors,
            "achieved_rps": round(len(done) / elapsed, 1), "p50_ms": pct(50), "p99_ms": pct(99),
            "p999_ms": pct(99.9), "max_ms": round(float(done.max()), 2) if len(done) else None,
            "versions_seen": sorted(v for v in versions if v is not None)}


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc; 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def one_step(front: str, port: int, pid: int | None, batch: int, payloads: list[bytes], rate: float,
             duration: float) -> dict:
    """One open-loop step. ``server_cpu_ms_per_request`` (the replica's CPU time over the
    step / answered requests) does not depend on what else runs on the machine: 1000 / it
    is the rate one dedicated core could answer."""
    cpu0 = cpu_seconds(pid)
    step = asyncio.run(_step(f"http://127.0.0.1:{port}/predict", payloads, rate, duration, timeout_s=10.0))
    if pid is not None and step["ok"]:
        step["server_cpu_ms_per_request"] = round((cpu_seconds(pid) - cpu0) * 1000 / step["ok"], 3)
    step["load_average_1m"] = round(os.getloadavg()[0], 2)
    step["sustained"] = not step["errors"] and step["ok"] >= 0.99 * step["requests"] and \
        step["achieved_rps"] >= 0.97 * rate
    print(f"   {front:<11} batch {batch:>2} offered {rate:>6.0f}/s: achieved {step['achieved_rps']:>7.1f}/s "
          f"p50 {step['p50_ms']} p99 {step['p99_ms']} p999 {step['p999_ms']} ms "
          f"errors {step['errors'] or 0} versions {step['versions_seen']} "
          f"cpu/request {step.get('server_cpu_ms_per_request')} ms load {step['load_average_1m']}", flush=True)
    return step


def sweep(replicas: dict[str, tuple[int, int]], batch: int, rates: list[float], duration: float) -> dict:
    """For each rate, one step per front (``replicas``: front -> (port, pid)), back to back,
    so the fronts meet the same machine; a front stops at its first saturated step."""
    payloads = bodies(batch)
    steps: dict[str, list[dict]] = {front: [] for front in replicas}
    for rate in rates:
        for front, (port, pid) in replicas.items():
            done = steps[front]
            if done and not done[-1]["sustained"] and (done[-1]["p99_ms"] or 1e9) > 1000:
                continue  # saturated: higher rates only queue more
            done.append(one_step(front, port, pid, batch, payloads, rate, duration))
    return steps


def summary(steps: list[dict]) -> dict:
    ok = [s for s in steps if s["sustained"]]
    fast = [s for s in ok if (s["p99_ms"] or 1e9) < P99_TARGET_MS]
    best = max(fast, key=lambda s: s["offered_rps"], default=None)
    cpu = [s["server_cpu_ms_per_request"] for s in steps if s.get("server_cpu_ms_per_request")]
    return {"server_cpu_ms_per_request": round(float(np.median(cpu)), 3) if cpu else None,
            "one_core_capacity_rps": round(1000 / float(np.median(cpu)), 1) if cpu else None,
            "max_sustained_rps": max((s["achieved_rps"] for s in ok), default=0.0),
            "max_rps_with_p99_under_20ms": best["achieved_rps"] if best else 0.0,
            "at_that_rate": {k: best[k] for k in ("p50_ms", "p99_ms", "p999_ms")} if best else None,
            "errors": sum(sum(s["errors"].values()) for s in steps if s["sustained"])}


# -- orchestration --------------------------------------------------------------------------
def start_replica(front: str, kafka: KafkaConfig, topics: TopicsConfig, dump_dir: str, port: int,
                  state_dir: str) -> subprocess.Popen:
    os.makedirs(state_dir, exist_ok=True)
    sets = [f"kafka.bootstrap={kafka.bootstrap}", f"topics.model_deltas={topics.model_deltas}",
            f"topics.model_dense={topics.model_dense}", f"topics.dead_letter={topics.dead_letter}",
            "serve.model=ctr", f"serve.dump_dir={dump_dir}", f"serve.port={port}"]
    cmd = [sys.executable, "-m", "streamtrain.cli", "serve"] if front == "asgi" else \
        [sys.executable, "-m", "bench.serving_load", "--legacy-serve"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"STREAMTRAIN_STATE_DIR": state_dir})


def wait_up(port: int, proc: subprocess.Popen, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"replica exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
                status = json.loads(resp.read())
            if status.get("dense_version") is not None and status.get("lag_records") == 0:
                return status
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("replica did not come up")


def run_fronts(fronts: list[str], kafka, topics, dump_dir: str, args) -> dict:
    procs: dict[str, subprocess.Popen] = {}
    ports = {front: free_port() for front in fronts}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as state:
        try:
            for front in fronts:
                procs[front] = start_replica(front, kafka, topics, dump_dir, ports[front], f"{state}/{front}")
            before = {front: wait_up(ports[front], procs[front]) for front in fronts}
            print("== replicas up: " + ", ".join(f"{f} on {ports[f]} at version {before[f]['applied_version']}"
                                                  for f in fronts), flush=True)
            replicas = {front: (ports[front], procs[front].pid) for front in fronts}
            out: dict[str, dict[str, Any]] = {front: {} for front in fronts}
            for batch, rates in ((1, args.rates1), (64, args.rates64)):
                for front, steps in sweep(replicas, batch, rates, args.duration).items():
                    out[front][f"batch_{batch}"] = {"steps": steps, **summary(steps)}
            for front in fronts:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[front]}/status", timeout=5) as resp:
                    after = json.loads(resp.read())
                out[front]["replica"] = {"version_before": before[front]["applied_version"],
                                         "version_after": after["applied_version"],
                                         "rows_applied": after["rows_applied"], "gaps": after["gaps"]}
            return out
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=30)


def _rates(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--legacy-serve"]:
        return legacy_serve(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=6.0, help="seconds per rate step")
    p.add_argument("--rates1", type=_rates, default=_rates("100,250,400,600,800,1000,1500,2000"))
    p.add_argument("--rates64", type=_rates, default=_rates("10,25,50,75,100,150,200"))
    p.add_argument("--delta-interval", type=float, default=60.0, help="seconds between sparse pushes")
    p.add_argument("--samples-per-push", type=int, default=20_000)
    p.add_argument("--fronts", default="asgi,http.server")
    p.add_argument("--bootstrap", default=None, help="an existing broker (default: start one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ctx = mp.get_context("spawn")
    with kafka_for_bench(args.bootstrap) as kafka, tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        topics = fresh_topics(kafka, "bench-serve")
        dump_dir = str(Path(tmp) / "dumps")
        ready, stop, pushes = ctx.Event(), ctx.Event(), ctx.Queue()
        feeder = ctx.Process(target=feed, args=(kafka.bootstrap, topics, dump_dir, args.delta_interval,
                                                args.samples_per_push, ready, stop, pushes), daemon=True)
        feeder.start()
        if not ready.wait(180):
            raise SystemExit("the feeder did not publish a dump")
        print(f"load average before: {os.getloadavg()}", flush=True)
        try:
            results = run_fronts(args.fronts.split(","), kafka, topics, dump_dir, args)
        finally:
            stop.set()
            feeder.join(timeout=60)
        pushed = []
        while not pushes.empty():
            pushed.append(pushes.get())
    result = {"command": "python -m bench.serving_load " + " ".join(argv),
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
              "setup": {"duration_s_per_step": args.duration, "delta_interval_s": args.delta_interval,
                        "samples_per_push": args.samples_per_push, "p99_target_ms": P99_TARGET_MS,
                        "load_generator": "asyncio + aiohttp, open loop, separate process from the replica",
                        "model": "trainer.config.ModelConfig() defaults"},
              "pushes": pushed, "fronts": results}
    path = write_result("serving_load", result)
    print(f"\n{'front':<12}{'batch':>6}{'max sustained/s':>17}{'max/s p99<20ms':>16}{'p50':>7}{'p99':>7}{'p999':>7}")
    for front, r in results.items():
        for b in ("batch_1", "batch_64"):
            s = r[b]
            at = s["at_that_rate"] or {}
            print(f"{front:<12}{b[6:]:>6}{s['max_sustained_rps']:>17.1f}{s['max_rps_with_p99_under_20ms']:>16.1f}"
                  f"{at.get('p50_ms', '-')!s:>7}{at.get('p99_ms', '-')!s:>7}{at.get('p999_ms', '-')!s:>7}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
