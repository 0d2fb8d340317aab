"""A session cluster with several TaskManagers on one machine (``flink_cluster.taskmanagers``):
each its own JVM (in thread mode, its own Python interpreter and GIL), all registered before
``streamtrain flink start`` returns, each with its own pid, log and Prometheus port, one that
died brought back by ``start``, all of them gone after ``stop``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from streamtrain.cli.flink import FlinkCluster, FlinkClusterConfig
from streamtrain.config import ConfigError
from streamtrain.local_kafka import free_port
from streamtrain.paths import REPO_ROOT
from tests.helpers.joiner_jobs import wait_for


def _cli(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamtrain.cli", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def _ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"{res.args[3:5]}: {res.stdout[-3000:]}{res.stderr[-3000:]}"
    return res.stdout


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def _processes_under(path: Path) -> list[int]:
    """Pids of running processes whose command line names ``path`` (the cluster's conf)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if str(path).encode() in (proc / "cmdline").read_bytes() and \
                    (proc / "stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def test_flink_cluster_taskmanagers_checked():
    assert FlinkClusterConfig().taskmanagers == 1
    with pytest.raises(ConfigError, match="flink_cluster.taskmanagers"):
        FlinkClusterConfig(taskmanagers=0)
    # a reporter port for the JobManager and each TaskManager
    with pytest.raises(ConfigError, match="flink_cluster.metrics_port"):
        FlinkClusterConfig(taskmanagers=2, metrics_port="9260-9261")
    FlinkClusterConfig(taskmanagers=2, metrics_port="9260-9262")
    FlinkClusterConfig(taskmanagers=2, metrics_port="9260,9270-9271")
    FlinkClusterConfig(taskmanagers=1, metrics_port="9260")  # as before: one TaskManager, any spec


@pytest.mark.integration
def test_flink_cluster_runs_one_jvm_per_taskmanager_and_stops_them_all(tmp_path):
    rest, rpc, *prom = _free_ports(5)
    home = tmp_path / "flink"
    sets = {"dir": str(home), "rest_port": rest, "rpc_port": rpc, "taskmanagers": 2, "slots": 1,
            "taskmanager_memory": "1200m", "metrics_port": ",".join(map(str, prom))}
    args = [a for k, v in sets.items() for a in ("--set", f"flink_cluster.{k}={v}")]
    cluster = FlinkCluster(FlinkClusterConfig(dir=str(home), rest_port=rest, rpc_port=rpc,
                                              taskmanagers=2, slots=1))
    try:
        out = _ok(_cli("flink", "start", *args))
        assert "taskmanagers=2 slots=2" in out, out
        tms = cluster.rest("/taskmanagers")["taskmanagers"]
        assert len(tms) == 2 and [tm["slotsNumber"] for tm in tms] == [1, 1], tms
        overview = cluster.rest("/overview")
        assert overview["taskmanagers"] == 2 and overview["slots-total"] == 2, overview

        status = json.loads(_ok(_cli("flink", "status", *args)))
        pids = status["taskmanager_pids"]
        assert len(set(pids)) == 2 and status["taskmanager_pid"] == pids[0], status
        assert status["jobmanager_pid"] not in pids
        assert [int(p) for p in (home / "taskmanager.pid").read_text().split()] == pids
        # one log each (flink-console.sh numbers the instances of its pid file)
        logs = sorted(p.name for p in (home / "log").glob("flink-*-taskexecutor-*.log"))
        assert len(logs) == 2 and "-taskexecutor-0-" in logs[0] and "-taskexecutor-1-" in logs[1], logs
        # one reporter port each: the JobManager's and two TaskManagers' (none failed to bind)
        scraped: dict[int, str] = {}

        def reporters_up() -> bool:
            scraped.update({p: _metrics(p) for p in prom})
            return all(scraped.values())
        wait_for("a Prometheus reporter on each of the 3 ports", reporters_up, 60)
        kinds = sorted("TM" if "flink_taskmanager_Status_JVM" in text else "JM" for text in scraped.values())
        assert kinds == ["JM", "TM", "TM"], {p: text[:300] for p, text in scraped.items()}

        # one TaskManager dies: `start` brings one up again (the other is left as it is)
        os.kill(pids[1], signal.SIGKILL)
        wait_for("the killed TaskManager gone", lambda: cluster.pids("taskmanager") == pids[:1], 30)
        _ok(_cli("flink", "start", *args))
        now = cluster.pids("taskmanager")
        assert len(now) == 2 and now[0] == pids[0] and now[1] not in pids, (pids, now)
        assert cluster.rest("/overview")["slots-available"] >= 2
    finally:
        stopped = _cli("flink", "stop", *args)
    assert stopped.returncode == 0 and "flink stopped" in stopped.stdout, stopped
    assert cluster.pid("jobmanager") is None and cluster.pids("taskmanager") == []
    assert not (home / "taskmanager.pid").exists()
    assert _processes_under(home / "conf") == [], "a Flink process of this cluster is left"
    assert _ok(_cli("flink", "stop", *args)).strip() == "flink was not running"
