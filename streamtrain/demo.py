"""``streamtrain demo``: the pipeline end to end on local defaults, bounded, then exits.

Starts a real single-node Kafka broker from the Maven jars (fresh data each run), creates
the topics, generates synthetic traffic, runs the Flink job(s) on the local MiniCluster,
and prints what flowed through every topic. Each step is the same `streamtrain`
subcommand a user would run by hand, so the demo doubles as a recipe.

    streamtrain demo                                  # defaults below
    streamtrain demo --set demo.duration_s=300 --set demo.keep_broker=true
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from schemas import DeadLetter, Impression, codec_for
from streamtrain import cli_common
from streamtrain.config import check
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics, read_all
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig
from streamtrain.paths import REPO_ROOT, STATE_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    duration_s: float = 600.0  # event time of generated traffic (generated flat out)
    impressions_per_s: float = 20.0  # in event time
    port: int = 9092
    controller_port: int = 9093
    out_dir: str = str(STATE_DIR / "demo")
    keep_broker: bool = False  # leave the broker running after the demo

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

    def step(self, title: str, *args: str, timeout_s: float = 900) -> None:
        print(f"\n== {title}: streamtrain {' '.join(args)}", flush=True)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "streamtrain.cli", *args, *self.common],
                             cwd=REPO_ROOT, timeout=timeout_s)
        if res.returncode != 0:
            raise RuntimeError(f"step '{title}' failed with exit code {res.returncode}")
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
        cfg = self.cfg
        self.step("generate traffic", "generate", "--stats", str(self.out / "generated.json"),
                  "--set", f"generator.duration_s={cfg.duration_s}",
                  "--set", f"generator.impressions_per_s={cfg.impressions_per_s}")
        self.step("check impressions on Flink (MiniCluster)", "passthrough", "--bounded",
                  "--set", "flink.checkpoint_interval_ms=0")

    def summary(self) -> None:
        print("\n== what flowed through the topics", flush=True)
        counts = {}
        for name in [*self.topics.names(), f"{self.topics.impressions}.checked"]:
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
        (self.out / "summary.json").write_text(json.dumps({"topics": counts}, indent=2, default=str))
        print(f"\n== demo finished; files in {self.out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = cli_common.parser("demo", "the pipeline end to end on a local broker and MiniCluster, bounded")
    args = p.parse_args(argv)
    return Demo(cli_common.load(args, DemoConfig, "demo")).run()
