"""The demo's closed loop in simulated time, with the real join core between the users and
the trainer: what the served model is worth under a joiner policy and window, without the
noise of eight processes sharing two cores.

``bench/live_world.py`` trains on final labels the moment an impression is shown; the live
demo's trainer instead gets what the early-emit joiner emits: a positive at its click
(seconds after the impression), a negative only when the impression's window closes. This
bench puts ``streaming.joiner.JoinCore`` in between: requests of ``traffic.world.LiveWorld``
are ranked by the model being trained (candidates scored at position 0, ``explore_rate`` of
requests random), the simulated users act with the live source's delays, the join core
emits samples on a watermark ``--ooo-ms`` behind the newest event, each sample reaches the
trainer ``--pipeline-ms`` after it was emitted (the live demo's joiner output plus the
trainer's input and publish: about 5 s on a quiet machine), and the trainer trains every
``trainer.max_wait_ms`` on what has arrived. Reported, for each joiner setting, on the last
``--window`` impressions the model ranked: AUC, NE and calibration of the served click
probabilities, beside the oracle on the same impressions (the demo's checks), and the mean
time from impression to trained per label.

    .venv/bin/python -m bench.live_loop [--impressions 54000] [--windows-ms 3000,10000]
        [--policies early] [--seeds 11,12]

Writes ``bench/results/live_loop.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import logging
import tempfile
import time
from typing import Any

import numpy as np
import torch

from bench.common import write_result
from bench.live_world import START_MS
from bench.trainer_peers import summarize
from schemas import Action, Sample
from schemas.contracts import ACTION_TYPES
from streaming.joiner import JoinCore, JoinerConfig
from traffic.live import LiveTrafficConfig, action_delay_ms
from traffic.policy import random_k, top_k
from traffic.world import LiveWorld
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.trainer import Trainer

CLICK, LIKE, CONVERSION = ACTION_TYPES


def run(impressions: int, policy: str, window_ms: int, seed: int, ooo_ms: int, pipeline_ms: int,
        max_wait_ms: int, window: int) -> dict[str, Any]:
    cfg = dataclasses.replace(LiveTrafficConfig(), seed=seed)
    torch.manual_seed(0)
    model = ModelConfig()
    trainer = Trainer(model, TableConfig(), TrainerConfig(device="cpu", max_wait_ms=max_wait_ms))
    builder = BatchBuilder(model)
    world, rng = LiveWorld(cfg.world()), np.random.default_rng(seed + 1)
    interval_ms = 1000.0 * cfg.shown / cfg.impressions_per_s
    actions: list[tuple[int, int, Action]] = []  # (due, seq, action)
    arriving: list[tuple[int, int, Sample]] = []  # (at the trainer, seq, sample)
    served: list[tuple[float, float, bool]] = []  # model p (position 0), true p at the rank shown, clicked
    to_trained: dict[str, list[int]] = {"positive": [], "negative": []}
    seq, newest, next_train = 0, START_MS, START_MS + max_wait_ms
    with tempfile.TemporaryDirectory(prefix="bench-live-loop-") as tmp:
        core = JoinCore(JoinerConfig(window_ms=window_ms, policy=policy, stall_policy="off", kv_path=f"{tmp}/kv"),
                        action_types=ACTION_TYPES)

        def emitted(outputs: list, now: int) -> None:
            nonlocal seq
            for o in outputs:
                if isinstance(o, Sample):
                    seq += 1
                    heapq.heappush(arriving, (now + pipeline_ms, seq, o))

        for k in range(impressions // cfg.shown):
            now = START_MS + int(k * interval_ms)
            while actions and actions[0][0] <= now:  # the users' actions that are due
                due, _, act = heapq.heappop(actions)
                act.event_time_ms = due
                newest = max(newest, due)
                emitted(core.on_action(act, newest - ooo_ms), now)
            while now >= next_train:  # the trainer's partial batch: what arrived by then
                batch = []
                while arriving and arriving[0][0] <= next_train:
                    batch.append(heapq.heappop(arriving)[2])
                for at in range(0, len(batch), 1024):
                    part = batch[at: at + 1024]
                    trainer.train_batch(builder.build(part))
                    for s in part:
                        to_trained["positive" if s.label_types else "negative"].append(next_train - s.event_time_ms)
                next_train += max_wait_ms
            u = world.sample_user(rng)
            world.drift(rng, u, now)
            items = world.candidates(rng, cfg.candidates)
            device, hour = int(rng.integers(0, 3)), int((now // 3_600_000) % 24)
            truth = world.click_matrix(u, items, cfg.shown)
            explore = rng.random() < cfg.explore_rate or trainer.step == 0
            scores = None
            if explore:
                order = random_k(rng, len(items), cfg.shown)
            else:
                feats = [world.features(u, int(i), hour, device, 0) for i in items]
                scores = trainer.predict(builder.build([Sample(str(j), u + 1, int(i) + 1, now, now, s, ids, d)
                                                        for j, (i, (s, ids, d)) in enumerate(zip(items, feats))]))[:, 0]
                order = top_k(scores, cfg.shown)
            newest = max(newest, now)
            for rank, c in enumerate(order):
                item = int(items[c])
                rid = f"r{k}-{rank}"
                emitted(core.on_impression(world.impression(rid, u, item, now, device, rank), newest - ooo_ms), now)
                p = float(truth[c, rank])
                clicked = rng.random() < p
                if scores is not None:
                    served.append((float(scores[c]), p, clicked))
                if clicked:
                    click_ms = now + action_delay_ms(rng, cfg.click_delay_median_s, cfg)
                    todo = [(CLICK, click_ms)]
                    if rng.random() < cfg.like_given_click:
                        todo.append((LIKE, click_ms + action_delay_ms(rng, cfg.like_delay_median_s, cfg)))
                    if rng.random() < cfg.conversion_given_click:
                        todo.append((CONVERSION, click_ms + action_delay_ms(rng, cfg.conversion_delay_median_s, cfg)))
                    for kind, at in todo:
                        seq += 1
                        heapq.heappush(actions, (at, seq, Action(rid, u + 1, item + 1, kind, at)))
            if k % 16 == 0:
                emitted(core.advance(newest - ooo_ms), now)
        core.close()
    rows = np.asarray(served[-window:], np.float64)
    y = rows[:, 2]
    out: dict[str, Any] = {"policy": policy, "window_ms": window_ms, "seed": seed, "trained": trainer.samples}
    for who, col in (("model", 0), ("oracle", 1)):
        judged = summarize(rows[:, col], y, np.ones(len(y)))
        out[who] = {k: judged[k] for k in ("auc", "ne", "calibration")}
    out["auc_ratio"] = round(out["model"]["auc"] / out["oracle"]["auc"], 4)
    out["impression_to_trained_s"] = {k: round(float(np.median(v)) / 1000, 2) if v else None
                                      for k, v in to_trained.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impressions", type=int, default=54_000)
    p.add_argument("--windows-ms", default="3000,10000", help="the joiner's windows to compare")
    p.add_argument("--policies", default="early", help="early | wait | early,wait")
    p.add_argument("--seeds", default="11,12", help="worlds (live_traffic.seed) to run each setting on")
    p.add_argument("--ooo-ms", type=int, default=1000, help="the watermark's lag behind the newest event")
    p.add_argument("--pipeline-ms", type=int, default=5000, help="from a sample's emission to trained + served")
    p.add_argument("--max-wait-ms", type=int, default=1000, help="trainer.max_wait_ms (the demo's)")
    p.add_argument("--window", type=int, default=20_000, help="served impressions judged (the last ones)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    result: dict[str, Any] = {"command": "python -m bench.live_loop " + " ".join(argv or []), "runs": []}
    for policy in args.policies.split(","):
        for window_ms in (int(w) for w in args.windows_ms.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                t0 = time.perf_counter()
                out = run(args.impressions, policy, window_ms, seed, args.ooo_ms, args.pipeline_ms,
                          args.max_wait_ms, args.window)
                out["elapsed_s"] = round(time.perf_counter() - t0, 1)
                result["runs"].append(out)
                m, o = out["model"], out["oracle"]
                print(f"policy={policy} window={window_ms}ms seed={seed}: served AUC {m['auc']} (oracle {o['auc']}, "
                      f"ratio {out['auc_ratio']}) NE {m['ne']} cal {m['calibration']}  impression->trained "
                      f"{out['impression_to_trained_s']}  ({out['elapsed_s']} s)")
    print(f"wrote {write_result('live_loop', result)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
