"""Is the live traffic source's world learnable within a 3-minute demo? (The issue's bar: at
300 shown impressions/s, by the end of 3 minutes the trainer's progressive click AUC is at
least 90% of the oracle's, and its click NE is below 1.)

Simulates ``--impressions`` (default 54k = 3 min x 300/s) shown impressions of
``traffic.world.LiveWorld`` with the live source's defaults, in event time at the configured
rate, without Kafka: each request takes ``candidates`` random items and shows ``shown`` of
them, chosen at random (``--policy random``, the source's fallback) or by the model being
trained (``--policy model``: the candidates scored at position 0 by the in-process trainer,
the top ``shown`` shown, ``explore_rate`` of requests random; the closed loop without the
replica's sync lag). The real trainer (``trainer.trainer.Trainer`` with the default model,
table and trainer configs on CPU) trains on the samples in time order with their final
labels (no joiner window), scoring each batch before training on it; the oracle (the true
probabilities the labels were drawn from) is scored on the same samples.

    .venv/bin/python -m bench.live_world [--impressions 54000] [--policy random|model]
    streamtrain bench live_world

Prints the figures and writes ``bench/results/live_world.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from bench.common import write_result
from schemas import Sample
from schemas.contracts import ACTION_TYPES
from traffic.live import LiveTrafficConfig
from traffic.policy import expected_clicks, random_k, top_k
from traffic.world import LiveWorld
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.metrics import ProgressiveValidator
from trainer.trainer import Trainer

START_MS = 1_700_000_000_000


class Sim:
    """The live source's request -> shown -> labels step, in simulated time."""

    def __init__(self, cfg: LiveTrafficConfig, trainer: Trainer | None) -> None:
        self.cfg, self.trainer = cfg, trainer
        self.world = LiveWorld(cfg.world())
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.builder = BatchBuilder(trainer.model_cfg) if trainer is not None else None
        self.n = 0

    def request(self, now_ms: int) -> tuple[list[Sample], np.ndarray, dict[str, float]]:
        cfg, w, rng = self.cfg, self.world, self.rng
        u = w.sample_user(rng)
        w.drift(rng, u, now_ms)
        items = w.candidates(rng, cfg.candidates)
        device, hour = int(rng.integers(0, 3)), int((now_ms // 3_600_000) % 24)
        truth = w.click_matrix(u, items, cfg.shown)  # (C, shown)
        order = random_k(rng, len(items), cfg.shown)
        if self.builder is not None and self.trainer is not None and rng.random() >= cfg.explore_rate:
            feats = [w.features(u, int(i), hour, device, 0) for i in items]
            batch = self.builder.build([Sample(str(k), u + 1, int(i) + 1, now_ms, now_ms, s, ids, d)
                                        for k, (i, (s, ids, d)) in enumerate(zip(items, feats))])
            order = top_k(self.trainer.predict(batch)[:, 0], cfg.shown)
        samples, probs = [], []
        for rank, c in enumerate(order):
            p_click = float(truth[c, rank])
            heads = w.head_probs(np.array([p_click]))[0]
            clicked = rng.random() < p_click
            labels = [t for t, ok in zip(ACTION_TYPES, (clicked, clicked and rng.random() < heads[1] / p_click,
                                                        clicked and rng.random() < heads[2] / p_click)) if ok]
            slots, ids, dense = w.features(u, int(items[c]), hour, device, rank)
            samples.append(Sample(f"b-{self.n}-{rank}", u + 1, int(items[c]) + 1, now_ms, now_ms, slots, ids,
                                  dense, label_types=labels))
            probs.append(heads)
        self.n += 1
        expected = expected_clicks(truth, np.asarray(order))
        return samples, np.array(probs), expected


def _summary(report: dict, head: str) -> dict:
    return {win: {k: (None if v is None else round(float(v), 4)) for k, v in report[head][win].items()
                  if k in ("auc", "ne", "calibration", "pos_rate", "logloss")}
            for win in ("window", "cumulative")}


def run(impressions: int, policy: str, sets: dict) -> dict:
    cfg = dataclasses.replace(LiveTrafficConfig(), **sets)
    torch.manual_seed(0)
    model, table, tcfg = ModelConfig(), TableConfig(), TrainerConfig(device="cpu")
    trainer = Trainer(model, table, tcfg)
    sim = Sim(cfg, trainer if policy == "model" else None)
    oracle = ProgressiveValidator(ACTION_TYPES, window=tcfg.window)
    builder = BatchBuilder(model)
    interval_ms = 1000.0 * cfg.shown / cfg.impressions_per_s
    pending: list[Sample] = []
    pending_p: list[np.ndarray] = []
    sums = {"shown": 0.0, "random": 0.0, "oracle": 0.0}
    curve = []
    t0 = time.perf_counter()
    for k in range(impressions // cfg.shown):
        samples, probs, expected = sim.request(START_MS + int(k * interval_ms))
        pending += samples
        pending_p.append(probs)
        for key in sums:
            sums[key] += expected[key]
        if len(pending) >= tcfg.batch_size:
            batch = builder.build(pending)
            trainer.train_batch(batch)
            oracle.update(np.concatenate(pending_p), batch.labels, np.ones_like(batch.labels))
            pending, pending_p = [], []
            if trainer.step % 10 == 0:
                r, o = trainer.validator.report(), oracle.report()
                curve.append({"impressions": trainer.samples, "seconds": round(trainer.samples / cfg.impressions_per_s),
                              "trainer_auc": r["click"]["window"]["auc"], "oracle_auc": o["click"]["window"]["auc"],
                              "trainer_ne": r["click"]["window"]["ne"]})
    elapsed = time.perf_counter() - t0
    r, o = trainer.validator.report(), oracle.report()
    n = sim.n * cfg.shown
    out: dict[str, Any] = {"policy": policy, "impressions": trainer.samples,
                           "seconds_of_demo": round(trainer.samples / cfg.impressions_per_s),
           "trainer": {h: _summary(r, h) for h in ACTION_TYPES}, "oracle": {h: _summary(o, h) for h in ACTION_TYPES},
           "expected_ctr": {k: round(v / n, 5) for k, v in sums.items()}, "elapsed_s": round(elapsed, 1),
           "curve": curve, "world": dataclasses.asdict(cfg.world())}
    t_auc, o_auc = out["trainer"]["click"]["window"]["auc"], out["oracle"]["click"]["window"]["auc"]
    out["click_auc_ratio_window"] = round(t_auc / o_auc, 4) if t_auc and o_auc else None
    t_cum, o_cum = out["trainer"]["click"]["cumulative"]["auc"], out["oracle"]["click"]["cumulative"]["auc"]
    out["click_auc_ratio_cumulative"] = round(t_cum / o_cum, 4) if t_cum and o_cum else None
    ne = out["trainer"]["click"]["window"]["ne"]
    ratio = out["click_auc_ratio_window"]
    out["passes"] = bool(ratio and ratio >= 0.9 and ne is not None and ne < 1)
    return out


def _print(out: dict) -> None:
    print(f"policy={out['policy']} impressions={out['impressions']} ({out['seconds_of_demo']} s at the "
          f"configured rate) in {out['elapsed_s']} s")
    for head in ACTION_TYPES:
        for win in ("window", "cumulative"):
            t, o = out["trainer"][head][win], out["oracle"][head][win]
            print(f"  {head:10s} {win:10s} trainer auc={t['auc']} ne={t['ne']} cal={t['calibration']}   "
                  f"oracle auc={o['auc']} ne={o['ne']} cal={o['calibration']}  pos_rate={o['pos_rate']}")
    print(f"  click AUC trainer/oracle: window {out['click_auc_ratio_window']}  cumulative "
          f"{out['click_auc_ratio_cumulative']}  expected CTR {out['expected_ctr']}  passes={out['passes']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impressions", type=int, default=54_000)
    p.add_argument("--policy", default="random,model", help="random | model | random,model")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help="a live_traffic field (world settings), e.g. item_bias_std=1.0")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    types = {f.name: f.type for f in dataclasses.fields(LiveTrafficConfig)}
    sets = {}
    for s in args.sets:
        k, _, v = s.partition("=")
        sets[k] = {"int": int, "float": float}.get(str(types[k]), str)(v)
    result: dict = {"command": "python -m bench.live_world " + " ".join(argv or []), "torch_threads": 1,
                    "sets": sets, "runs": {}}
    for policy in args.policy.split(","):
        out = run(args.impressions, policy, sets)
        _print(out)
        result["runs"][policy] = out
    print(f"wrote {write_result('live_world', result)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
