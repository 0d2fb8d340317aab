"""Delayed feedback: the conversion head's served AUC and calibration under three ways of
labelling a stream whose conversions come after lognormal delays (the generator: click
after ~15 s, conversion ~15 min after the click, sigma 1.3, up to 4 h; TalkingData: installs
2 s to 12.9 h after the click). Every policy's samples come out of the real join core
(``streaming.joiner.JoinCore`` via ``bench.experiments_common.span_stream``):

    fn_weighting    the pipeline's default: the joiner emits the impression when its 10 min
                    window closes (a negative if no label came yet) and a late label as a
                    FLAG_LATE_CORRECTION positive; the trainer weights both by fake-negative
                    weighting (``trainer.delayed_feedback=fn_weighting``, ``trainer.weighting``)
    fn_weighting_1min  the same with a 1 min window: negatives almost as early as the
                    impression (Ktena et al.'s setting), more of the labels as corrections
    corrections_unweighted  the 10 min stream with its corrections, no weighting
                    (``delayed_feedback=none``): the fake negative and the positive both count
    none            negative at window expiry, late labels dropped (corrections left out)
    oracle_join     a window longer than the longest delay (4 h 10 min; TalkingData 13 h):
                    every label joins, nothing is corrected, but each sample reaches the
                    trainer only when its window closes

The trainer learns each policy's samples at their emission time; the replica syncs every
5 min of event time (``bench.experiments_common``); every impression is scored at its
impression time and judged on every label it eventually got, from two points on
(``JUDGED_FROM_MS``). On the generator the model is run with and without its hour-of-day
slot (``VARIANTS``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.experiments_common import (
    HOUR_MS,
    Impressions,
    SimConfig,
    impressions,
    run_only,
    save_figure,
    serve,
    span_stream,
    without_late,
)
from bench.peer_streams import PeerStream
from bench.trainer_peers import summarize
from schemas import FLAG_LATE_CORRECTION

POLICIES = ("fn_weighting", "fn_weighting_1min", "corrections_unweighted", "none", "oracle_join")
ORACLE_WINDOW_MS = {"generator": 4 * HOUR_MS + 600_000, "talkingdata": 13 * HOUR_MS}
# judged from: 1 h (6 h on TalkingData), and once the oracle join has trained on its first
# windows (its window + 50 min): before that it serves an untrained model, which says
# more about a finite stream's start than about delayed feedback
JUDGED_FROM_MS = {"generator": (HOUR_MS, 5 * HOUR_MS), "talkingdata": (6 * HOUR_MS, 14 * HOUR_MS)}
# the generator's hour-of-day slot (6) brings a new id every hour; its first row-wise Adagrad
# step is about lr whatever the gradient, and as every sample holds one hour id the row acts
# as a per-hour bias: the rare conversion head's calibration spikes for an hour at a time.
# Without it the delayed-feedback effect is visible on its own.
VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "generator": {"all_slots": (), "no_hour_slot": ("model.slots=0,1,2,3,4,5,7",)},
    "talkingdata": {"all_slots": ()}}
TICK_MS = 300_000  # trainer batches cut and the replica synced every 5 min of event time


def _policy_stream(name: str, policy: str, hours: float, rate: float) -> tuple[PeerStream, tuple[str, ...]]:
    window = {"oracle_join": ORACLE_WINDOW_MS[name], "fn_weighting_1min": 60_000}.get(policy, 600_000)
    stream = span_stream(name, hours, rate, window_ms=window)
    if policy == "none":
        stream = without_late(stream)
    feedback = "fn_weighting" if policy.startswith("fn_weighting") else "none"
    return stream, (f"trainer.delayed_feedback={feedback}",)


def _judge(p: np.ndarray, imps: Impressions, masks: dict[str, np.ndarray], heads: tuple[str, ...]) -> dict:
    return {w: {h: summarize(p[m, k], imps.labels[m, k], np.ones(int(m.sum()))) for k, h in enumerate(heads)}
            for w, m in masks.items()}


def run_stream(name: str, hours: float, rate: float) -> dict:
    # the judged impressions and labels: the same for every policy (the 10 min join's)
    base = span_stream(name, hours, rate)
    imps, heads = impressions(base), base.heads
    start = int(imps.event_ms[0]) // TICK_MS * TICK_MS
    masks = {f"after_{t // HOUR_MS}h": imps.since(start + t) for t in JUDGED_FROM_MS[name]}
    out: dict = {"judged": {w: int(m.sum()) for w, m in masks.items()},
                 "positives": {w: dict(zip(heads, imps.labels[m].sum(0).astype(int).tolist()))
                               for w, m in masks.items()}, "variants": {}}
    head = "conversion" if "conversion" in heads else heads[0]
    for variant, model_sets in VARIANTS[name].items():
        rows: dict = {}
        for policy in POLICIES:
            stream, sets = _policy_stream(name, policy, hours, rate)
            sim = serve(stream, imps, SimConfig(tick_ms=TICK_MS, replicas=(("5min", TICK_MS, None),),
                                                sets=sets + model_sets), start_ms=start)
            late = sum(1 for s in stream.samples if s.flags & FLAG_LATE_CORRECTION)
            row = _judge(sim.preds["5min"], imps, masks, heads)
            row |= {"samples": len(stream.samples), "late_corrections": late, "sets": list(sets + model_sets),
                    "sim_seconds": sim.seconds,
                    "trained_positives": dict(zip(heads, _trained_positives(stream, heads)))}
            rows[policy] = row
            print(f"  {name:12s} {variant:12s} {policy:24s} {head} " + "  ".join(
                f"{w}: AUC={row[w][head]['auc']} cal={row[w][head]['calibration']}" for w in masks)
                + f"  ({len(stream.samples)} samples, {late} corrections)", flush=True)
        if imps.oracle is not None:
            rows["generator_truth"] = _judge(imps.oracle, imps, masks, heads)
        out["variants"][variant] = rows
    return out


def _trained_positives(stream: PeerStream, heads: tuple[str, ...]) -> list[int]:
    return [sum(1 for s in stream.samples if h in s.label_types) for h in heads]


def run(streams: list[str], hours: float, rate: float) -> dict:
    out: dict = {"setup": {"generator_hours": hours, "generator_rate": rate, "tick_ms": TICK_MS,
                           "replica_sync_ms": TICK_MS, "judged_from_ms": JUDGED_FROM_MS,
                           "oracle_window_ms": ORACLE_WINDOW_MS}}
    for name in streams:
        if name in ORACLE_WINDOW_MS:
            out[name] = run_stream(name, hours, rate)
    return out


def plot(result: dict, path: Path) -> None:
    """Conversion-head AUC and calibration of served predictions, per policy and stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    bars = [(stream, variant, rows) for stream in ORACLE_WINDOW_MS if stream in result
            for variant, rows in result[stream]["variants"].items()]
    width = 0.8 / max(1, len(bars))
    for j, (stream, variant, rows) in enumerate(bars):
        window = f"after_{JUDGED_FROM_MS[stream][1] // HOUR_MS}h"  # the oracle join trained
        xs = np.arange(len(POLICIES)) + j * width
        label = f"{stream} {variant.replace('_', ' ')} ({window.replace('_', ' ')})"
        base = rows["fn_weighting"][window]["conversion"]["auc"] or 0.0  # None: nothing judged
        axes[0].bar(xs, [(rows[p][window]["conversion"]["auc"] or base) - base for p in POLICIES], width,
                     label=f"{label}, fn_weighting AUC {base}")
        axes[1].bar(xs, [rows[p][window]["conversion"]["calibration"] or 0 for p in POLICIES], width, label=label)
    for ax, title in ((axes[0], "served conversion AUC - fn_weighting's"),
                      (axes[1], "served conversion calibration (pred / observed)")):
        ax.set_xticks(np.arange(len(POLICIES)) + width * (len(bars) - 1) / 2,
                      [p.replace("_", "\n") for p in POLICIES], fontsize=7)
        ax.set(title=title)
    axes[0].axhline(0.0, color="grey", lw=0.8)
    axes[1].axhline(1.0, color="grey", lw=0.8)
    save_figure(fig, axes, path, legend_size=7, grid_axis="y")


def main(argv: list[str] | None = None) -> None:
    run_only("delay", argv)
