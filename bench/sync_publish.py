"""Publish time and bytes for N touched rows (default 1M, dim 16) in fp32 and fp16, and the
rate a replica applies them (rows/s into rocksdict), against a real local broker.

The rows come from a real ``trainer.embedding.CpuEmbeddingTable`` holding N admitted ids,
each touched since the last push (as after a step over them): the publish time includes
the trainer's real ``collect_updates`` (touched-row scan, gather, id lookup), then
build, encode and send. The replica figure is the time from the push's end to the
consumer having committed the version (fetch, decode, stage, commit, write). Beside them,
``apply_in_process`` feeds the same encoded messages straight to a ``DeltaApplier`` over a
fresh ``RocksRowStore`` (decode + apply only: no broker), so fetch and apply separate.

    .venv/bin/python -m bench.sync_publish [--rows 1000000] [--dim 16] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch

from bench.common import fresh_topics, kafka_for_bench, write_result
from schemas import SparseDelta, codec_for
from sync.applier import DeltaApplier
from sync.config import ConsumerConfig, PublisherConfig
from sync.consumer import DeltaConsumer
from sync.delta_builder import build_deltas
from sync.delta_wire import DeltaWire
from sync.publisher import ModelPublisher
from sync.store import RocksRowStore
from trainer.config import TableConfig
from trainer.embedding import CpuEmbeddingTable
from trainer.updates import TableUpdate


class Rows:
    """A trainer-like source: one real embedding table with ``n`` live ids; before every
    collect each of them is marked touched again (what a step over them does)."""

    def __init__(self, n: int, dim: int):
        rng = np.random.default_rng(0)
        self.ids = rng.choice(2**62, n, replace=False).astype(np.int64)
        self.table = CpuEmbeddingTable("emb", TableConfig(dim=dim, admit_count=1,
                                                          initial_capacity=n + 2))
        self.rows = self.table.rows_for(self.ids, now_ms=0, train=True)

    def touch(self) -> None:
        self.table.touched[self.rows] = True

    def collect_updates(self) -> list[TableUpdate]:
        return [self.table.collect_updates()]

    def full_dump(self) -> list[TableUpdate]:
        return [self.table.full_dump()]


def in_process(rows: Rows, dtype: str, tmp: str, num_shards: int) -> dict:
    """Decode + apply of one push straight into a DeltaApplier (no broker)."""
    rows.touch()
    msgs = build_deltas("bench", 1, rows.collect_updates(), num_shards, dtype, 900_000, 0)
    raw = [codec_for(SparseDelta).encode(d) for _, d in msgs]
    wire = DeltaWire()  # what DeltaConsumer decodes with
    store = RocksRowStore(f"{tmp}/inproc-{dtype}")
    applier = DeltaApplier(store, "bench")
    applier.start_at(None, range(num_shards))
    c0, t0 = time.process_time(), time.perf_counter()
    decoded = [wire.decode(r) for r in raw]
    c1, t1 = time.process_time(), time.perf_counter()
    for d in decoded:
        applier.apply(d)
    c2, t2 = time.process_time(), time.perf_counter()
    assert applier.version == 1
    n = applier.stats.rows_applied
    store.close()
    # CPU time as well as wall time: on a shared machine the wall clock counts the waits
    return {"rows": n, "decode_s": round(t1 - t0, 3), "apply_s": round(t2 - t1, 3),
            "decode_apply_rows_per_s": round(n / (t2 - t0)),
            "decode_cpu_s": round(c1 - c0, 3), "apply_cpu_s": round(c2 - c1, 3),
            "decode_apply_rows_per_cpu_s": round(n / max(c2 - c0, 1e-9))}


def one(kafka, rows: Rows, dtype: str, tmp: str, check_crcs: bool) -> dict:
    topics = fresh_topics(kafka, f"bench-sync-{dtype}")
    rows.touch()
    pub = ModelPublisher(PublisherConfig(model="bench", dtype=dtype, dump_dir=tmp), kafka, topics,
                         rows, full_push_on_start=False)
    pub.push_sparse()  # warm-up: connections, metadata
    store = RocksRowStore(f"{tmp}/rows-{dtype}")
    consumer = DeltaConsumer(ConsumerConfig(model="bench", dump_dir=tmp, require_dump=False,
                                            check_crcs=check_crcs),
                             kafka, topics, store)
    consumer.bootstrap()
    consumer.poll_until_caught_up(120)
    rows.touch()
    c0, t0 = time.process_time(), time.perf_counter()
    stats = pub.push_sparse()
    publish_s, publish_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    assert consumer.poll_until_caught_up(600)
    apply_s = time.perf_counter() - t1
    assert consumer.applier.version == stats.version
    applied = consumer.applier.stats.rows_applied - len(rows.ids)  # minus the warm-up push
    consumer.close()
    store.close()
    pub.close()
    n = len(rows.ids)
    assert stats.rows == n, (stats.rows, n)
    return {"dtype": dtype, "check_crcs": check_crcs, "rows": n, "bytes": stats.bytes,
            "bytes_per_row": stats.bytes / n, "messages": stats.messages,
            "publish_s": round(publish_s, 3), "publish_cpu_s": round(publish_cpu_s, 3),
            "collect_s": round(stats.collect_s, 3),
            "encode_s": round(stats.encode_s, 3), "send_s": round(stats.send_s, 3),
            "apply_s": round(apply_s, 3), "rows_applied": applied,
            "apply_rows_per_s": round(applied / apply_s),
            "apply_in_process": in_process(rows, dtype, tmp, pub.num_shards)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--no-check-crcs", action="store_true",
                    help="replica skips kafka-python's (pure-Python) CRC32C check")
    ap.add_argument("--tag", default="", help="suffix of the result file name")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    rows = Rows(args.rows, args.dim)
    out = []
    with kafka_for_bench(args.bootstrap) as kafka, tempfile.TemporaryDirectory() as tmp:
        for dtype in ("fp32", "fp16"):
            r = one(kafka, rows, dtype, tmp, not args.no_check_crcs)
            out.append(r)
            ip = r["apply_in_process"]
            print(f"{dtype}: {r['rows']} rows dim {args.dim}: publish {r['publish_s']:.2f}s "
                  f"(collect {r['collect_s']:.2f}s, encode {r['encode_s']:.2f}s, "
                  f"send {r['send_s']:.2f}s), {r['bytes'] / 1e6:.1f} MB in {r['messages']} "
                  f"messages ({r['bytes_per_row']:.1f} B/row); replica apply {r['apply_s']:.2f}s "
                  f"= {r['apply_rows_per_s']:,.0f} rows/s (check_crcs={r['check_crcs']}); "
                  f"in-process decode {ip['decode_s']:.2f}s + apply {ip['apply_s']:.2f}s "
                  f"= {ip['decode_apply_rows_per_s']:,.0f} rows/s "
                  f"({ip['decode_apply_rows_per_cpu_s']:,.0f} rows per CPU second); "
                  f"publish CPU {r['publish_cpu_s']:.2f}s", flush=True)
    from kafka.record import util as kafka_util

    native_crc = kafka_util.crc32c_c is not None  # the `crc32c` package makes CRCs ~free
    name = "sync_publish" + ("_nocrc" if args.no_check_crcs else "") + \
        ("_native_crc32c" if native_crc else "") + (f"_{args.tag}" if args.tag else "")
    path = write_result(name, {"dim": args.dim, "native_crc32c": native_crc,
                               "collect": "real CpuEmbeddingTable.collect_updates",
                               "results": out})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
