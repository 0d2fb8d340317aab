"""``streamtrain demo`` fails in one line, never a traceback: exit code 2 on a bad setting
(naming it), 1 when the broker cannot start. No broker or Flink needed."""

import os
import subprocess
import sys

import pytest

from streamtrain.local_kafka import free_port
from streamtrain.paths import REPO_ROOT


def _demo(*args: str, env: dict[str, str] | None = None, tmp_path=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "streamtrain.cli", "batch-demo", "--set", f"demo.out_dir={tmp_path}", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("args, toml, expected", [
    (["--set", "demo.duration_s=-5"], None, "demo.duration_s=-5.0 is invalid: (0, 604800]"),
    (["--set", "demo.port=http"], None, "demo.port='http' is invalid: expected int"),
    (["--set", "dmeo.port=1"], None, "unknown config section 'dmeo' (did you mean 'demo'?)"),
    (["--set", "demo.prot=1"], None, "demo.prot is not a setting"),
    ([], '[demo]\nport = "9092"\n', "demo.port='9092'"),
    ([], '[demoo]\nport = 9092\n', "unknown config section 'demoo' (did you mean 'demo'?)"),
])
def test_demo_bad_config_is_exit_2_and_one_line_naming_the_key(tmp_path, args, toml, expected):
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        args = ["--config", str(tmp_path / "c.toml"), *args]
    res = _demo(*args, tmp_path=tmp_path / "out")
    assert res.returncode == 2, res.stdout + res.stderr
    assert expected in _one_line_error(res)


def test_demo_bad_config_from_the_environment_is_exit_2(tmp_path):
    res = _demo(env={"STREAMTRAIN_DEMO__KEEP_BROKER": "maybe"}, tmp_path=tmp_path)
    assert res.returncode == 2
    assert "demo.keep_broker='maybe' is invalid: expected true or false" in _one_line_error(res)


def test_demo_without_a_broker_is_exit_1_and_one_line(tmp_path):
    """No Kafka jars (or no java): the broker cannot start; say so and how to fix it."""
    (tmp_path / "nojars").mkdir()
    res = _demo("--set", f"demo.port={free_port()}", "--set", f"demo.controller_port={free_port()}",
                env={"STREAMTRAIN_JARS_DIR": str(tmp_path / "nojars")}, tmp_path=tmp_path / "out")
    assert res.returncode == 1, res.stdout + res.stderr
    line = _one_line_error(res)
    assert "demo failed:" in line and ("Kafka jars not found" in line or "java not found" in line)
