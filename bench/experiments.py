"""Monolith's experiments (Liu et al., RecSys 2022), reproduced on the benchmark streams
(``bench.peer_streams``: the generator's drifting stream and the shared logs, through the
real join core). The first two are progressive (scored before trained) and judged by
``bench.trainer_peers.judge``:

    negative_sampling  the joiner keeps negatives at rate 1, 0.3, 0.1; the trainer corrects
                       with the logit offset (``trainer.neg_sampling=logit``, the default) or
                       not at all (``none``); calibration on the un-sampled stream (the
                       primary head at the top of each entry, every head under ``heads``)
    hashed             collisionless embeddings vs a fixed-size hashed table (row = hash(id)
                       mod size, colliding ids share a row) at the collisionless table's
                       memory, 1/4 and 1/16 of it

The other three judge what was *served*: every impression scored at its impression time by
a replica fed through the real delta path, in event time (``bench.experiments_common``):

    sync               sparse + dense sync every 5 s, 1 min, 10 min, 1 h, or frozen after
                       the warm-up (``bench.experiments_sync``)
    batch              online vs a model retrained daily (3 epochs) and frozen for the next
                       day (``bench.experiments_batch``)
    delay              delayed conversions: fake-negative weighting vs late labels dropped
                       vs an oracle join that waits for every label (``bench.experiments_delay``)

    .venv/bin/python -m bench.experiments [--only negative_sampling,hashed,sync,batch,delay]
        [--generator 150000] [--sync-hours 8 --sync-rate 10] [--batch-days 4 --batch-rate 1]
        [--streams generator,talkingdata,taobao] [--tag NAME] [--set section.key=value (sync)]
    streamtrain bench experiments

The first two write ``bench/results/experiments.json`` (a rerun of one keeps the other's
figures) and ``experiments.png``; the others ``bench/results/experiments_<name>.json`` and
``.png``; with ``--tag`` their names end in ``_<tag>`` (a run with other settings beside the
default one's). ``docs/experiments.md`` quotes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS_DIR, write_result
from bench.experiments_common import save_figure
from bench.peer_streams import build
from bench.trainer_peers import configs, judge, labels_and_weights, parse_sets, run_streamtrain, steady_end
from trainer.config import TableConfig
from trainer.embedding import DynamicEmbeddingTable

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
LEGACY = ("negative_sampling", "hashed")  # written together to experiments.json
EXPERIMENTS = (*LEGACY, "sync", "batch", "delay")


class HashedEmbeddingTable(DynamicEmbeddingTable):
    """Baseline: a fixed number of rows, row = hash(id) mod size; colliding ids share a row
    (no admission, no expiry: every row exists from the start)."""

    def __init__(self, name: str, config: TableConfig, size: int):
        super().__init__(name, dataclasses.replace(config, initial_capacity=size + 1), "cpu")
        self.size = size
        self.weights[1:] = torch.randn(size, self.dim, generator=self._gen) * config.init_std
        self._high = size + 1

    def rows_for(self, ids, now_ms=None, train=False, counts=None):
        h = (np.asarray(ids, np.int64).view(np.uint64) * GOLDEN) >> np.uint64(20)
        return torch.from_numpy((h % np.uint64(self.size)).astype(np.int64) + 1)

    @torch.no_grad()
    def apply_gradients(self, rows, grads):
        uniq, inv = torch.unique(rows, return_inverse=True)  # colliding ids: one row, summed
        summed = torch.zeros(len(uniq), grads.shape[1]).index_add_(0, inv, grads)
        super().apply_gradients(uniq, summed)

    def expire(self, now_ms):
        return np.zeros(0, np.int64)

    def memory_bytes(self) -> int:
        return int(self.weights.nbytes + self.accum.nbytes)


def _row(name: str, r: dict) -> dict:
    keep = ("auc", "logloss", "ne", "calibration", "calibration_after_warmup", "calibration_steady",
            "ne_first_window")
    out = {k: r.get(k) for k in keep} | {"samples_per_s": r.get("samples_per_s")}
    print(f"  {name:34s} " + "  ".join(f"{k}={out[k]}" for k in keep), flush=True)
    return out


def negative_sampling(streams: list[str], generator: int) -> dict:
    out: dict = {}
    for name in streams:
        for rate in (1.0, 0.3, 0.1):
            stream = build(name, impressions=generator, negative_sample_rate=rate)
            for mode in ("logit", "none"):
                sets = parse_sets([f"trainer.neg_sampling={mode}"])
                model, table, cfg = configs(stream, sets)
                y, ev, _ = labels_and_weights(stream, cfg)
                p, info = run_streamtrain(stream, model, table, cfg)
                key, end = f"{name}/rate={rate}/{mode}", steady_end(stream)
                out[key] = _row(f"{name} r={rate} {mode}", info | judge(p[:, 0], y[:, 0], ev[:, 0], end))
                out[key] |= {"head": stream.heads[0], "samples": len(stream.samples),
                             "heads": {h: judge(p[:, k], y[:, k], ev[:, k], end) for k, h in enumerate(stream.heads)}}
                if rate == 1.0:
                    break  # nothing to correct
    return out


def hashed(streams: list[str], generator: int) -> dict:
    out: dict = {}
    for name in streams:
        stream = build(name, impressions=generator)
        model, table, cfg = configs(stream, parse_sets([]))
        y, ev, _ = labels_and_weights(stream, cfg)
        p, info = run_streamtrain(stream, model, table, cfg)
        budget = int(info["table_bytes"])
        end = steady_end(stream)
        out[f"{name}/collisionless"] = _row(f"{name} collisionless", info | judge(p[:, 0], y[:, 0], ev[:, 0], end))
        out[f"{name}/collisionless"] |= {"table_bytes": budget, "live_ids": info["live_ids"]}
        row_bytes = model.dim * 4 + 4  # weights + row-wise accumulator
        for label, frac in (("same_memory", 1.0), ("quarter_memory", 0.25), ("sixteenth_memory", 1 / 16)):
            size = max(1, int(budget * frac) // row_bytes)
            # every id has a (shared) row in a hashed table: none reads a field's default row
            p, info = run_streamtrain(stream, dataclasses.replace(model, field_mean_slots=()), table, cfg,
                                      HashedEmbeddingTable("emb", table, size))
            key = f"{name}/hashed_{label}"
            out[key] = _row(f"{name} hashed {label} ({size} rows)", info | judge(p[:, 0], y[:, 0], ev[:, 0], end))
            out[key] |= {"rows": size, "table_bytes": size * row_bytes}
    return out


def plot(result: dict, path: Path) -> None:
    """Calibration vs keep rate (corrected or not) and AUC vs hashed-table memory, per stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ns = result.get("negative_sampling", {})
    for stream in sorted({k.split("/")[0] for k in ns}):
        for mode, style in (("logit", "-o"), ("none", "--x")):
            pts = [(r, ns.get(f"{stream}/rate={r}/{mode}", ns.get(f"{stream}/rate={r}/logit" if r == 1.0 else "")))
                   for r in (1.0, 0.3, 0.1)]
            xs = [r for r, v in pts if v and v.get("calibration")]
            axes[0].plot(xs, [v["calibration"] for _, v in pts if v and v.get("calibration")], style,
                         label=f"{stream} {mode}")
    axes[0].set(xscale="log", yscale="log", xlabel="negative keep rate r", ylabel="calibration (pred/obs)",
                title="negative down-sampling")
    axes[0].axhline(1.0, color="grey", lw=0.5)
    hs = result.get("hashed", {})
    for stream in sorted({k.split("/")[0] for k in hs}):
        base = hs[f"{stream}/collisionless"]["auc"]
        fr = [(1.0, "same_memory"), (0.25, "quarter_memory"), (1 / 16, "sixteenth_memory")]
        axes[1].plot([f for f, _ in fr], [hs[f"{stream}/hashed_{k}"]["auc"] - base for _, k in fr], "-o",
                     label=stream)
    axes[1].set(xscale="log", xlabel="hashed table memory / collisionless", ylabel="AUC - collisionless AUC",
                title="hashed vs collisionless")
    axes[1].axhline(0.0, color="grey", lw=0.5)
    save_figure(fig, axes, path)


def _legacy(exp: str, streams: list[str], generator: int) -> dict:
    if exp == "negative_sampling":
        return negative_sampling([s for s in streams if s != "taobao"], generator)
    return hashed(streams, generator)


def _served(exp: str, streams: list[str], args: argparse.Namespace) -> tuple[dict, Callable[[dict, Path], None]]:
    """One of the experiments judged on served predictions (``bench.experiments_common``)."""
    from bench import experiments_batch, experiments_delay, experiments_sync

    if exp == "sync":
        return experiments_sync.run(streams, args.sync_hours, args.sync_rate, tuple(args.set)), experiments_sync.plot
    if exp == "batch":
        return experiments_batch.run(streams, args.batch_days, args.batch_rate), experiments_batch.plot
    return experiments_delay.run(streams, args.sync_hours, args.sync_rate), experiments_delay.plot


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(EXPERIMENTS), help=f"some of {','.join(EXPERIMENTS)}")
    p.add_argument("--streams", default="generator,talkingdata,taobao")
    p.add_argument("--generator", type=int, default=150_000, help="generator impressions (first two)")
    p.add_argument("--sync-hours", type=float, default=8.0, help="generator span of sync and delay (h)")
    p.add_argument("--sync-rate", type=float, default=10.0, help="... its impressions/s of event time")
    p.add_argument("--batch-days", type=float, default=4.0, help="generator span of batch (days)")
    p.add_argument("--batch-rate", type=float, default=1.0, help="... its impressions/s of event time")
    p.add_argument("--tag", default="", help="write experiments[_<name>]_<tag>.json/.png (other settings, "
                                              "kept beside the default run's)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="trainer setting for the sync experiment (as bench.trainer_peers); use with --tag")
    args = p.parse_args(argv)
    tag = f"_{args.tag}" if args.tag else ""
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    streams = args.streams.split(",")
    command = "python -m bench.experiments " + " ".join(argv or [])
    legacy: dict = {}
    for exp in args.only.split(","):
        if exp not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {exp!r}; one of {EXPERIMENTS}")
        print(f"== {exp}", flush=True)
        t0 = time.perf_counter()
        if exp in LEGACY:
            legacy[exp] = _legacy(exp, streams, args.generator)
            continue
        result, draw = _served(exp, streams, args)
        result |= {"command": command, "torch_threads": 1, "wall_s": round(time.perf_counter() - t0)}
        print(f"wrote {write_result(f'experiments_{exp}{tag}', result)} ({result['wall_s']} s)")
        png = RESULTS_DIR / f"experiments_{exp}{tag}.png"
        draw(result, png)
        print(f"wrote {png}")
    if legacy:  # the first two share experiments.json: keep the one not rerun
        path = RESULTS_DIR / f"experiments{tag}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        result = {k: old[k] for k in LEGACY if k in old and k not in legacy} | legacy
        result |= {"command": command, "torch_threads": 1}
        print(f"wrote {write_result(f'experiments{tag}', result)}")
        png = RESULTS_DIR / f"experiments{tag}.png"
        plot(result, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
