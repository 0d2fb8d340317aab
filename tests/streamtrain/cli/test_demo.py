"""The README's demo command, shortened: broker, generator, joiner on the MiniCluster,
trainer, serving replica, end to end on free ports."""

import json
import subprocess
import sys

import pytest

from streamtrain.local_kafka import free_port
from streamtrain.paths import REPO_ROOT

pytestmark = pytest.mark.integration


def test_demo_runs_the_pipeline_end_to_end_and_exits(tmp_path):
    cmd = [sys.executable, "-m", "streamtrain.cli", "batch-demo",
           "--set", f"demo.port={free_port()}", "--set", f"demo.controller_port={free_port()}",
           "--set", f"demo.out_dir={tmp_path}", "--set", "demo.duration_s=600",
           "--set", "demo.freshness_s=0"]
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    generated = json.loads((tmp_path / "generated.json").read_text())["injected"]
    topics = summary["topics"]
    assert topics["dead-letter"] >= generated["malformed"] > 0
    assert topics["samples"] >= generated["impressions"]  # one final sample each, plus corrections
    assert topics["model-deltas"] > 0 and topics["model-dense"] > 0
    replica, answer = summary["replica"], summary["prediction"]
    assert replica["lag_records"] == 0 and replica["rows_bootstrapped"] > 0
    assert answer["version"] == replica["applied_version"] and len(answer["predictions"]) == 3
    assert (tmp_path / "auc.png").stat().st_size > 0
    assert "Kafka stopped" in res.stdout
