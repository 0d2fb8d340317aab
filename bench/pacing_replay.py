"""Negative pacing (``trainer.pacing``) on a real run's sample stream: the ``samples`` topic of
a run directory (``streamtrain up`` / ``streamtrain demo``) replayed through the trainer as
the live trainer met it (records in arrival order, i.e. Kafka timestamp; batches cut every
``trainer.max_wait_ms`` or at ``trainer.batch_size``), with pacing off and on, same model,
same seed, in the same process. Prints progressive click AUC / NE / calibration of both.

It starts the run's broker on a copy of its data (the run itself is left alone).

    .venv/bin/python -m bench.pacing_replay --run-dir .streamtrain/demo
    streamtrain bench pacing_replay --run-dir .streamtrain/demo

Writes ``bench/results/pacing_replay.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import write_result
from schemas import Sample, codec_for
from streamtrain.cli.stack import model_settings
from streamtrain.kafka_io import KafkaConfig, read_all
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port
from trainer.batch import Batch, BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.pacing import NegativePacer
from trainer.trainer import Trainer


def read_samples(run_dir: Path) -> list[tuple[int, int, int, Sample]]:
    """(kafka timestamp, partition, offset, sample) of the run's ``samples`` topic."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "kafka"
        shutil.copytree(run_dir / "kafka", data)
        broker = LocalKafka(LocalKafkaConfig(port=free_port(), controller_port=free_port(), data_dir=data))
        broker.start()
        try:
            records = read_all(KafkaConfig(bootstrap=broker.config.bootstrap), "samples", timeout_s=120)
        finally:
            broker.stop()
    codec = codec_for(Sample)
    return sorted((r.timestamp, r.partition, r.offset, codec.decode(r.value)) for r in records)


class ArrivalSource:
    """The samples as the live trainer polled them: cut every ``max_wait_ms`` of Kafka time
    or at ``batch_size``; the clock follows the records' timestamps."""

    def __init__(self, rows: list[tuple[int, int, int, Sample]], model: ModelConfig, cfg: TrainerConfig) -> None:
        self.builder, self.batches, self.now_s = BatchBuilder(model), [], 0.0
        cur: list[tuple[int, int, int, Sample]] = []
        for row in rows:
            if cur and (row[0] - cur[0][0] >= cfg.max_wait_ms or len(cur) >= cfg.batch_size):
                self.batches.append(cur)
                cur = []
            cur.append(row)
        if cur:
            self.batches.append(cur)
        self.at = 0

    @property
    def exhausted(self) -> bool:
        return self.at >= len(self.batches)

    def next_batch(self, timeout_s: float = 0.0) -> Batch | None:
        if self.exhausted:
            return None
        rows = self.batches[self.at]
        self.at += 1
        self.now_s = rows[-1][0] / 1000
        positions: dict[int, int] = {}
        for _, part, off, _ in rows:
            positions[part] = max(positions.get(part, 0), off + 1)
        return self.builder.build([r[3] for r in rows], positions)

    def close(self) -> None:
        pass


def replay(rows: list, model: ModelConfig, pacing: bool) -> dict:
    torch.manual_seed(0)
    cfg = TrainerConfig(device="cpu", pacing=pacing)
    trainer = Trainer(model, TableConfig(), cfg)
    arrivals = ArrivalSource(rows, model, cfg)
    source = NegativePacer(arrivals, cfg, clock=lambda: arrivals.now_s) if pacing else arrivals
    t0 = time.perf_counter()
    trainer.run(source)
    report = trainer.validator.report()
    out: dict[str, Any] = {"pacing": pacing, "samples": trainer.samples, "steps": trainer.step,
           "seconds": round(time.perf_counter() - t0, 1)}
    for head in model.heads:
        out[head] = {w: {k: (None if report[head][w][k] is None else round(float(report[head][w][k]), 4))
                         for k in ("auc", "ne", "calibration")} for w in ("window", "cumulative")}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=".streamtrain/demo")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    rows = read_samples(Path(args.run_dir))
    settings = dict(s.split("=", 1) for s in model_settings())
    model = ModelConfig(slots=tuple(int(x) for x in settings["model.slots"].split(",")),
                        dense_dim=int(settings["model.dense_dim"]))
    labelled = np.array([bool(r[3].label_types) for r in rows])
    result: dict = {"command": "python -m bench.pacing_replay --run-dir " + args.run_dir,
                    "samples": len(rows), "labelled_fraction": round(float(labelled.mean()), 4), "runs": []}
    for pacing in (False, True):
        out = replay(rows, model, pacing)
        result["runs"].append(out)
        c = out["click"]
        print(f"pacing={'on ' if pacing else 'off'} samples={out['samples']} steps={out['steps']}  click window "
              f"AUC {c['window']['auc']} NE {c['window']['ne']} cal {c['window']['calibration']}  cumulative "
              f"AUC {c['cumulative']['auc']} NE {c['cumulative']['ne']} cal {c['cumulative']['calibration']}")
    summary = Path(args.run_dir) / "summary.json"
    if summary.exists():  # the oracle on the same run's shown impressions, for scale
        result["run_oracle_click"] = json.loads(summary.read_text()).get("oracle", {}).get("click")
    print(f"wrote {write_result('pacing_replay', result)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
