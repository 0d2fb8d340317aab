"""The trainer on a growing vocabulary against the same trainer on a fixed one, in the same
run, with admission and expiry on; a bare PyTorch step (nn.EmbeddingBag over hashed ids +
SparseAdam, the same dense network) beside both.

The stream: B=4096 samples of 26 slots, one id each, dim 16; each slot's ids are
Zipf-distributed ranks (exponent 1.1 over ``--vocab`` ranks). On the *fixed* stream rank r is
always the same id. On the *growing* stream the ranks slide over the id space by ``--drift``
ids per slot per batch: every batch brings ids never seen before at the head of the
distribution and old ones fade, so admission (``--admit-count``, ``--admit-prob``) and expiry
(``--expiry-min`` of event time; samples are ``--step-ms`` apart) decide the table's size.
Batches are built beforehand (no decoding: this measures the step and the table), the two
streams alternate in chunks of ``--chunk`` batches on their own trainers, and each step is
timed; the median rate per stream and, after every chunk, the table's live ids, the ids
seen for the first time and the ids expiry evicted are reported.

    .venv/bin/python -m bench.trainer_vocab [--batches 120] [--threads 1]

Writes bench/results/trainer_vocab.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import torch

from bench.common import write_result
from bench.trainer_bench import MODEL, BareStep
from trainer.batch import Batch
from trainer.config import TableConfig, TrainerConfig
from trainer.synthetic import packed_feature_id
from trainer.trainer import Trainer

SLOTS = len(MODEL.slots)


class ZipfBatches:
    """Batches of Zipf ranks per slot; ``drift`` ids per batch slide the ranks over the ids."""

    def __init__(self, batch: int, vocab: int, drift: int, step_ms: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        p = 1.0 / np.arange(1, vocab + 1) ** 1.1
        self.cdf = np.cumsum(p / p.sum())
        self.batch, self.drift, self.step_ms, self.n = batch, drift, step_ms, 0
        self.time_ms = 1_700_000_000_000

    def next(self) -> Batch:
        b, f = self.batch, SLOTS
        ranks = np.searchsorted(self.cdf, self.rng.random((b, f)))  # (B, F)
        ids = packed_feature_id(np.arange(f)[None, :], ranks + self.n * self.drift)
        event = self.time_ms + self.step_ms * np.arange(b, dtype=np.int64)
        self.time_ms += self.step_ms * b
        self.n += 1
        return Batch(ids=ids.reshape(-1), fields=np.tile(np.arange(f, dtype=np.int64), b),
                     offsets=np.arange(0, b * f + 1, f, dtype=np.int64),
                     dense=np.zeros((b, 0), np.float32),
                     labels=(self.rng.random((b, 1)) < 0.2).astype(np.float32),
                     weights=np.ones(b, np.float32), sample_rate=np.ones(b, np.float32),
                     flags=np.zeros(b, np.int32), event_time_ms=event, emit_time_ms=event)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=120, help="per stream")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--vocab", type=int, default=5000)
    p.add_argument("--drift", type=int, default=200)
    p.add_argument("--step-ms", type=int, default=10)
    p.add_argument("--admit-count", type=int, default=2)
    p.add_argument("--admit-prob", type=float, default=0.5)
    p.add_argument("--expiry-min", type=float, default=10.0)
    p.add_argument("--bare-bits", type=int, default=20, help="the bare table holds 2**bits rows")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    table = TableConfig(dim=16, initial_capacity=1 << 16, admit_count=args.admit_count,
                        admit_prob=args.admit_prob, expiry_ms=int(args.expiry_min * 60_000))
    cfg = TrainerConfig(batch_size=args.batch, device="cpu", window=20000,
                        report_every_batches=10**6, expire_every_batches=5)
    streams = {"fixed": 0, "growing": args.drift}
    gens = {k: ZipfBatches(args.batch, args.vocab, d, args.step_ms, seed=7) for k, d in streams.items()}
    trainers = {k: Trainer(MODEL, table, cfg) for k in streams}
    bare = {k: BareStep(args.bare_bits) for k in streams}
    times: dict[str, list[float]] = {f"{w}_{k}": [] for k in streams for w in ("trainer", "bare")}
    sizes: dict[str, list[dict]] = {k: [] for k in streams}
    seen: dict[str, set[int]] = {k: set() for k in streams}
    for chunk in range(0, args.batches, args.chunk):
        for k in streams:
            batches = [gens[k].next() for _ in range(args.chunk)]
            for b in batches:
                s = time.perf_counter()
                trainers[k].train_batch(b)
                times[f"trainer_{k}"].append(time.perf_counter() - s)
                s = time.perf_counter()
                bare[k].step(b)
                times[f"bare_{k}"].append(time.perf_counter() - s)
            t = trainers[k]
            distinct = np.unique(np.concatenate([b.ids for b in batches])).tolist()
            new = len(set(distinct) - seen[k])
            seen[k].update(distinct)
            evicted = sum(len(u.evicted) for u in t.collect_updates())  # (what sync/ would push)
            sizes[k].append({"batches": chunk + args.chunk, "live_ids": t.table.num_live,
                             "new_ids": new, "evicted_ids": evicted,
                             "memory_mb": round(getattr(t.table, "memory_bytes", lambda: 0)() / 2**20, 1),
                             "load_1m": round(os.getloadavg()[0], 2)})
        print(f"after {chunk + args.chunk} batches: " + ", ".join(
            f"{k} {sizes[k][-1]['live_ids']:,} live ids (+{sizes[k][-1]['new_ids']:,} new ids seen, "
            f"{sizes[k][-1]['evicted_ids']:,} evicted)" for k in streams), flush=True)
    warm = 2 * args.chunk  # the first chunks fill the table: rates over the rest
    rates = {k: round(args.batch / float(np.median(v[warm:]))) for k, v in times.items()}
    result = {"command": " ".join([".venv/bin/python -m bench.trainer_vocab",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "torch_threads": torch.get_num_threads(), "model": MODEL.to_dict(),
              "table": {"admit_count": table.admit_count, "admit_prob": table.admit_prob,
                        "expiry_ms": table.expiry_ms}, "args": vars(args),
              "samples_per_s": rates,
              "growing_over_fixed": round(rates["trainer_growing"] / rates["trainer_fixed"], 3),
              "trainer_over_bare_fixed": round(rates["trainer_fixed"] / rates["bare_fixed"], 3),
              "trainer_over_bare_growing": round(rates["trainer_growing"] / rates["bare_growing"], 3),
              "table_over_time": sizes,
              "note": "median step after the first two chunks; bare = nn.EmbeddingBag of "
                      "2**bare_bits rows over hashed ids (collisions, no admission, no expiry) "
                      "+ SparseAdam, the trainer's dense network with Adam"}
    for k, v in rates.items():
        print(f"{k:16s} {v:>9,} samples/s")
    print(f"growing/fixed {result['growing_over_fixed']}  trainer/bare fixed "
          f"{result['trainer_over_bare_fixed']}  growing {result['trainer_over_bare_growing']}")
    print(f"wrote {write_result('trainer_vocab', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
