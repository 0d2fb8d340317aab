"""Peers on the same replayed stream, in the same run: the collisionless trainer, the same
trainer with a fixed-size hashed embedding (collisions) of the same memory budget and of a
quarter of it, and River's LogisticRegression on hashed one-hot features. Progressive AUC
(score before learn) and samples/s for each, on TalkingData (../shared/data, click-time
order, label = app install) and on the generator-like synthetic stream.

    .venv/bin/python -m bench.trainer_peers [--synthetic 60000] [--river-max 20000]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
import torch

from bench.common import write_result
from schemas import Sample
from streamtrain.paths import SHARED_DATA_DIR
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.embedding import DynamicEmbeddingTable
from trainer.metrics import auc
from trainer.source import ListSource
from trainer.synthetic import SyntheticStream, feature_id
from trainer.trainer import Trainer

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class HashedEmbeddingTable(DynamicEmbeddingTable):
    """Baseline: a fixed number of rows, row = hash(id) mod size; colliding ids share a row."""

    def __init__(self, name: str, config: TableConfig, size: int):
        super().__init__(name, TableConfig(**(config.__dict__ | {"initial_capacity": size + 1})), "cpu")
        self.size = size
        self.weights[1:] = torch.randn(size, self.dim, generator=self._gen) * config.init_std
        self._high = size + 1

    def rows_for(self, ids, now_ms=None, train=False, counts=None):
        h = (np.asarray(ids, np.int64).view(np.uint64) * GOLDEN) >> np.uint64(20)
        return torch.from_numpy((h % np.uint64(self.size)).astype(np.int64) + 1)

    @torch.no_grad()
    def apply_gradients(self, rows, grads):
        uniq, inv = torch.unique(rows, return_inverse=True)
        summed = torch.zeros(len(uniq), grads.shape[1]).index_add_(0, inv, grads)
        super().apply_gradients(uniq, summed)

    def expire(self, now_ms):
        return np.zeros(0, np.int64)

    def memory_bytes(self) -> int:
        return int(self.weights.nbytes + self.accum.nbytes)


def talkingdata() -> list[Sample]:
    df = pd.read_csv(SHARED_DATA_DIR / "talkingdata_adtracking_sample.csv")
    df["t"] = pd.to_datetime(df["click_time"]).astype("int64") // 10**6
    df = df.sort_values("t", kind="stable").reset_index(drop=True)
    df["hour"] = (df["t"] // 3_600_000) % 24
    df["app_channel"] = df["app"] * 1000 + df["channel"]
    df["app_os"] = df["app"] * 1000 + df["os"]
    df["ip_app"] = df["ip"] * 1000 + df["app"]
    cols = ["ip", "app", "device", "os", "channel", "hour", "app_channel", "app_os", "ip_app"]
    ids = np.stack([feature_id(s, df[c].to_numpy(np.int64)) for s, c in enumerate(cols)], 1)
    slots = list(range(len(cols)))
    return [Sample(request_id=str(i), user_id=int(ip), item_id=int(app), event_time_ms=int(t),
                   emit_time_ms=int(t), slots=slots, ids=row.tolist(),
                   label_types=["conversion"] if y else [])
            for i, (ip, app, t, y, row) in enumerate(zip(df["ip"], df["app"], df["t"], df["is_attributed"], ids))]


def run_trainer(samples, model, table_cfg, table=None) -> dict:
    cfg = TrainerConfig(batch_size=256, device="cpu", window=20000, report_every_batches=10**9)
    trainer = Trainer(model, table_cfg, cfg, embedding=table)
    t0 = time.perf_counter()
    final = trainer.run(ListSource(samples, model, 256))
    dt = time.perf_counter() - t0
    head = model.heads[0]
    return {"auc_cumulative": final[head]["cumulative"]["auc"], "auc_last_window": final[head]["window"]["auc"],
            "ne_cumulative": final[head]["cumulative"]["ne"], "samples_per_s": round(len(samples) / dt),
            "table_bytes": trainer.table.memory_bytes(), "live_ids": trainer.table.num_live}


def run_river(samples, limit: int, bits: int = 20) -> dict:
    from river import linear_model, optim

    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    shift = np.uint64(64 - bits)
    preds, labels = [], []
    t0 = time.perf_counter()
    for s in samples[:limit]:
        hashed = (np.asarray(s.ids, np.int64).view(np.uint64) * GOLDEN) >> shift
        x = dict.fromkeys(hashed.tolist(), 1.0)  # one-hot over 2^bits hashed buckets
        preds.append(model.predict_proba_one(x)[True])
        y = bool(s.label_types)
        labels.append(y)
        model.learn_one(x, y)
    dt = time.perf_counter() - t0
    p, y = np.asarray(preds), np.asarray(labels, float)
    return {"samples": len(p), "auc_cumulative": auc(p, y), "auc_last_20000": auc(p[-20000:], y[-20000:]),
            "samples_per_s": round(len(p) / dt)}


def compare(name: str, samples: list[Sample], model: ModelConfig, river_max: int) -> dict:
    table_cfg = TableConfig(dim=model.dim)
    out = {"samples": len(samples), "positives": sum(bool(s.label_types) for s in samples)}
    out["collisionless"] = run_trainer(samples, model, table_cfg)
    budget = out["collisionless"]["table_bytes"]
    row_bytes = model.dim * 4 + 4
    for label, frac in (("hashed_same_memory", 1.0), ("hashed_quarter_memory", 0.25)):
        size = max(1, int(budget * frac) // row_bytes)
        out[label] = run_trainer(samples, model, table_cfg, HashedEmbeddingTable("emb", table_cfg, size))
        out[label]["rows"] = size
    out["river_logreg_hashed"] = run_river(samples, river_max)
    n = out["river_logreg_hashed"]["samples"]
    out[f"collisionless_first_{n}"] = run_trainer(samples[:n], model, table_cfg)  # River's span
    for peer in ("collisionless", "hashed_same_memory", "hashed_quarter_memory", "river_logreg_hashed",
                 f"collisionless_first_{n}"):
        r = out[peer]
        print(f"{name:12s} {peer:28s} AUC cum={r['auc_cumulative']:.4f}  {r['samples_per_s']:>8,} samples/s"
              + (f"  rows={r['rows']:,}" if "rows" in r else "")
              + (f"  live_ids={r['live_ids']:,} bytes={r['table_bytes']:,}" if peer.startswith("collisionless") else ""))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", type=int, default=60000)
    p.add_argument("--river-max", type=int, default=20000)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # per-core figures for every peer (River is single-threaded)
    result = {"torch_threads": 1}
    if SHARED_DATA_DIR.is_dir():
        td = talkingdata()
        result["talkingdata"] = compare("talkingdata", td, ModelConfig(slots=tuple(range(9)), dim=16, dense_dim=0,
                                        heads=("conversion",), hidden=(64, 32)), args.river_max)
    else:
        print(f"skipping TalkingData: {SHARED_DATA_DIR} not found")
    syn = SyntheticStream(num_slots=26, users=5000, items=2000, vocab=2000, seed=7).take(args.synthetic)
    result["synthetic"] = compare("synthetic", syn, ModelConfig(slots=tuple(range(26)), dim=16, dense_dim=0,
                                                               heads=("click",), hidden=(256, 128)), args.river_max)
    print(f"wrote {write_result('trainer_peers', result)}")


if __name__ == "__main__":
    main()
