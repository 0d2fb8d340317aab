"""``streamtrain train`` as a real process against the real broker: SIGTERM (``docker stop``)
and SIGINT stop it cleanly — the step in progress finishes, a checkpoint holds the offsets of
exactly what was trained, the final model is published, exit code 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from schemas import Sample, SparseDelta, codec_for
from streamtrain.cli import train as cli
from streamtrain.kafka_io import read_all
from streamtrain.paths import REPO_ROOT
from sync.dump import latest_dump
from tests.helpers.trainer_models import SLOTS, train_argv
from trainer import checkpoint
from trainer.synthetic import SyntheticStream

pytestmark = pytest.mark.integration
TOTAL = 20000


def _wait_for(cond, proc, deadline_s: float, what: str, log_path) -> None:
    deadline = time.monotonic() + deadline_s
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"train exited ({proc.returncode}) before {what}:\n{log_path.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {deadline_s:.0f}s:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.05)


def _metrics_lines(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_train_process_stops_cleanly_on_signal(kafka_broker, topics, producer, tmp_path, capsys, sig):
    codec = codec_for(Sample)
    for i, s in enumerate(SyntheticStream(num_slots=SLOTS, seed=5).take(TOTAL)):
        producer.send(topics.samples, codec.encode(s), partition=i % 2)
    producer.flush()
    argv = train_argv(kafka_broker, topics, tmp_path, "--batch-size", "50",
                      sets=["trainer.report_every_batches=1", "trainer.checkpoint_every_batches=100000"])
    out_path, log_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out, log_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "streamtrain.cli", "train", *argv],
                                cwd=REPO_ROOT, stdout=out, stderr=err)
    try:
        _wait_for(lambda: _metrics_lines(tmp_path / "m.jsonl"), proc, 180, "trained batch", log_path)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, log_path.read_text()[-4000:]
    final = json.loads(out_path.read_text().strip().splitlines()[-1])
    assert final["stopped_by"] == sig.name and 0 < final["samples"] <= TOTAL

    # a checkpoint at the last step, with the offsets of exactly the samples trained
    # (checkpoint_every_batches is out of reach: only the stop wrote it)
    state = checkpoint.load(checkpoint.latest(tmp_path / "ckpt"))
    assert state["step"] == final["step"] and state["samples"] == final["samples"]
    assert sum(state["positions"].values()) == final["samples"]
    assert all(0 < off <= TOTAL // 2 for off in state["positions"].values())

    # the final publish: a dump and the newest deltas at the final version
    dump = latest_dump(tmp_path / "dumps", "ctr")
    assert dump is not None and dump.version == final["model_version"]
    deltas = [codec_for(SparseDelta).decode(r.value) for r in read_all(kafka_broker, topics.model_deltas)]
    assert max(d.version for d in deltas) == final["model_version"]

    # nothing lost: a restart trains exactly the rest
    assert cli.main(train_argv(kafka_broker, topics, tmp_path, "--batch-size", "500",
                               "--idle-timeout", "1")) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["samples"] == TOTAL and "stopped_by" not in again
