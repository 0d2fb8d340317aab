"""Online vs daily batch training: the AUC of what each serves on each day's traffic.

    online  the streaming trainer (``Trainer.train_batch`` on the samples as the joiner emits
            them), its replica synced every minute of event time through the real delta path
            (``bench.experiments_common``)
    batch   at the start of each day, a fresh trainer (same configs) trained for ``EPOCHS``
            epochs, each in a new random order, on every sample emitted before that moment,
            then loaded into a replica (``Trainer.full_dump`` -> ``build_deltas`` ->
            ``DeltaApplier``; dense ``ServingModel``) and frozen for that day's traffic

Days are 24 h of event time from the first impression. Day 1 has no batch model (nothing
to train on yet); it is the online model's warm-up and is reported but not compared.
Streams: the generator's drifting stream over ``--batch-days`` days at ``--batch-rate``
impressions/s, and the TalkingData log (3 days).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.experiments_common import (
    HOUR_MS,
    MODEL,
    Impressions,
    Replica,
    SimConfig,
    impressions,
    run_only,
    save_figure,
    serve,
    span_stream,
)
from bench.peer_streams import PeerStream
from bench.trainer_peers import configs, parse_sets, summarize
from sync.delta_builder import build_deltas
from trainer.batch import BatchBuilder
from trainer.trainer import Trainer

DAY_MS = 24 * HOUR_MS
EPOCHS = 3


def batch_model(stream: PeerStream, imps: Impressions, before_ms: int, day: slice, seed: int) -> np.ndarray:
    """Train a fresh model on the samples emitted before ``before_ms`` and serve ``day``."""
    torch.manual_seed(0)
    model, table, cfg = configs(stream, parse_sets([]))
    trainer = Trainer(model, table, cfg)
    builder = BatchBuilder(model)
    data = [s for s in stream.samples if s.emit_time_ms < before_ms]
    rng = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        order = rng.permutation(len(data))
        for at in range(0, len(data), cfg.batch_size):
            trainer.train_batch(builder.build([data[k] for k in order[at: at + cfg.batch_size]]))
    replica = Replica("batch", DAY_MS)
    replica.receive([d for _, d in build_deltas(MODEL, 1, trainer.full_dump(), 1, "fp32", 900_000, before_ms)],
                    before_ms)
    replica.sync(1, trainer.model_config(), trainer.dense_state_dict())
    samples = imps.samples[day]
    return np.concatenate([replica.score(samples[at: at + 20_000]) for at in range(0, len(samples), 20_000)])


def run_stream(name: str, days: float, rate: float) -> dict:
    stream = span_stream(name, days * 24, rate)
    imps = impressions(stream)
    start = int(imps.event_ms[0]) // 60_000 * 60_000
    sim = serve(stream, imps, SimConfig(tick_ms=60_000, replicas=(("online", 60_000, None),)), start_ms=start)
    online = sim.preds["online"]
    n_days = int((imps.event_ms[-1] - start) // DAY_MS) + 1
    out: dict = {"impressions": len(imps.samples), "samples": len(stream.samples), "epochs": EPOCHS,
                 "online_sim_seconds": sim.seconds, "days": []}
    heads = stream.heads
    for d in range(n_days):
        lo, hi = (int(np.searchsorted(imps.event_ms, start + k * DAY_MS)) for k in (d, d + 1))
        if hi - lo < 1000:
            continue  # a last partial day of a few impressions
        y, ones = imps.labels[lo:hi], np.ones(hi - lo)
        row: dict = {"day": d + 1, "impressions": hi - lo, "positives": y.sum(0).astype(int).tolist(),
                     "online": {h: summarize(online[lo:hi, k], y[:, k], ones) for k, h in enumerate(heads)}}
        if d > 0:
            p = batch_model(stream, imps, start + d * DAY_MS, slice(lo, hi), seed=d)
            row["batch"] = {h: summarize(p[:, k], y[:, k], ones) for k, h in enumerate(heads)}
            row["batch_trained_on"] = sum(1 for s in stream.samples if s.emit_time_ms < start + d * DAY_MS)
        if imps.oracle is not None:
            row["oracle"] = {h: summarize(imps.oracle[lo:hi, k], y[:, k], ones) for k, h in enumerate(heads)}
        h0 = heads[0]
        print(f"  {name:12s} day {d + 1}: online {h0} AUC={row['online'][h0]['auc']} "
              f"cal={row['online'][h0]['calibration']}" + (f"  batch AUC={row['batch'][h0]['auc']} "
                                                            f"cal={row['batch'][h0]['calibration']}"
                                                            if "batch" in row else ""), flush=True)
        out["days"].append(row)
    return out


def run(streams: list[str], days: float, rate: float) -> dict:
    out: dict = {"setup": {"generator_days": days, "generator_rate": rate, "epochs": EPOCHS,
                           "online_sync_ms": 60_000, "join_window_ms": 600_000}}
    for name in streams:
        if name in ("generator", "talkingdata"):
            out[name] = run_stream(name, days, rate)
    return out


def plot(result: dict, path: Path) -> None:
    """Per-day AUC of the primary head, online vs daily batch, per stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = [s for s in ("generator", "talkingdata") if s in result]
    fig, axes = plt.subplots(1, max(1, len(streams)), figsize=(5.5 * max(1, len(streams)), 4), squeeze=False)
    for ax, stream in zip(axes[0], streams):
        days = result[stream]["days"]
        head = next(iter(days[0]["online"]))
        ax.plot([d["day"] for d in days], [d["online"][head]["auc"] for d in days], "-o", label="online (1 min sync)")
        b = [d for d in days if "batch" in d]
        ax.plot([d["day"] for d in b], [d["batch"][head]["auc"] for d in b], "-s",
                label=f"daily batch ({EPOCHS} epochs), frozen for the day")
        if "oracle" in days[0]:
            ax.plot([d["day"] for d in days], [d["oracle"][head]["auc"] for d in days], ":", label="generator truth")
        ax.set(xlabel="day", ylabel=f"served {head} AUC on the day's traffic", title=f"{stream}: online vs batch")
        ax.set_xticks([d["day"] for d in days])
    save_figure(fig, axes[0], path)


def main(argv: list[str] | None = None) -> None:
    run_only("batch", argv)
