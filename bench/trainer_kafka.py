"""The trainer fed from Kafka against the same trainer fed from memory, in the same run.

Both train the same model (B=4096 by default, 26 slots, dim 16, one torch thread) on the
same samples: *memory* serves batches built beforehand (no decode, no fetch: the ceiling),
*kafka* reads them from the ``samples`` topic through ``trainer.stream.KafkaSampleSource``
(fetch, decode, batch building on its prefetch workers). ``--prefetch`` names the variants:
``thread`` (the default source), ``processN`` (N spawned processes), each decoding a fetch
in columns, or with ``_records`` record by record (fastavro and a ``Sample`` each: how it
was before trainer.columnar). They alternate ``--rounds`` times on fresh trainers and the
median ratios are reported (the machine is shared: the 1-minute load average is written
beside every round). Two ratios: over the whole run, and *steady* (samples after the first
batch over the time after it: a spawned worker's start-up). Beside the rates, the
CPU time per sample of the training process and of the prefetch processes, which depend
less on other jobs than wall-clock rates do: where a second core is free the trainer runs
at the memory rate as long as its own CPU per sample stays at the memory run's and the
worker's is below it. ``decode`` is the CPU per sample of the decode alone (no Kafka),
record by record against in columns, on the same records.

    .venv/bin/python -m bench.trainer_kafka [--samples 120000] [--batch 4096] [--rounds 2]
        [--prefetch thread_records,thread,process1_records,process1] [--tag NAME]

Writes bench/results/trainer_kafka[_NAME].json.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

from bench.common import fresh_topics, kafka_for_bench, write_result
from schemas import Sample, codec_for
from streamtrain.kafka_io import make_producer
from trainer.batch import Batch, BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.stream import KafkaSampleSource
from trainer.synthetic import SyntheticStream

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


def _train(source, cfg: TrainerConfig) -> dict:
    """Samples, wall s, CPU s of this process and of its children (the prefetch processes,
    once ``run`` closed the source), and the steady rate: samples after the first batch over
    the time after it (a spawned prefetch process first starts and imports, seconds on a busy
    machine: a start-up cost, not a rate)."""
    from trainer.trainer import Trainer  # here, not at the top: see main()

    trainer = Trainer(MODEL, TABLE, cfg)
    first: list[tuple[float, int]] = []

    def on_batch(batch, t) -> None:
        if not first:
            first.append((time.perf_counter(), t.samples))

    before, t0 = os.times(), time.perf_counter()
    trainer.run(source, on_batch=on_batch)
    wall, after = time.perf_counter() - t0, os.times()
    own = after.user + after.system - before.user - before.system
    kids = after.children_user + after.children_system - before.children_user \
        - before.children_system
    t1, n1 = first[0]
    return {"samples": trainer.samples, "wall_s": wall, "cpu_s": own, "worker_cpu_s": kids,
            "first_batch_s": t1 - t0,
            "steady_per_s": (trainer.samples - n1) / max(t0 + wall - t1, 1e-9)}


class _CountDead:
    count = 0

    def send(self, letter) -> None:
        self.count += 1


def decode_cost(values: list[bytes], batch: int, repeats: int = 3) -> dict:
    """CPU us per sample of ``decode_records`` on the same records (no Kafka): record by
    record and in columns, alternating; process CPU time, so less sensitive to other jobs."""
    from types import SimpleNamespace

    from trainer.stream import columnar_reader, decode_records

    records = [SimpleNamespace(partition=0, offset=i, value=v) for i, v in enumerate(values)]
    chunks = [records[i:i + batch] for i in range(0, len(records), batch)]
    codec, builder = codec_for(Sample), BatchBuilder(MODEL)
    cost: dict[str, list[float]] = {"records": [], "columnar": []}
    for _ in range(repeats):
        for name, reader in (("records", None), ("columnar", columnar_reader(codec))):
            t = time.process_time()
            for c in chunks:
                decode_records(c, codec, builder, _CountDead(), "samples", reader)  # type: ignore[arg-type]
            cost[name].append(1e6 * (time.process_time() - t) / len(records))
    out = {f"{k}_cpu_us_per_sample": round(float(np.median(v)), 2) for k, v in cost.items()}
    out["records_over_columnar"] = round(out["records_cpu_us_per_sample"]
                                         / out["columnar_cpu_us_per_sample"], 2)
    return out


def _variant(name: str) -> tuple[str, int, bool]:
    """``process2_records`` -> ("process", 2, False): prefetch kind, workers, columnar."""
    base, _, decode = name.partition("_")
    if decode not in ("", "records"):
        raise SystemExit(f"--prefetch {name}: thread|processN, optionally _records")
    kind = base.rstrip("0123456789")
    return kind, int(base[len(kind):] or 1), decode != "records"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=120_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--prefetch", default="thread_records,thread,process1_records,process1",
                   help="KafkaSampleSource prefetch workers to run, comma-separated: thread, "
                        "processN (N processes); a _records suffix decodes record by record "
                        "(fastavro, one Sample each: how it was before the columnar reader)")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # torch is imported here and in _train, not at the top: a spawned prefetch process
    # re-imports this module (spawn's __mp_main__) and, like `streamtrain train`'s, does not
    # need torch to decode (importing it was ~2 s of each worker's start-up)
    import torch

    torch.set_num_threads(1)
    n, bs = args.samples - args.samples % args.batch, args.batch
    samples = SyntheticStream(num_slots=26, users=20000, items=10000, vocab=5000,
                              seed=2).take(n)
    builder = BatchBuilder(MODEL)
    batches = [builder.build(samples[i:i + bs], {0: i + bs}) for i in range(0, n, bs)]
    codec = codec_for(Sample)
    values = [codec.encode(s) for s in samples]
    decode = decode_cost(values[:8 * bs], bs)
    print(f"decode (no Kafka, CPU per sample): {decode}", flush=True)
    runs: list[dict] = []
    with kafka_for_bench(args.bootstrap) as kafka:
        topics = fresh_topics(kafka, "bench-trainer-kafka")
        producer = make_producer(kafka)
        for i, v in enumerate(values):
            producer.send(topics.samples, v, partition=i % topics.partitions)
        producer.flush()
        producer.close()
        for r in range(args.rounds):
            cfg = TrainerConfig(batch_size=bs, max_samples=n, report_every_batches=1000,
                                idle_timeout_s=30)
            run: dict = {"round": r, "load_1m": round(os.getloadavg()[0], 2)}
            mem = _train(BatchList(batches), cfg)
            assert mem["samples"] == n, (mem["samples"], n)
            run |= {"memory_samples_per_s": round(n / mem["wall_s"]),
                    "memory_steady_per_s": round(mem["steady_per_s"]),
                    "memory_cpu_us_per_sample": round(1e6 * mem["cpu_s"] / n, 1)}
            for prefetch in args.prefetch.split(","):
                kind, workers, columnar = _variant(prefetch)
                got = _train(KafkaSampleSource(kafka, topics, MODEL, cfg, prefetch=kind,
                                               workers=workers, columnar=columnar), cfg)
                k, m = got["samples"], f"kafka_{prefetch}"
                assert k >= n, (k, n)
                run[f"{m}_samples_per_s"] = round(k / got["wall_s"])
                run[f"{m}_over_memory"] = round((k / got["wall_s"]) / (n / mem["wall_s"]), 3)
                run[f"{m}_steady_over_memory"] = round(got["steady_per_s"] / mem["steady_per_s"], 3)
                run[f"{m}_first_batch_s"] = round(got["first_batch_s"], 2)
                # CPU per sample of the training process, and of the prefetch processes
                run[f"{m}_cpu_us_per_sample"] = round(1e6 * got["cpu_s"] / k, 1)
                run[f"{m}_worker_cpu_us_per_sample"] = round(1e6 * got["worker_cpu_s"] / k, 1)
            run["load_1m_after"] = round(os.getloadavg()[0], 2)
            runs.append(run)
            print(f"round {r}: " + ", ".join(f"{k} {v:,}" for k, v in run.items()
                                             if k != "round"), flush=True)
    ratios = {f"kafka_{p}_{what}": round(float(np.median([r[f"kafka_{p}_{what}"] for r in runs])), 3)
              for p in args.prefetch.split(",") for what in ("over_memory", "steady_over_memory")}
    print(f"median of {len(runs)} rounds: {ratios}")
    name = "trainer_kafka" + (f"_{args.tag}" if args.tag else "")
    path = write_result(name, {"samples": n, "batch_size": bs, "torch_threads": 1,
                               "model": MODEL.to_dict(), "command": _command(argv),
                               "decode": decode, "runs": runs, **ratios})
    print(f"wrote {path}")
    return 0


def _command(argv: list[str] | None) -> str:
    import sys

    return " ".join([".venv/bin/python -m bench.trainer_kafka",
                     *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
