"""The always-on local stack that ``streamtrain up`` supervises: which processes, with which
settings, in which order they start and stop, and how a dead one is reported and restarted.

Every stage is the same ``streamtrain`` subcommand a user would run by hand (so the stack
doubles as a recipe), in its own process and process group, its output in
``<run_dir>/logs/<stage>.log``:

    kafka      the local broker (``streamtrain.local_kafka``; data in <run_dir>/kafka)
    features   dedup + realtime features, Flink MiniCluster, unbounded
    join       the joiner (early-emit policy), Flink MiniCluster, unbounded
    train      the trainer, publishing sparse deltas every few seconds
    serve-<i>  serving replicas (request-time features from the online store)
    traffic    the closed-loop traffic source (asks a replica, shows the top items)

Stopping (``Stack.stop``) goes from the source down: traffic first, then the jobs (each
stops with a savepoint), the trainer (checkpoint, final publish), the replicas, the broker
last. Everything a stage needs to resume lives under ``run_dir``, so the next ``up`` on the
same directory continues: jobs from their savepoints, the trainer from its checkpoint and
Kafka positions, the replicas from their stores, the traffic from its saved world.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

from streaming.features.spec import FeatureSpec
from streamtrain.config import check
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port
from streamtrain.paths import REPO_ROOT, STATE_DIR
from traffic.generator import DENSE, SLOTS

log = logging.getLogger(__name__)
View = Literal["auto", "live", "log", "off"]
VIEWS: tuple[View, ...] = get_args(View)
STOP_ORDER = ("traffic", "features", "join", "train", "serve")  # prefixes; the broker goes last


@dataclass(frozen=True)
class UpConfig:
    """``[up]``: the local stack. Ports 0 = a free port chosen at the first start and kept in
    ``<run_dir>/stack.json`` for the next ``up`` on the same directory."""

    run_dir: str = str(STATE_DIR / "up")
    duration_s: float = 0.0  # wall time, then a clean stop; 0 = until Ctrl-C / SIGTERM / `down`
    impressions_per_s: float = 300.0  # shown impressions per second of the traffic source
    replicas: int = 1
    kafka_port: int = 0
    serve_port: int = 0  # replica i listens on serve_port + i (0: free ports)
    trainer_metrics_port: int = 0
    traffic_metrics_port: int = 0
    features_metrics_port: int = 0
    join_metrics_port: int = 0
    window_ms: int = 10_000  # the joiner's waiting window: negatives are final after it (clicks: median 3 s)
    sparse_interval_s: float = 2.0  # sparse deltas to serving
    dense_interval_s: float = 10.0  # dense weights (the tracked head bias among them) + dump to serving
    checkpoint_interval_ms: int = 10_000  # the Flink jobs' checkpoints
    # the trainer's partial batch waits this long: the early-emit joiner sends positives one
    # by one and negatives in bursts as its watermark closes windows, and a longer wait mixes
    # them (bench/pacing_replay.py on a demo's samples: served click AUC 0.679 -> 0.688, NE
    # 1.02 -> 0.95 against the trainer's default 200 ms)
    trainer_max_wait_ms: int = 1000
    # whether the model takes the feature job's last-N items (slot features.last_n_slot; the
    # job attaches them and the replicas fill them either way): in a 3-minute cold start their
    # rows are too new to carry the users' tastes, and on three demo runs replayed without
    # the slot the served click AUC was 0.006-0.010 higher (bench/results/pacing_replay_last_n.json)
    model_last_n: bool = False
    restarts: int = 3  # a stage that dies is restarted at most this many times (then `up` stops)
    view: View = "auto"  # live (terminal), log (a status line every 10 s), off; auto: live on a tty
    trainer_device: str = "auto"

    def __post_init__(self) -> None:
        check(self.duration_s >= 0, "up.duration_s", self.duration_s, ">= 0 (0 = until stopped)")
        check(self.impressions_per_s > 0, "up.impressions_per_s", self.impressions_per_s, "> 0")
        check(1 <= self.replicas <= 8, "up.replicas", self.replicas, "1..8")
        check(self.window_ms >= 1000, "up.window_ms", self.window_ms, ">= 1000")
        check(self.restarts >= 0, "up.restarts", self.restarts, ">= 0")
        check(self.trainer_max_wait_ms >= 1, "up.trainer_max_wait_ms", self.trainer_max_wait_ms, ">= 1")
        check(self.view in VIEWS, "up.view", self.view, " | ".join(VIEWS))


@dataclass
class Ports:
    kafka: int
    controller: int
    serve: list[int]
    trainer: int
    traffic: int
    features: int
    join: int

    @classmethod
    def resolve(cls, cfg: UpConfig, saved: dict | None) -> Ports:
        """The ports of a run: those saved by a previous ``up`` on this run directory, else the
        configured ones, else free ones."""
        if saved:
            return cls(**saved)
        pick = lambda p: p or free_port()  # noqa: E731
        serve = [cfg.serve_port + i for i in range(cfg.replicas)] if cfg.serve_port else \
            [free_port() for _ in range(cfg.replicas)]
        return cls(kafka=pick(cfg.kafka_port), controller=free_port(), serve=serve,
                   trainer=pick(cfg.trainer_metrics_port), traffic=pick(cfg.traffic_metrics_port),
                   features=pick(cfg.features_metrics_port), join=pick(cfg.join_metrics_port))


@dataclass
class Stage:
    name: str
    argv: list[str]  # after `python -m streamtrain.cli`
    metrics_url: str = ""  # its Prometheus endpoint
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    exits: list[int] = field(default_factory=list)


def model_settings(last_n: bool = True) -> list[str]:
    """The model's input layout behind the feature job: the generator's slots (plus the last-N
    slot with ``last_n``), its dense values plus the realtime ones (what the feature job emits),
    and its hour-of-day slot, whose new ids (one each hour, met by serving before the trainer)
    read the slot's mean row (``model.field_mean_slots``, docs/sync.md)."""
    spec = FeatureSpec()
    slots = [*range(len(SLOTS)), *([spec.last_n_slot] if last_n else [])]
    return ["model.slots=" + ",".join(map(str, slots)), f"model.dense_dim={len(DENSE) + spec.dense_width()}",
            f"model.field_mean_slots={SLOTS.index('hour')}"]


class Stack:
    """The processes of one run directory."""

    def __init__(self, cfg: UpConfig, user_args: list[str] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir).resolve()
        self.logs = self.run_dir / "logs"
        self.user_args = list(user_args or [])  # --config / --set of `up`, passed to every stage
        saved = self._read_state().get("ports")
        self.ports = Ports.resolve(cfg, saved)
        self.broker = LocalKafka(LocalKafkaConfig(port=self.ports.kafka, controller_port=self.ports.controller,
                                                  data_dir=self.run_dir / "kafka"))
        self.kafka = KafkaConfig(bootstrap=self.broker.config.bootstrap)
        self.topics = TopicsConfig()
        self.stages = self._stages()
        self.resumed = saved is not None
        self.events: deque[str] = deque(maxlen=50)  # stage deaths and restarts, for the view

    # -- what runs ---------------------------------------------------------------------------
    def _common(self) -> list[str]:
        return ["--set", f"kafka.bootstrap={self.kafka.bootstrap}", *self.user_args]

    def _stages(self) -> list[Stage]:
        cfg, run, p = self.cfg, self.run_dir, self.ports
        sets = lambda *kv: [a for s in kv for a in ("--set", s)]  # noqa: E731
        flink = sets(f"flink.checkpoint_interval_ms={cfg.checkpoint_interval_ms}")
        stages = [
            Stage("features", ["features", "--restore", "latest", *flink,
                               *sets(f"features_job.checkpoint_dir={run / 'features-checkpoints'}",
                                     f"flink.metrics_port={p.features}")],
                  f"http://127.0.0.1:{p.features}/metrics"),
            Stage("join", ["join", "--restore", "latest", *flink,
                           *sets(f"topics.impressions={self.topics.impressions_enriched}",
                                 f"topics.actions={self.topics.actions_deduped}",
                                 "joiner.policy=early", f"joiner.window_ms={cfg.window_ms}",
                                 f"joiner_job.checkpoint_dir={run / 'joiner-checkpoints'}",
                                 f"joiner_job.kv_dir={run / 'joiner-kv'}",
                                 f"flink.metrics_port={p.join}")],
                  f"http://127.0.0.1:{p.join}/metrics"),
            Stage("train", ["train", "--checkpoint-dir", str(run / "trainer-checkpoints"),
                            "--metrics", str(run / "trainer-metrics.jsonl"), "--device", cfg.trainer_device,
                            *sets(f"trainer.metrics_port={p.trainer}", f"sync.dump_dir={run / 'dumps'}",
                                  f"sync.sparse_interval_s={cfg.sparse_interval_s}",
                                  f"sync.dense_interval_s={cfg.dense_interval_s}",
                                  f"trainer.max_wait_ms={cfg.trainer_max_wait_ms}",
                                  *model_settings(cfg.model_last_n))],
                  f"http://127.0.0.1:{p.trainer}/metrics"),
        ]
        for i, port in enumerate(p.serve):
            stages.append(Stage(f"serve-{i}", ["serve", *sets(
                f"serve.port={port}", f"serve.dump_dir={run / 'dumps'}", f"serve.store_dir={run / f'replica-{i}'}",
                f"serve.group_id=streamtrain-up-replica-{i}", "serve.ready_max_version_age_s=0",
                f"serve.freshness_log={run / f'freshness-{i}.jsonl'}")],
                f"http://127.0.0.1:{port}/metrics"))
        urls = ",".join(f"http://127.0.0.1:{port}" for port in p.serve)
        stages.append(Stage("traffic", ["live-traffic", *sets(
            f"live_traffic.replica_urls={urls}", f"live_traffic.impressions_per_s={cfg.impressions_per_s}",
            f"live_traffic.metrics_port={p.traffic}", f"live_traffic.state_dir={run / 'traffic'}")],
            f"http://127.0.0.1:{p.traffic}/metrics"))
        return stages

    def log_path(self, stage: Stage) -> Path:
        return self.logs / f"{stage.name}.log"

    # -- state on disk -----------------------------------------------------------------------
    def _read_state(self) -> dict:
        try:
            return json.loads((self.run_dir / "stack.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def write_state(self, supervisor_pid: int | None = None) -> None:
        state = {"ports": asdict(self.ports), "bootstrap": self.kafka.bootstrap,
                 "supervisor_pid": supervisor_pid if supervisor_pid is not None else os.getpid(),
                 "stages": {s.name: {"pid": s.proc.pid if s.proc else None, "metrics": s.metrics_url,
                                     "log": str(self.log_path(s)), "restarts": s.restarts,
                                     "argv": ["streamtrain", *s.argv]} for s in self.stages},
                 "broker_pid": self.broker.pid(), "updated": time.time()}
        (self.run_dir / "stack.json").write_text(json.dumps(state, indent=1))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, first_dump_timeout_s: float = 300.0) -> None:
        """The broker, then every stage; the replicas once the trainer's first dump exists
        (a replica bootstraps from it), the traffic source last."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        create_topics(self.kafka, self.topics)
        waited = False
        for stage in self.stages:
            if stage.name.startswith("serve") and not waited:
                self._wait_first_dump(first_dump_timeout_s)
                waited = True
            self._spawn(stage)
        self.write_state()

    def _wait_first_dump(self, timeout_s: float) -> None:
        from sync.dump import latest_dump

        train = next(s for s in self.stages if s.name == "train")
        deadline = time.monotonic() + timeout_s
        while latest_dump(self.run_dir / "dumps", "ctr") is None:
            if train.proc is not None and train.proc.poll() is not None:
                raise StackError(f"the trainer exited with code {train.proc.returncode} before its first "
                                 f"dump; last lines of {self.log_path(train)}:\n{_tail(self.log_path(train), 15)}")
            if time.monotonic() > deadline:
                raise StackError(f"no model dump from the trainer within {timeout_s:.0f}s "
                                 f"(see {self.log_path(train)})")
            time.sleep(0.5)

    def _spawn(self, stage: Stage) -> None:
        with self.log_path(stage).open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} streamtrain {' '.join(stage.argv)}\n".encode())
            out.flush()
            stage.proc = subprocess.Popen([sys.executable, "-m", "streamtrain.cli", *stage.argv, *self._common()],
                                          cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        stage.started_at = time.monotonic()

    def check(self) -> list[str]:
        """Report every stage that died since the last check (with its last log lines) and
        restart it while its restart budget lasts; returns the report lines. Raises
        ``StackError`` when a stage is out of restarts."""
        lines: list[str] = []
        if self.broker.pid() is None:
            raise StackError(f"the Kafka broker is gone; last lines of {self.broker.log_file}:\n"
                             f"{_tail(self.broker.log_file, 15)}")
        for stage in self.stages:
            if stage.proc is None or stage.proc.poll() is None:
                continue
            code = stage.proc.returncode
            stage.exits.append(code)
            tail = _tail(self.log_path(stage), 15)
            msg = f"{stage.name} exited with code {code}; last lines of {self.log_path(stage)}:\n{tail}"
            lines.append(msg)
            self.events.append(f"{time.strftime('%H:%M:%S')} {stage.name} exited ({code})")
            if stage.restarts >= self.cfg.restarts:
                raise StackError(f"{stage.name} died {stage.restarts + 1} times; stopping the stack. {msg}")
            stage.restarts += 1
            self._spawn(stage)
            self.events.append(f"{time.strftime('%H:%M:%S')} {stage.name} restarted ({stage.restarts}/"
                               f"{self.cfg.restarts})")
            self.write_state()
        return lines

    def stop(self, timeout_s: float = 120.0) -> dict[str, int | None]:
        """Stop every stage in ``STOP_ORDER`` (SIGTERM: each stops cleanly; SIGKILL after
        ``timeout_s``), then the broker; returns each stage's exit code."""
        codes: dict[str, int | None] = {}
        for prefix in STOP_ORDER:
            group = [s for s in self.stages if s.name.startswith(prefix) and s.proc is not None]
            for s in group:
                if s.proc is not None and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)
            for s in group:
                codes[s.name] = _wait_or_kill(s, timeout_s)
        self.broker.stop()
        return codes


class StackError(RuntimeError):
    """The stack cannot go on (a stage out of restarts, the broker gone)."""


def _wait_or_kill(stage: Stage, timeout_s: float) -> int | None:
    assert stage.proc is not None
    try:
        return stage.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s ignored SIGTERM for %.0fs; killing it", stage.name, timeout_s)
        os.killpg(stage.proc.pid, signal.SIGKILL)
        return stage.proc.wait()


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
