"""Monolith's sync-interval experiment: the AUC of the predictions actually served when the
serving replica receives the trainer's sparse and dense updates every 5 s, 1 min, 10 min or
1 h of event time, or never again after the warm-up (frozen). One trainer, five replicas
fed through the real delta path (``bench.experiments_common``); every impression after the
warm-up is scored at its impression time by each replica and judged on its final labels.

Streams: the generator's drifting stream over ``--sync-hours`` hours at ``--sync-rate``
impressions/s (warm-up 1 h), and the TalkingData log (3 days, warm-up 6 h), both joined with
the pipeline's default 10 min window.

Per replica and head, ``by_minute_of_hour`` gives the served calibration of the impressions
in each 10-minute part of the clock hour (the epoch hour, which the generator's hour-of-day
slot reads): for the first ~10 minutes of an hour no sample carrying the new hour id has
reached the trainer yet (each waits out the join window), so serving reads that id's row as
zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.experiments_common import (
    HOUR_MS,
    START_MS,
    SimConfig,
    impressions,
    run_only,
    save_figure,
    serve,
    span_stream,
)
from bench.trainer_peers import summarize

INTERVALS = (("5s", 5_000), ("1min", 60_000), ("10min", 600_000), ("1h", HOUR_MS))
WARMUP_MS = {"generator": HOUR_MS, "talkingdata": 6 * HOUR_MS}


def _judge(p: np.ndarray, y: np.ndarray, heads: tuple[str, ...]) -> dict:
    ones = np.ones(len(y))
    return {h: summarize(p[:, k], y[:, k], ones) for k, h in enumerate(heads)}


def run_stream(name: str, hours: float, rate: float, sets: tuple[str, ...] = ()) -> dict:
    stream = span_stream(name, hours, rate)
    imps = impressions(stream)
    warm = WARMUP_MS[name]
    start = int(imps.event_ms[0]) // 5_000 * 5_000
    reps = tuple((n, iv, None) for n, iv in INTERVALS) + (("frozen", 5_000, warm),)
    sim = serve(stream, imps, SimConfig(tick_ms=5_000, replicas=reps, sets=sets), start_ms=start)
    after = imps.since(start + warm)
    y = imps.labels[after]
    out: dict = {"impressions": int(len(imps.samples)), "judged": int(after.sum()),
                 "positives": dict(zip(stream.heads, y.sum(0).astype(int).tolist())),
                 "span_hours": round(float(imps.event_ms[-1] - imps.event_ms[0]) / HOUR_MS, 2),
                 "warmup_hours": warm / HOUR_MS, "sim_seconds": sim.seconds, "versions": sim.versions,
                 "syncs": sim.syncs, "replicas": {}, "hourly": {}, "by_minute_of_hour": {}}
    hour = ((imps.event_ms[after] - start) // HOUR_MS).astype(int)
    for rep, p in sim.preds.items():
        out["replicas"][rep] = _judge(p[after], y, stream.heads)
        out["hourly"][rep] = [summarize(p[after][hour == h, 0], y[hour == h, 0], np.ones(int((hour == h).sum())))["auc"]
                              for h in range(int(hour.min()), int(hour.max()) + 1)]
        out["by_minute_of_hour"][rep] = by_minute_of_hour(p[after], y, imps.event_ms[after], stream.heads)
    if imps.oracle is not None:
        out["replicas"]["oracle"] = _judge(imps.oracle[after], y, stream.heads)
    prog = sim.progressive
    out["progressive"] = {h: prog[h]["cumulative"].get("auc") for h in stream.heads}
    head = stream.heads[0]
    for rep, r in out["replicas"].items():
        print(f"  {name:12s} {rep:7s} {head} AUC={r[head]['auc']} NE={r[head]['ne']} "
              f"calibration={r[head]['calibration']}", flush=True)
    return out


def by_minute_of_hour(p: np.ndarray, y: np.ndarray, event_ms: np.ndarray, heads: tuple[str, ...]) -> dict:
    """Per head, calibration (sum of predictions / positives) of the impressions in minutes
    0-10, 10-20, ... 50-60 of their clock hour.

    >>> by_minute_of_hour(np.array([[0.2], [0.1]]), np.array([[1.0], [1.0]]), np.array([0, 600_000]), ("click",))
    {'click': {'0-10': 0.2, '10-20': 0.1, '20-30': None, '30-40': None, '40-50': None, '50-60': None}}
    """
    part = (event_ms // 600_000) % 6
    out: dict = {}
    for k, h in enumerate(heads):
        cal = {}
        for j in range(6):
            pos = float(y[part == j, k].sum())
            cal[f"{10 * j}-{10 * j + 10}"] = round(float(p[part == j, k].sum()) / pos, 3) if pos > 0 else None
        out[h] = cal
    return out


def run(streams: list[str], hours: float, rate: float, sets: tuple[str, ...] = ()) -> dict:
    out: dict = {"setup": {"generator_hours": hours, "generator_rate": rate, "tick_ms": 5_000, "sets": list(sets),
                           "join_window_ms": 600_000, "start_ms": START_MS,
                           "delta_path": "Trainer.collect_updates -> build_deltas (1 shard, fp32) -> "
                                         "DeltaApplier -> MemoryRowStore; dense: ServingModel"}}
    for name in streams:
        if name in WARMUP_MS:
            out[name] = run_stream(name, hours, rate, sets)
    return out


def plot(result: dict, path: Path) -> None:
    """AUC of served predictions vs sync interval (frozen at the right), and the generator's
    click AUC per hour per replica."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [n for n, _ in INTERVALS] + ["frozen"]
    for stream in [s for s in WARMUP_MS if s in result]:
        r = result[stream]
        head = next(iter(r["positives"]))
        base = r["replicas"]["5s"][head]["auc"]
        axes[0].plot(range(len(names)), [r["replicas"][n][head]["auc"] - base for n in names], "-o",
                     label=f"{stream} {head} (5 s AUC {base})")
    axes[0].set_xticks(range(len(names)), names)
    axes[0].set(xlabel="sparse + dense sync interval", ylabel="served AUC - served AUC at 5 s",
                title="sync interval (served predictions)")
    axes[0].axhline(0.0, color="grey", lw=0.5)
    gen = result.get("generator")
    if gen:
        for n in names:
            pts = gen["hourly"][n]
            axes[1].plot(np.arange(len(pts)) + gen["warmup_hours"], pts, label=n, lw=1)
        axes[1].set(xlabel="event-time hour", ylabel="served click AUC in the hour",
                    title="generator: served click AUC per hour")
    save_figure(fig, axes, path)


def main(argv: list[str] | None = None) -> None:
    run_only("sync", argv)
