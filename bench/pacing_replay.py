"""Negative pacing (``trainer.pacing``) on a real run's sample stream: the ``samples`` topic of
a run directory (``streamtrain up`` / ``streamtrain demo``) replayed through the trainer as
the live trainer met it (records in the order the joiner emitted them, by their
``emit_time_ms``: the joiner's watermark when it emitted the sample, which only grows in
the order of emission; batches cut every ``trainer.max_wait_ms`` of that clock or at
``trainer.batch_size``), with pacing off and on, same model, same seed, in the same
process. Prints, for each, the click AUC, NE and calibration of the predictions as a
replica would have served them (``ServedLike``: the model trained on what was emitted up
to ``--served-lag-ms`` before each impression, on the watermark's clock, which trails the
wall clock by the inputs' out-of-orderness bound and the pipeline's delay) and the
trainer's own progressive figures, which are no fair judge here (with pacing a held
negative is scored after the model trained on newer positives; without, batches of one
label are scored).

The Kafka timestamps of ``samples`` are event times (the label's, or the window's end), up
to 9 s ahead of the joiner's watermark when it emitted the record, and not in emission
order: replayed by them, the trainer would see samples seconds early, positives ahead of
the negatives they came with, and pacing looked like a gain (0.665 -> 0.679) that the
emission order does not show (0.663 -> 0.651 at 8 s).

It starts the run's broker on a copy of its data (the run itself is left alone).

    .venv/bin/python -m bench.pacing_replay --run-dir .streamtrain/demo [--pacing off,on]
        [--served-lag-ms 2000,8000] [--dense-every-ms 10000] [--set max_wait_ms=1000]
    streamtrain bench pacing_replay --run-dir .streamtrain/demo

Writes ``bench/results/pacing_replay.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import write_result
from bench.trainer_peers import summarize
from schemas import FLAG_LATE_CORRECTION, Sample, codec_for
from streamtrain.kafka_io import KafkaConfig, read_all
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port
from trainer.batch import Batch, BatchBuilder, take
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.pacing import NegativePacer
from trainer.trainer import Trainer


def read_samples(run_dir: Path) -> list[tuple[int, int, int, Sample]]:
    """(emit time, partition, offset, sample) of the run's ``samples`` topic, in emit order."""
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
    samples = ((r.partition, r.offset, codec.decode(r.value)) for r in records)
    return sorted((s.emit_time_ms, p, o, s) for p, o, s in samples)


class ArrivalSource:
    """The samples as the live trainer polled them: cut every ``max_wait_ms`` of emit
    time or at ``batch_size``; the clock follows the records' emit times."""

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


class ServedLike:
    """Each sample scored as a replica served it: by the model as it was ``lag_ms`` before its
    impression (snapshots every second of the stream), so no sample's score has seen a
    sample that came later; late corrections are left out (their impression is counted
    with the negative emitted at its window's close)."""

    def __init__(self, model: ModelConfig, lag_ms: int = 2000, keep_ms: int = 60_000, dense_every_ms: int = 0) -> None:
        self.model, self.lag_ms, self.keep_ms, self.dense_every_ms = model, lag_ms, keep_ms, dense_every_ms
        self.snaps: deque[tuple[float, Trainer]] = deque()
        self._dense: tuple[float, dict] | None = None  # the last dense weights "published"
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.times: list[np.ndarray] = []

    def score(self, batch: Batch) -> None:
        if not self.snaps:
            return
        at = np.searchsorted([t for t, _ in self.snaps], batch.event_time_ms - self.lag_ms, side="right") - 1
        late = (batch.flags & FLAG_LATE_CORRECTION) != 0
        for k in np.unique(at[at >= 0]):
            rows = np.flatnonzero((at == k) & ~late)
            if len(rows):
                sub = take(batch, rows)
                self.scores.append(self.snaps[k][1].predict(sub)[:, 0])
                self.labels.append(sub.labels[:, 0])
                self.times.append(sub.event_time_ms)

    def snapshot(self, trainer: Trainer, now_ms: float) -> None:
        if self.snaps and now_ms - self.snaps[-1][0] < 1000:
            return
        copy = Trainer(self.model, TableConfig(), TrainerConfig(device="cpu", bias_tracking_samples=0))
        copy.table.restore(trainer.table.snapshot())
        if self.dense_every_ms and (self._dense is None or now_ms - self._dense[0] >= self.dense_every_ms):
            self._dense = (now_ms, {k: v.clone() for k, v in trainer.model.state_dict().items()})
        copy.model.load_state_dict(self._dense[1] if self._dense is not None else trainer.model.state_dict())
        self.snaps.append((now_ms, copy))
        while self.snaps[0][0] < now_ms - self.keep_ms:
            self.snaps.popleft()

    def report(self) -> dict[str, float]:
        """Over the second half of the stream (event time): AUC, NE and calibration."""
        s, y, t = (np.concatenate(x) for x in (self.scores, self.labels, self.times))
        half = t >= np.quantile(t, 0.5)
        out = summarize(s[half], y[half], np.ones(int(half.sum())))
        return {k: out[k] for k in ("auc", "ne", "calibration", "n")}


def run_model(run_dir: Path) -> ModelConfig:
    """The model layout the run's trainer had (its ``--set model.*`` in ``stack.json``)."""
    argv = json.loads((run_dir / "stack.json").read_text())["stages"]["train"]["argv"]
    sets = dict(a.split("=", 1) for a in argv if a.startswith("model."))
    return ModelConfig(slots=tuple(int(x) for x in sets["model.slots"].split(",")),
                       dense_dim=int(sets["model.dense_dim"]))


def replay(rows: list, model: ModelConfig, pacing: bool, lag_ms: int = 2000, dense_every_ms: int = 0,
           sets: dict[str, Any] | None = None) -> dict:
    torch.manual_seed(0)
    sets = dict(sets or {})
    model = dataclasses.replace(model, **{k[len("model."):]: sets.pop(k) for k in list(sets) if k.startswith("model.")})
    table = dataclasses.replace(TableConfig(), **{k[len("embedding."):]: sets.pop(k)
                                                  for k in list(sets) if k.startswith("embedding.")})
    cfg = dataclasses.replace(TrainerConfig(device="cpu", pacing=pacing), **sets)
    trainer = Trainer(model, table, cfg)
    arrivals = ArrivalSource(rows, model, cfg)
    source = NegativePacer(arrivals, cfg, clock=lambda: arrivals.now_s) if pacing else arrivals
    served = ServedLike(model, lag_ms=lag_ms, dense_every_ms=dense_every_ms)
    t0 = time.perf_counter()
    while (batch := source.next_batch()) is not None or not arrivals.exhausted:
        if batch is None or not len(batch):
            continue
        served.score(batch)
        trainer.train_batch(batch)
        served.snapshot(trainer, arrivals.now_s * 1000)
    report = trainer.validator.report()
    out: dict[str, Any] = {"pacing": pacing, "served_lag_ms": lag_ms, "dense_every_ms": dense_every_ms,
                           "samples": trainer.samples, "steps": trainer.step,
                           "seconds": round(time.perf_counter() - t0, 1), "served_like_click": served.report()}
    for head in model.heads:
        out[head] = {w: {k: (None if report[head][w][k] is None else round(float(report[head][w][k]), 4))
                         for k in ("auc", "ne", "calibration")} for w in ("window", "cumulative")}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=".streamtrain/demo")
    p.add_argument("--name", default="pacing_replay", help="bench/results/<name>.json")
    p.add_argument("--served-lag-ms", default="2000",
                   help="comma-separated: how stale the served model is (the live demo's freshness p50 is ~7 s)")
    p.add_argument("--pacing", default="off,on", help="off | on | off,on")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help="a trainer field for the replayed trainer, e.g. max_wait_ms=1000, or an "
                        "embedding.* or model.* one (a number, a word, or model.slots), e.g. model.pooling=sum")
    p.add_argument("--dense-every-ms", type=int, default=0,
                   help="the served dense weights change only this often (the stack's sync.dense_interval_s); "
                        "0 = with every snapshot")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    types = {f.name: f.type for f in dataclasses.fields(TrainerConfig)}
    types |= {f"embedding.{f.name}": f.type for f in dataclasses.fields(TableConfig)}
    types |= {f"model.{f.name}": f.type for f in dataclasses.fields(ModelConfig) if f.type in ("int", "float", "str")}
    types["model.slots"] = "slots"  # e.g. model.slots=0,1,2,3,4,5,6,7: the run's without the last-N slot
    parse = {"int": int, "float": float, "bool": lambda v: v in ("1", "true"),
             "slots": lambda v: tuple(int(x) for x in v.split(","))}
    sets = {k: parse.get(str(types[k]), str)(v) for k, _, v in (s.partition("=") for s in args.sets)}
    rows = read_samples(Path(args.run_dir))
    model = run_model(Path(args.run_dir))
    labelled = np.array([bool(r[3].label_types) for r in rows])
    result: dict = {"command": "python -m bench.pacing_replay " + " ".join(argv or []),
                    "samples": len(rows), "labelled_fraction": round(float(labelled.mean()), 4), "runs": []}
    for pacing, lag_ms in ((p == "on", int(lag)) for p in args.pacing.split(",")
                           for lag in args.served_lag_ms.split(",")):
        out = replay(rows, model, pacing, lag_ms, args.dense_every_ms, sets)
        result["runs"].append(out)
        c, sv = out["click"], out["served_like_click"]
        print(f"pacing={'on ' if pacing else 'off'} lag={lag_ms}ms samples={out['samples']} steps={out['steps']}  "
              f"click as served (2nd half) AUC {sv['auc']} NE {sv['ne']} cal {sv['calibration']}  "
              f"progressive window AUC {c['window']['auc']} NE {c['window']['ne']} cal {c['window']['calibration']}  "
              f"cumulative AUC {c['cumulative']['auc']} NE {c['cumulative']['ne']}")
    summary = Path(args.run_dir) / "summary.json"
    if summary.exists():  # the oracle on the same run's shown impressions, for scale
        result["run_oracle_click"] = json.loads(summary.read_text()).get("oracle", {}).get("click")
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
