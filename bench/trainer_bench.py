"""Trainer throughput: the training step (samples/s) at batch 512..8192 with 26 slots and
dim 16 on a generator-like stream, beside a bare PyTorch step on the same batches
(``BareStep``: nn.EmbeddingBag + SparseAdam, the same dense network); the step at 2 torch
threads against 1 (``--scaling-threads``); bytes of memory per live id; end to end from
Kafka (produce, consume, decode on the prefetch thread, train).

    .venv/bin/python -m bench.trainer_bench [--device cpu|cuda] [--threads N] [--seconds 6]
        [--scaling-threads 1,2] [--kafka-samples 40000] [--skip-kafka] [--bootstrap host:port]

Steps are timed one by one and the median is reported (robust to other jobs on a shared
machine); the mean-based rate is kept beside it in the JSON, and the 1-minute load average
beside every figure. Writes bench/results/trainer_bench.json (trainer_bench_cuda.json on cuda).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.common import fresh_topics, kafka_for_bench, write_result
from schemas import Sample, codec_for
from streamtrain.kafka_io import make_producer
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.embedding import make_table
from trainer.model import build_model
from trainer.stream import KafkaSampleSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer

MODEL = ModelConfig(slots=tuple(range(26)), dim=16, dense_dim=0, heads=("click",), hidden=(256, 128))
TABLE = TableConfig(dim=16, initial_capacity=1 << 16)


class BareStep:
    """The bare PyTorch step, the floor of what a step costs: ``nn.EmbeddingBag`` (sum,
    sparse gradients) of ``2**bits`` rows over ids hashed into them (multiplicative hash:
    collisions, no admission, no expiry, no id -> row index) with SparseAdam, the trainer's
    dense network (``build_model``) with Adam, BCE on the logits; no validation, weighting
    or bookkeeping."""

    def __init__(self, bits: int = 20, device: str = "cpu") -> None:
        self.device, self.shift, d = torch.device(device), np.uint64(64 - bits), MODEL.dim
        rows = 1 << bits
        torch.manual_seed(0)
        self.bag = nn.EmbeddingBag(rows, d, mode="sum", sparse=True).to(self.device)
        nn.init.normal_(self.bag.weight, 0.0, 0.01)
        self.net = build_model(MODEL).to(self.device)
        self.sparse = torch.optim.SparseAdam(list(self.bag.parameters()), lr=0.01)
        self.dense = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def step(self, batch) -> float:
        b, f = len(batch), len(MODEL.slots)
        bag_of = batch.sample_index * f + batch.fields  # (N,) one bag per (sample, field)
        order = np.argsort(bag_of, kind="stable")
        rows = (batch.ids[order].view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> self.shift
        ids = torch.from_numpy(rows.astype(np.int64)).to(self.device)
        offsets = torch.from_numpy(np.searchsorted(bag_of[order], np.arange(b * f))).to(self.device)
        emb = self.bag(ids, offsets).view(b, f, MODEL.dim)  # (B, F, D)
        logits = self.net(emb, torch.from_numpy(batch.dense).to(self.device))  # (B, H)
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(batch.labels).to(self.device))
        self.sparse.zero_grad()
        self.dense.zero_grad()
        loss.backward()
        self.sparse.step()
        self.dense.step()
        return float(loss.detach())


def _batches(batch_size: int, users: int) -> list:
    gen = SyntheticStream(num_slots=26, users=users, items=users // 2, vocab=5000, seed=1)
    builder = BatchBuilder(MODEL)
    return [builder.build(gen.take(batch_size)) for _ in range(max(4, 60000 // batch_size))]


def _timed(step, batches: list, seconds: float, sync) -> list[float]:
    for b in batches[:2]:  # warm-up
        step(b)
    sync()
    times: list[float] = []
    t0, i = time.perf_counter(), 2
    while time.perf_counter() - t0 < seconds or len(times) < 5:
        s = time.perf_counter()
        step(batches[i % len(batches)])
        sync()
        times.append(time.perf_counter() - s)
        i += 1
    return times


def step_rate(device: str, batch_size: int, seconds: float, users: int) -> dict:
    trainer = Trainer(MODEL, TABLE, TrainerConfig(batch_size=batch_size, device=device, window=20000))
    batches = _batches(batch_size, users)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    times = _timed(trainer.train_batch, batches, seconds, sync)
    bare = _timed(BareStep(device=device).step, batches, seconds / 2, sync)
    med, mean = float(np.median(times)), float(np.mean(times))
    # the median step is robust to other jobs stealing the shared CPU for a while
    return {"batch_size": batch_size, "samples_per_s": round(batch_size / med),
            "samples_per_s_mean": round(batch_size / mean), "steps": len(times),
            "ms_per_step_median": round(1000 * med, 2), "live_ids": trainer.table.num_live,
            "bare_samples_per_s": round(batch_size / float(np.median(bare))),
            "trainer_over_bare": round(float(np.median(bare)) / med, 3),
            "load_1m": round(os.getloadavg()[0], 2)}


def thread_scaling(threads: list[int], batch_size: int, seconds: float, users: int,
                   rounds: int = 3) -> dict:
    """The CPU step at each torch thread count, alternating ``rounds`` times on the same
    trainer and batches (the load of other jobs changes meanwhile): median rate per count,
    and the ratio of the last count to the first, per round and overall."""
    trainer = Trainer(MODEL, TABLE, TrainerConfig(batch_size=batch_size, device="cpu", window=20000))
    bare, batches = BareStep(), _batches(batch_size, users)
    saved, out = torch.get_num_threads(), []
    try:
        for r in range(rounds):
            row: dict = {"round": r, "load_1m": round(os.getloadavg()[0], 2)}
            for n in threads:
                torch.set_num_threads(n)
                row[f"trainer_{n}"] = round(batch_size / float(np.median(
                    _timed(trainer.train_batch, batches, seconds, lambda: None))))
                row[f"bare_{n}"] = round(batch_size / float(np.median(
                    _timed(bare.step, batches, seconds / 2, lambda: None))))
            out.append(row)
            print(f"threads round {r}: {row}", flush=True)
    finally:
        torch.set_num_threads(saved)
    a, b = threads[0], threads[-1]
    return {"batch_size": batch_size, "threads": threads, "rounds": out,
            f"trainer_{b}_over_{a}": round(float(np.median(
                [r[f"trainer_{b}"] / r[f"trainer_{a}"] for r in out])), 3),
            f"bare_{b}_over_{a}": round(float(np.median(
                [r[f"bare_{b}"] / r[f"bare_{a}"] for r in out])), 3)}


def bytes_per_id(device: str, n_ids: int) -> dict:
    table = make_table("emb", TableConfig(dim=16), torch.device(device))
    rng = np.random.default_rng(0)
    ids = rng.choice(2**62, n_ids, replace=False).astype(np.int64)
    for chunk in np.array_split(ids, 20):
        table.rows_for(chunk, now_ms=0, train=True)
    total = table.memory_bytes()
    per_row_payload = 16 * 4 + table.accum[0].nbytes
    queries = ids[rng.integers(0, n_ids, 200_000)]
    t0 = time.perf_counter()
    for _ in range(5):
        table.rows_for(queries)  # read path: hash lookup + row handles
    lookup = 5 * len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in range(5):
        table.rows_for(queries, now_ms=k, train=True)  # count, stamp, admission check
    train_lookup = 5 * len(queries) / (time.perf_counter() - t0)
    return {"id_lookups_per_s": round(lookup), "id_train_lookups_per_s": round(train_lookup),
            "live_ids": table.num_live, "bytes_total": total,
            "bytes_per_live_id": round(total / table.num_live, 1),
            "bytes_per_live_id_payload": per_row_payload,
            "note": "total includes spare capacity of the doubling arrays and the hash index"}


def kafka_end_to_end(bootstrap: str | None, n: int, batch_size: int, device: str) -> dict:
    samples = SyntheticStream(num_slots=26, users=20000, items=10000, vocab=5000, seed=2).take(n)
    codec = codec_for(Sample)
    with kafka_for_bench(bootstrap) as kafka:
        topics = fresh_topics(kafka, "bench-trainer")
        producer = make_producer(kafka)
        t0 = time.perf_counter()
        for i, s in enumerate(samples):
            producer.send(topics.samples, codec.encode(s), partition=i % topics.partitions)
        producer.flush()
        producer.close()
        produce_s = time.perf_counter() - t0
        cfg = TrainerConfig(batch_size=batch_size, device=device, max_samples=n, report_every_batches=10)
        trainer = Trainer(MODEL, TABLE, cfg)
        t0 = time.perf_counter()
        trainer.run(KafkaSampleSource(kafka, topics, MODEL, cfg))
        train_s = time.perf_counter() - t0
    return {"samples": trainer.samples, "batch_size": batch_size, "produce_per_s": round(n / produce_s),
            "consume_decode_train_per_s": round(trainer.samples / train_s)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--batches", default="512,1024,2048,4096,8192")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--ids", type=int, default=1_000_000)
    p.add_argument("--kafka-samples", type=int, default=40000)
    p.add_argument("--skip-kafka", action="store_true")
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--scaling-threads", default="1,2",
                   help="torch thread counts to compare at batch 4096 on cpu ('' = skip)")
    p.add_argument("--skip-memory", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    result: dict = {"device": args.device, "torch_threads": torch.get_num_threads(),
                    "command": " ".join([".venv/bin/python -m bench.trainer_bench",
                                         *(sys.argv[1:] if argv is None else argv)]),
                    "model": MODEL.to_dict(), "step": []}
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    for bs in (int(x) for x in args.batches.split(",")):
        r = step_rate(args.device, bs, args.seconds, args.users)
        result["step"].append(r)
        print(f"train step  device={args.device} batch={bs:5d}  {r['samples_per_s']:>9,} samples/s  "
              f"(median step {r['ms_per_step_median']:.1f} ms; mean-based {r['samples_per_s_mean']:,}/s)"
              f"  bare {r['bare_samples_per_s']:,}/s  load {r['load_1m']}")
    if args.scaling_threads and args.device == "cpu":
        counts = [int(x) for x in args.scaling_threads.split(",")]
        result["thread_scaling"] = sc = thread_scaling(counts, 4096, args.seconds, args.users)
        print(f"threads     {counts[-1]} vs {counts[0]}: trainer "
              f"{sc[f'trainer_{counts[-1]}_over_{counts[0]}']}x, bare "
              f"{sc[f'bare_{counts[-1]}_over_{counts[0]}']}x (median of {len(sc['rounds'])} rounds)")
    if not args.skip_memory:
        result["memory"] = bytes_per_id(args.device, args.ids)
        mem = result["memory"]
        print(f"memory      {mem['live_ids']:,} live ids  "
              f"{mem['bytes_per_live_id']} bytes/live id (payload {mem['bytes_per_live_id_payload']})")
        print(f"id -> row   {result['memory']['id_lookups_per_s']:,} lookups/s, "
              f"{result['memory']['id_train_lookups_per_s']:,} training lookups/s (1M live ids)")
    if not args.skip_kafka:
        result["kafka"] = kafka_end_to_end(args.bootstrap, args.kafka_samples, 1024, args.device)
        print(f"kafka e2e   {result['kafka']['samples']:,} samples  "
              f"{result['kafka']['consume_decode_train_per_s']:,} samples/s (consume+decode+train)")
    path = write_result("trainer_bench" + ("" if args.device == "cpu" else f"_{args.device}"), result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
