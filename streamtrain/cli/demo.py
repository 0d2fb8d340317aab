"""``streamtrain demo``: the pipeline end to end on local defaults, bounded, then exits.

Starts a real single-node Kafka broker from the Maven jars (fresh data each run), creates
the topics, generates synthetic traffic, runs dedup + realtime features and the joiner as
Flink jobs on the local MiniCluster, trains on the samples while publishing the model,
serves it from a replica, measures live freshness, and prints what flowed through every
topic. Each step is the same `streamtrain`
subcommand a user would run by hand, so the demo doubles as a recipe.

    streamtrain demo                                  # defaults below
    streamtrain demo --set demo.duration_s=300 --set demo.keep_broker=true

Exit code 0 when every step ran; 2 on a bad setting, 1 when a step or the broker failed,
with one line that says why (each step's own output is above it).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from schemas import DeadLetter, Impression, Sample, codec_for
from streamtrain import flags
from streamtrain.cli.stack import model_settings
from streamtrain.config import ConfigError, check
from streamtrain.kafka_io import KafkaConfig, KafkaIOError, TopicsConfig, create_topics, read_all
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, LocalKafkaError, free_port
from streamtrain.paths import REPO_ROOT, STATE_DIR

log = logging.getLogger(__name__)


class DemoError(RuntimeError):
    """A step of the demo failed (its own output says why)."""


@dataclass(frozen=True)
class DemoConfig:
    duration_s: float = 900.0  # event time of generated traffic (generated flat out)
    impressions_per_s: float = 20.0  # in event time
    port: int = 9092
    controller_port: int = 9093
    out_dir: str = str(STATE_DIR / "demo")
    keep_broker: bool = False  # leave the broker running after the demo
    window_ms: int = 300_000  # the joiner's waiting window (event time)
    freshness_s: float = 20.0  # length of the live freshness measurement at the end (0 = skip)
    users: int = 1000  # a small world, so a short run sees each user and item often enough to learn
    items: int = 200

    def __post_init__(self) -> None:
        check(0 < self.duration_s <= 7 * 86400, "demo.duration_s", self.duration_s, "(0, 604800]")
        check(self.impressions_per_s > 0, "demo.impressions_per_s", self.impressions_per_s, "> 0")


class Demo:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.broker = LocalKafka(LocalKafkaConfig(port=cfg.port, controller_port=cfg.controller_port,
                                                  data_dir=self.out / "kafka"))
        self.kafka = KafkaConfig(bootstrap=self.broker.config.bootstrap)
        self.topics = TopicsConfig()
        self.common = ["--set", f"kafka.bootstrap={self.kafka.bootstrap}"]
        self.results: dict = {}

    def step(self, title: str, *args: str, timeout_s: float = 900, common: bool = True) -> None:
        args = (*args, *self.common) if common else args
        print(f"\n== {title}: streamtrain {' '.join(args)}", flush=True)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "streamtrain.cli", *args],
                             cwd=REPO_ROOT, timeout=timeout_s)
        if res.returncode != 0:
            raise DemoError(f"step '{title}' failed with exit code {res.returncode} (its output is above)")
        print(f"== {title}: done in {time.monotonic() - t0:.1f}s", flush=True)

    def run(self) -> int:
        if self.broker.pid() is not None:
            self.broker.stop()
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        print(f"== starting Kafka (KRaft, single node) at {self.kafka.bootstrap}", flush=True)
        self.broker.start()
        try:
            create_topics(self.kafka, self.topics)
            self.pipeline()
            self.summary()
        finally:
            if not self.cfg.keep_broker:
                self.broker.stop()
                print("== Kafka stopped", flush=True)
        return 0

    def pipeline(self) -> None:
        cfg, out = self.cfg, self.out
        self.step("generate traffic", "generate", "--stats", str(out / "generated.json"),
                  "--set", f"generator.duration_s={cfg.duration_s}",
                  "--set", f"generator.impressions_per_s={cfg.impressions_per_s}",
                  "--set", f"generator.users={cfg.users}", "--set", f"generator.items={cfg.items}")
        self.step("dedup + point-in-time realtime features on Flink (MiniCluster)", "features",
                  "--bounded")
        self.step("join impressions with their actions on Flink (MiniCluster)", "join", "--bounded",
                  "--set", f"topics.impressions={self.topics.impressions_enriched}",
                  "--set", f"topics.actions={self.topics.actions_deduped}",
                  "--set", f"joiner.window_ms={cfg.window_ms}",
                  "--set", f"joiner_job.checkpoint_dir={out / 'joiner-checkpoints'}",
                  "--set", f"joiner_job.kv_dir={out / 'joiner-kv'}")
        self.step("train on the samples, publishing to serving", "train",
                  "--idle-timeout", "10", "--batch-size", "128", "--device", "auto",
                  "--checkpoint-dir", str(out / "ckpt"), "--metrics", str(out / "metrics.jsonl"),
                  "--plot", str(out / "auc.png"), "--set", f"sync.dump_dir={out / 'dumps'}",
                  # the generator's 8 slots and 3 dense values, plus what the feature job adds:
                  # last-N acted items in slot last_n_slot, the realtime values appended to dense
                  *(a for kv in model_settings(last_n=True) for a in ("--set", kv)))
        self.serve_and_check()
        if cfg.freshness_s > 0:
            self.step("live freshness: a trainer pushing every 2 s to a replica (action -> served)",
                      "bench", "sync_freshness", "--interval", "2", "--duration", str(cfg.freshness_s),
                      "--rate", "200", "--bootstrap", self.kafka.bootstrap, common=False)

    def serve_and_check(self) -> None:
        """Start a serving replica, let it bootstrap from the dump and replay the deltas,
        and ask it for predictions."""
        port = free_port()
        cmd = [sys.executable, "-m", "streamtrain.cli", "serve", *self.common,
               "--set", f"serve.port={port}", "--set", f"serve.dump_dir={self.out / 'dumps'}",
               "--set", f"serve.store_dir={self.out / 'replica'}"]
        print(f"\n== serving replica: streamtrain {' '.join(cmd[3:])}", flush=True)
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT)
        try:
            metrics = _wait_replica(port, proc)
            self.results["replica"] = metrics
            print(f"   replica applied model version {metrics['applied_version']} "
                  f"(dense {metrics['dense_version']}), rows bootstrapped {metrics['rows_bootstrapped']} "
                  f"+ applied from deltas {metrics['rows_applied']}, "
                  f"lag {metrics['lag_records']} records", flush=True)
            first = read_all(self.kafka, self.topics.samples, timeout_s=30)[:3]
            instances = [_instance(codec_for(Sample).decode(r.value)) for r in first]
            answer = _http(port, "/predict", {"instances": instances})
            self.results["prediction"] = answer
            print(f"   POST /predict -> version {answer['version']}, heads {answer['heads']}, "
                  f"predictions {[[round(p, 4) for p in row] for row in answer['predictions']]}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def summary(self) -> None:
        print("\n== what flowed through the topics", flush=True)
        counts: dict[str, int | str] = {}  # a count, or why the topic could not be read
        for name in self.topics.names():
            try:
                counts[name] = len(read_all(self.kafka, name, timeout_s=60))
            except Exception as exc:  # a topic a stage did not create: say so, keep going
                counts[name] = f"n/a ({exc})"
        for name, n in counts.items():
            print(f"   {name:<24} {n}")
        dead = [codec_for(DeadLetter).decode(r.value) for r in read_all(self.kafka, self.topics.dead_letter)]
        if dead:
            print("   dead letters by reason:")
            for reason, n in Counter(d.reason.split(":")[0] for d in dead).most_common():
                print(f"     {n:>6}  {reason}")
        first = read_all(self.kafka, self.topics.impressions, timeout_s=30)[:1]
        if first:
            print(f"   an impression: {codec_for(Impression).decode(first[0].value)}")
        metrics = self.out / "metrics.jsonl"
        if metrics.exists():
            last = json.loads(metrics.read_text().splitlines()[-1])
            heads = {k: v for k, v in last.items() if isinstance(v, dict)}
            print(f"   trainer: {last.get('samples')} samples, progressive validation:")
            for head, m in heads.items():
                print(f"     {head:<11} " + " ".join(f"{k}={v:.4f}" for k, v in m["cumulative"].items()))
            print(f"   AUC over time: {self.out / 'auc.png'}")
        (self.out / "summary.json").write_text(json.dumps({"topics": counts, **self.results},
                                                          indent=2, default=str))
        print(f"\n== demo finished; files in {self.out}", flush=True)


def _http(port: int, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait_replica(port: int, proc: subprocess.Popen, timeout_s: float = 120) -> dict:
    """Poll /status (the replica's counters as JSON) until it has bootstrapped and has no lag."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the serving replica exited with code {proc.returncode}")
        try:
            metrics = _http(port, "/status")
            if metrics.get("dense_version") is not None and metrics.get("lag_records") == 0:
                return metrics
        except OSError:
            pass
        time.sleep(0.5)
    raise DemoError(f"the serving replica did not catch up within {timeout_s:.0f}s")


def _instance(sample: Sample) -> dict:
    return {"ids": sample.ids, "slots": sample.slots, "dense": sample.dense}


def main(argv: list[str] | None = None) -> int:
    p = flags.parser("demo", "the pipeline end to end on a local broker and MiniCluster, bounded")
    args = p.parse_args(argv)
    try:
        demo = Demo(flags.load(args, DemoConfig, "demo"))
    except ConfigError as exc:  # a bad setting: one line that names it, no traceback
        log.error("demo failed: %s", exc)
        return 2
    try:
        return demo.run()
    except (LocalKafkaError, KafkaIOError, DemoError, subprocess.TimeoutExpired) as exc:
        log.error("demo failed: %s", exc)
        return 1
