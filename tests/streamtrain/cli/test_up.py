"""``streamtrain up`` for real, on free ports: the broker, both Flink jobs on MiniClusters,
the trainer, a replica and the closed-loop traffic source, all supervised; a bounded run ends
with a clean stop (every stage exits 0), and a second ``up`` on the same directory resumes
from the first one's state: the jobs from their savepoints, the trainer from its checkpoint
(its sample count and the model version continue, nothing is trained twice), the traffic
from its saved world."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamtrain.paths import REPO_ROOT

pytestmark = pytest.mark.integration


def _up(run, seconds: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "streamtrain.cli", "up", "--set", f"up.run_dir={run}",
           "--set", "up.view=log", "--set", f"up.duration_s={seconds}", "--set", "up.impressions_per_s=100",
           "--set", "up.sparse_interval_s=2", "--set", "up.dense_interval_s=10", "--set", "trainer.window=2000",
           "--set", "live_traffic.window=2000"]
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=seconds + 400)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res


def _timeline(run) -> list[dict]:
    return [json.loads(line) for line in (run / "timeline.jsonl").read_text().splitlines()]


def test_up_runs_the_closed_loop_then_stops_cleanly_and_the_next_up_resumes(tmp_path):
    run = tmp_path / "run"
    first = _up(run, 90)
    assert "(fresh)" in first.stdout
    s1 = json.loads((run / "summary.json").read_text())
    assert all(st["exit"] == 0 and st["restarts"] == 0 for st in s1["stages"].values()), s1["stages"]
    assert s1["trained_samples"] > 0 and s1["rates"]["samples"]["records"] > 0
    # a replica answered with advancing versions during the run
    versions = [r["replicas"]["serve-0"]["version"] for r in _timeline(run) if r["replicas"]["serve-0"]["version"]]
    assert len(set(versions)) >= 3 and versions == sorted(versions)
    # freshness traced from actions through the whole chain, in parts that add up
    fresh = s1["freshness"]
    assert fresh["traced_actions"] > 0 and fresh["end_to_end"]["p50_s"] > 0
    assert s1["served_ctr"]["served"] > s1["served_ctr"]["random"]
    assert (run / "quality.png").stat().st_size > 0 and (run / "freshness_cdf.png").stat().st_size > 0

    second = _up(run, 40)
    assert "(resumed)" in second.stdout
    s2 = json.loads((run / "summary.json").read_text())
    assert all(st["exit"] == 0 for st in s2["stages"].values()), s2["stages"]
    logs = run / "logs"
    for job in ("features", "join"):
        assert "restore=latest checkpoint=" in (logs / f"{job}.log").read_text().split("====")[-1]
        assert "/savepoints/savepoint-" in (logs / f"{job}.log").read_text().split("====")[-1]
    assert "restored checkpoint=" in (logs / "train.log").read_text().split("====")[-1]
    assert "resumed" in (logs / "traffic.log").read_text().split("====")[-1]
    # the model continues: its version and sample count go on from the first run's end, and
    # no sample is trained twice (the trainer never trained more samples than were written)
    assert s2["published_version"] > s1["published_version"]
    t2 = [r["trained_samples"] for r in _timeline(run) if r.get("trained_samples") is not None]
    assert t2[0] >= s1["trained_samples"] and s2["trained_samples"] > s1["trained_samples"]
    assert s2["trained_samples"] <= s2["rates"]["samples"]["records"]
