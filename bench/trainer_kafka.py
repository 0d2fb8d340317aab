"""The trainer fed from Kafka against the same trainer fed from memory, in the same run.

Both train the same model (B=4096 by default, 26 slots, dim 16, one torch thread) on the
same samples: *memory* serves batches built beforehand (no decode, no fetch: the ceiling),
*kafka* reads them from the ``samples`` topic through ``trainer.stream.KafkaSampleSource``
(fetch, decode, batch building on its prefetch workers): with one thread
(``prefetch="thread"``, how it was before), one process (the default), and two processes
(one per partition of the topic). They
alternate ``--rounds`` times on fresh trainers and the median ratios are reported (the
machine is shared). Beside the rates, the CPU time per sample of the training process and
of the prefetch process: where a second core is free the trainer runs at the memory rate
as long as its own CPU per sample stays at the memory run's and the worker's is below it.

    .venv/bin/python -m bench.trainer_kafka [--samples 100000] [--batch 4096] [--rounds 2]

Writes bench/results/trainer_kafka.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch

from bench.common import fresh_topics, kafka_for_bench, write_result
from schemas import Sample, codec_for
from streamtrain.kafka_io import make_producer
from trainer.batch import Batch, BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.stream import KafkaSampleSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer

MODEL = ModelConfig(slots=tuple(range(26)), dim=16, dense_dim=0, heads=("click",),
                    hidden=(256, 128))
TABLE = TableConfig(dim=16, initial_capacity=1 << 16)


class BatchList:
    """Batches built beforehand, served in order (the from-memory baseline)."""

    def __init__(self, batches: list[Batch]):
        self.batches, self.at = batches, 0

    @property
    def exhausted(self) -> bool:
        return self.at >= len(self.batches)

    def next_batch(self, timeout_s: float = 0.0) -> Batch | None:
        if self.exhausted:
            return None
        self.at += 1
        return self.batches[self.at - 1]

    def close(self) -> None:
        pass


def _train(source, cfg: TrainerConfig) -> tuple[int, float, float, float]:
    """(samples, wall s, CPU s of this process, CPU s of its children: the prefetch process
    once ``run`` closed the source)."""
    trainer = Trainer(MODEL, TABLE, cfg)
    before, t0 = os.times(), time.perf_counter()
    trainer.run(source)
    wall, after = time.perf_counter() - t0, os.times()
    own = after.user + after.system - before.user - before.system
    kids = after.children_user + after.children_system - before.children_user \
        - before.children_system
    return trainer.samples, wall, own, kids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=120_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--prefetch", default="thread,process1,process2",
                   help="KafkaSampleSource prefetch workers to run, comma-separated: thread, "
                        "processN (N processes)")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    torch.set_num_threads(1)
    n, bs = args.samples - args.samples % args.batch, args.batch
    samples = SyntheticStream(num_slots=26, users=20000, items=10000, vocab=5000,
                              seed=2).take(n)
    builder = BatchBuilder(MODEL)
    batches = [builder.build(samples[i:i + bs], {0: i + bs}) for i in range(0, n, bs)]
    codec = codec_for(Sample)
    runs: list[dict] = []
    with kafka_for_bench(args.bootstrap) as kafka:
        topics = fresh_topics(kafka, "bench-trainer-kafka")
        producer = make_producer(kafka)
        for i, s in enumerate(samples):
            producer.send(topics.samples, codec.encode(s), partition=i % topics.partitions)
        producer.flush()
        producer.close()
        for r in range(args.rounds):
            cfg = TrainerConfig(batch_size=bs, max_samples=n, report_every_batches=1000,
                                idle_timeout_s=30)
            got, mem_s, mem_cpu, _ = _train(BatchList(batches), cfg)
            assert got == n, (got, n)
            run: dict = {"round": r, "memory_samples_per_s": round(n / mem_s),
                         "memory_cpu_us_per_sample": round(1e6 * mem_cpu / n, 1)}
            for prefetch in args.prefetch.split(","):
                kind, workers = prefetch.rstrip("0123456789"), int(prefetch[-1]) \
                    if prefetch[-1].isdigit() else 1
                got, kafka_s, cpu, kid_cpu = _train(KafkaSampleSource(
                    kafka, topics, MODEL, cfg, prefetch=kind, workers=workers), cfg)
                assert got >= n, (got, n)
                run[f"kafka_{prefetch}_samples_per_s"] = round(got / kafka_s)
                run[f"kafka_{prefetch}_over_memory"] = round((got / kafka_s) / (n / mem_s), 3)
                # CPU per sample of the training process, and of the prefetch process
                run[f"kafka_{prefetch}_cpu_us_per_sample"] = round(1e6 * cpu / got, 1)
                run[f"kafka_{prefetch}_worker_cpu_us_per_sample"] = round(1e6 * kid_cpu / got, 1)
            runs.append(run)
            print(f"round {r}: " + ", ".join(f"{k} {v:,}" for k, v in run.items()
                                             if k != "round"), flush=True)
    ratios = {f"kafka_{p}_over_memory": round(float(np.median(
        [r[f"kafka_{p}_over_memory"] for r in runs])), 3) for p in args.prefetch.split(",")}
    print(f"median of {len(runs)} rounds: {ratios}")
    name = "trainer_kafka" + (f"_{args.tag}" if args.tag else "")
    path = write_result(name, {"samples": n, "batch_size": bs, "torch_threads": 1,
                               "model": MODEL.to_dict(), "runs": runs, **ratios})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
