"""``streamtrain up`` / ``down`` / ``status`` / ``demo``: the whole system as long-running
processes on one machine, without Docker (``streamtrain.cli.stack`` says which), supervised
together, with a live view.

    streamtrain up                         # until Ctrl-C; the next `up` resumes where it stopped
    streamtrain up --detach                # in the background; `streamtrain status`, `streamtrain down`
    streamtrain up --fresh --set up.impressions_per_s=500 --set up.replicas=2
    streamtrain demo                       # `up` on a fresh directory for 3 minutes, then the summary
    streamtrain demo --duration 600

One Ctrl-C (or SIGTERM, or ``streamtrain down``) stops every stage cleanly: the traffic
source saves its world, the Flink jobs stop with a savepoint, the trainer checkpoints and
publishes, the replicas close their stores, the broker stops last; a second Ctrl-C aborts.
A stage that dies is reported at once with its last log lines and restarted (each resumes
from its own state) up to ``up.restarts`` times. At the end: ``<run_dir>/summary.json``,
plots (``quality.png``, ``served_ctr.png``, ``freshness_cdf.png``) and a printed verdict.
Logs of every process: ``<run_dir>/logs/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from streamtrain import flags
from streamtrain.cli.live_view import render, status_line
from streamtrain.cli.observe import Observer
from streamtrain.cli.run_report import RunReport, read_freshness
from streamtrain.cli.stack import Stack, StackError, UpConfig
from streamtrain.config import ConfigError
from streamtrain.kafka_io import KafkaConfig, KafkaIOError, TopicsConfig
from streamtrain.local_kafka import LocalKafkaError
from streamtrain.paths import REPO_ROOT, STATE_DIR
from streamtrain.signals import StopRequest, stop_on_signals

log = logging.getLogger(__name__)
SAMPLE_EVERY_S = 2.0
DEMO_DIR = STATE_DIR / "demo"


def _pass_through(args: argparse.Namespace) -> list[str]:
    """``--config`` / ``--set`` of ``up``, handed to every stage (each reads its sections)."""
    out = ["--config", args.config] if getattr(args, "config", None) else []
    for s in getattr(args, "set", None) or []:
        out += ["--set", s]
    return out


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rss_mb_by_group() -> dict[int, float]:
    """Resident memory per process group (a stage and its JVM/workers), one pass over /proc."""
    total: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pgid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total[pgid] = total.get(pgid, 0.0) + int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


class Supervisor:
    def __init__(self, stack: Stack, view: str) -> None:
        self.stack = stack
        self.view = view
        self.rows: list[dict] = []
        self.rss: dict[str, list[tuple[float, float]]] = {s.name: [] for s in stack.stages}
        self.observer = Observer({s.name: s.metrics_url for s in stack.stages}, stack.kafka, stack.topics)

    def header(self) -> str:
        st = self.stack
        how = "resumed" if st.resumed else "fresh"
        replicas = ", ".join(f"http://127.0.0.1:{p}" for p in st.ports.serve)
        return (f"streamtrain up ({how}) - run dir {st.run_dir} - logs {st.logs} - kafka {st.kafka.bootstrap}"
                f" - replicas {replicas} - Ctrl-C stops cleanly")

    def _sample(self) -> dict:
        row = self.observer.sample()
        self.rows.append(row)
        rss = _rss_mb_by_group()
        for s in self.stack.stages:
            if s.proc is not None and s.proc.poll() is None:
                self.rss[s.name].append((row["t"], rss.get(s.proc.pid, 0.0)))
        return row

    def loop(self, stop: StopRequest, duration_s: float) -> None:
        deadline = time.monotonic() + duration_s if duration_s > 0 else None
        live: Any = nullcontext()
        if self.view == "live":
            from rich.live import Live

            live = Live(refresh_per_second=1, transient=False)
        last_log = 0.0
        with live:
            while not stop.wait(SAMPLE_EVERY_S):
                for report in self.stack.check():
                    (live.console.print if self.view == "live" else print)(f"[stage died] {report}")
                row = self._sample()
                if self.view == "live":
                    live.update(render(row, self.header(), list(self.stack.events)))
                elif self.view == "log" and time.monotonic() - last_log >= 10:
                    print(f"[{time.strftime('%H:%M:%S')}] {status_line(row)}", flush=True)
                    last_log = time.monotonic()
                if deadline is not None and time.monotonic() >= deadline:
                    print(f"== {duration_s:.0f}s of wall time reached: stopping cleanly", flush=True)
                    return

    def finish(self, codes: dict[str, int | None]) -> RunReport:
        st = self.stack
        stages = {s.name: {"restarts": s.restarts, "exit": codes.get(s.name), "rss_mb": self.rss.get(s.name, [])}
                  for s in st.stages}
        freshness = read_freshness(sorted(st.run_dir.glob("freshness-*.jsonl")))
        report = RunReport(self.rows, freshness, stages, st.cfg.impressions_per_s)
        summary = report.summary()
        (st.run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        (st.run_dir / "timeline.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in self.rows))
        if self.rows:
            report.plots(st.run_dir)
        return report


def run_up(cfg: UpConfig, passthrough: list[str], fresh: bool) -> int:
    run_dir = Path(cfg.run_dir)
    state = _read_state(run_dir)
    if _alive(state.get("supervisor_pid")) and state.get("supervisor_pid") != os.getpid():
        log.error("a stack is already running from %s (supervisor pid %s): `streamtrain status` or "
                  "`streamtrain down --set up.run_dir=%s`", run_dir, state["supervisor_pid"], run_dir)
        return 1
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    view = cfg.view if cfg.view != "auto" else ("live" if sys.stdout.isatty() else "log")
    if view == "live":  # log lines would tear the live view: the supervisor's own go to a file
        _log_to_file(run_dir / "logs" / "up.log")
    stack = Stack(cfg, passthrough)
    sup = Supervisor(stack, view)
    print(f"== {sup.header()}", flush=True)
    stop = StopRequest()
    codes: dict[str, int | None] = {}
    failed = ""
    try:
        with stop_on_signals(stop, "stopping every stage cleanly"):
            stack.start()
            sup.loop(stop, cfg.duration_s)
            sup._sample()  # the last figures before anything stops
            print("== stopping: traffic, jobs (savepoints), trainer (checkpoint, publish), replicas, broker",
                  flush=True)
            sup.observer.close()
            codes = stack.stop()
    except StackError as exc:
        failed = str(exc)
        log.error("%s", exc)
        sup.observer.close()
        codes = stack.stop()
    except KeyboardInterrupt:
        _kill_all(stack)
        print("== aborted: every stage killed (no savepoint, checkpoint or final publish)", flush=True)
        return 130
    finally:
        sup.observer.close()
        _clear_supervisor(run_dir)
    report = sup.finish(codes)
    print(f"\n== run summary ({stack.run_dir / 'summary.json'}; plots quality.png, served_ctr.png, "
          f"freshness_cdf.png there)\n{report.verdict_text()}", flush=True)
    unclean = {k: v for k, v in codes.items() if v not in (0, None)}
    if unclean:
        print(f"== stages that did not stop cleanly: {unclean} (logs in {stack.logs})", flush=True)
    return 1 if failed or unclean else 0


def _log_to_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def _kill_all(stack: Stack) -> None:
    for s in stack.stages:
        if s.proc is not None and s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGKILL)
    stack.broker.stop(timeout_s=5)


def _read_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "stack.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _clear_supervisor(run_dir: Path) -> None:
    state = _read_state(run_dir)
    if state:
        state["supervisor_pid"] = None
        (run_dir / "stack.json").write_text(json.dumps(state, indent=1))


def _detach(argv: list[str], run_dir: Path, timeout_s: float = 400) -> int:
    """``up --detach``: the same ``up`` in the background (its output in ``<run_dir>/up.log``);
    returns once every stage is started."""
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [a for a in argv if a != "--detach"]
    with (run_dir / "up.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamtrain.cli", "up", *args, "--set", "up.view=log"],
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _read_state(run_dir)
        if state.get("supervisor_pid") == proc.pid and all(s.get("pid") for s in state.get("stages", {}).values()):
            print(f"stack running in the background (supervisor pid {proc.pid}); output {run_dir / 'up.log'}, "
                  f"logs {run_dir / 'logs'}; `streamtrain status`, `streamtrain down`")
            return 0
        if proc.poll() is not None:
            print(f"streamtrain up exited with code {proc.returncode}; see {run_dir / 'up.log'}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"the stack did not start within {timeout_s:.0f}s; see {run_dir / 'up.log'}", file=sys.stderr)
    return 1


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    p = flags.parser(command, description)
    if command in ("up", "demo"):
        p.add_argument("--fresh", action="store_true", help="start over: delete the run directory first")
    if command == "up":
        p.add_argument("--detach", action="store_true", help="run in the background")
    if command == "demo":
        p.add_argument("--duration", type=float, default=180.0, help="wall seconds (default 180)")
        p.add_argument("--keep", action="store_true", help="resume the previous demo instead of starting fresh")
    return p


def up_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser("up", "every stage as a long-running, supervised process, with a live view").parse_args(argv)
    try:
        cfg = flags.load(args, UpConfig, "up")
    except ConfigError as exc:
        log.error("up failed: %s", exc)
        return 2
    if args.detach:
        return _detach(argv, Path(cfg.run_dir))
    return _guarded(lambda: run_up(cfg, _pass_through(args), args.fresh))


def demo_main(argv: list[str] | None = None) -> int:
    args = _parser("demo", "the live system for a bounded wall time, then its summary").parse_args(argv)
    try:
        cfg = flags.load(args, UpConfig, "up")
    except ConfigError as exc:
        log.error("demo failed: %s", exc)
        return 2
    if cfg.run_dir == UpConfig().run_dir:
        cfg = dataclasses.replace(cfg, run_dir=str(DEMO_DIR))
    cfg = dataclasses.replace(cfg, duration_s=args.duration)
    return _guarded(lambda: run_up(cfg, _pass_through(args), fresh=not args.keep))


def _guarded(fn: Any) -> int:
    try:
        return int(fn())
    except (LocalKafkaError, KafkaIOError) as exc:
        log.error("up failed: %s", exc)
        return 1


def down_main(argv: list[str] | None = None) -> int:
    p = _parser("down", "stop a stack started with `streamtrain up --detach` (cleanly)")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    cfg = flags.load(args, UpConfig, "up")
    run_dir = Path(cfg.run_dir)
    state = _read_state(run_dir)
    pid = state.get("supervisor_pid")
    if pid is None or not _alive(pid):
        leftovers = [s["pid"] for s in state.get("stages", {}).values() if _alive(s.get("pid"))]
        if not leftovers:
            print(f"no stack running from {run_dir}")
            return 0
        print(f"the supervisor is gone; stopping {len(leftovers)} leftover stage(s)")
        for p_ in leftovers:
            os.kill(p_, signal.SIGTERM)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _alive(pid):
        print(f"the stack did not stop within {args.timeout:.0f}s (supervisor pid {pid})", file=sys.stderr)
        return 1
    print(f"stack stopped; summary in {run_dir / 'summary.json'}")
    return 0


def status_main(argv: list[str] | None = None) -> int:
    args = _parser("status", "what a stack left running in the background is doing").parse_args(argv)
    cfg = flags.load(args, UpConfig, "up")
    run_dir = Path(cfg.run_dir)
    state = _read_state(run_dir)
    if not state:
        print(f"no stack in {run_dir}")
        return 3
    running = _alive(state.get("supervisor_pid"))
    print(f"stack in {run_dir}: {'running' if running else 'stopped'}")
    for name, s in state.get("stages", {}).items():
        print(f"  {name:<10} {'up  ' if _alive(s.get('pid')) else 'down'} pid {s.get('pid')} "
              f"restarts {s.get('restarts')} log {s.get('log')}")
    if running:
        obs = Observer({n: s["metrics"] for n, s in state["stages"].items()},
                       KafkaConfig(bootstrap=state["bootstrap"]), TopicsConfig())
        try:
            obs.sample()
            time.sleep(SAMPLE_EVERY_S)
            print("  " + status_line(obs.sample()))
        finally:
            obs.close()
    return 0 if running else 3
