"""Publish time and bytes for N touched rows (default 1M, dim 16) in fp32 and fp16, and the
rate a replica applies them (rows/s into rocksdict), against a real local broker.

    .venv/bin/python -m bench.sync_publish [--rows 1000000] [--dim 16] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np

from bench.common import fresh_topics, kafka_for_bench, write_result
from sync.config import ConsumerConfig, PublisherConfig
from sync.consumer import DeltaConsumer
from sync.publisher import ModelPublisher
from sync.store import RocksRowStore
from trainer.updates import TableUpdate


class Rows:
    """A source whose every collect returns the same N touched rows."""

    def __init__(self, n: int, dim: int):
        rng = np.random.default_rng(0)
        self.update = TableUpdate("emb", rng.choice(2**62, n, replace=False).astype(np.int64),
                                  rng.standard_normal((n, dim)).astype(np.float32),
                                  np.zeros(0, np.int64))

    def collect_updates(self):
        return [self.update]


def one(kafka, rows: Rows, dtype: str, tmp: str, check_crcs: bool) -> dict:
    topics = fresh_topics(kafka, f"bench-sync-{dtype}")
    pub = ModelPublisher(PublisherConfig(model="bench", dtype=dtype, dump_dir=tmp), kafka, topics,
                         rows, full_push_on_start=False)
    pub.push_sparse()  # warm-up: connections, metadata
    store = RocksRowStore(f"{tmp}/rows-{dtype}")
    consumer = DeltaConsumer(ConsumerConfig(model="bench", dump_dir=tmp, require_dump=False,
                                            check_crcs=check_crcs),
                             kafka, topics, store)
    consumer.bootstrap()
    consumer.poll_until_caught_up(120)
    t0 = time.perf_counter()
    stats = pub.push_sparse()
    publish_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    assert consumer.poll_until_caught_up(600)
    apply_s = time.perf_counter() - t1
    assert consumer.applier.version == stats.version
    applied = consumer.applier.stats.rows_applied - len(rows.update.ids)  # minus the warm-up push
    consumer.close()
    store.close()
    pub.close()
    n = len(rows.update.ids)
    return {"dtype": dtype, "check_crcs": check_crcs, "rows": n, "bytes": stats.bytes, "bytes_per_row": stats.bytes / n,
            "messages": stats.messages, "publish_s": publish_s, "collect_s": stats.collect_s,
            "encode_s": stats.encode_s, "send_s": stats.send_s, "apply_s": apply_s,
            "rows_applied": applied, "apply_rows_per_s": applied / apply_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--no-check-crcs", action="store_true",
                    help="replica skips kafka-python's (pure-Python) CRC32C check")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = Rows(args.rows, args.dim)
    out = []
    with kafka_for_bench(args.bootstrap) as kafka, tempfile.TemporaryDirectory() as tmp:
        for dtype in ("fp32", "fp16"):
            r = one(kafka, rows, dtype, tmp, not args.no_check_crcs)
            out.append(r)
            print(f"{dtype}: {r['rows']} rows dim {args.dim}: publish {r['publish_s']:.2f}s "
                  f"(encode {r['encode_s']:.2f}s, send {r['send_s']:.2f}s), "
                  f"{r['bytes'] / 1e6:.1f} MB in {r['messages']} messages "
                  f"({r['bytes_per_row']:.1f} B/row); replica apply {r['apply_s']:.2f}s = "
                  f"{r['apply_rows_per_s']:,.0f} rows/s (check_crcs={r['check_crcs']})")
    from kafka.record import util as kafka_util

    native_crc = kafka_util.crc32c_c is not None  # the `crc32c` package makes CRCs ~free
    name = "sync_publish" + ("_nocrc" if args.no_check_crcs else "") + \
        ("_native_crc32c" if native_crc else "")
    path = write_result(name, {"dim": args.dim, "native_crc32c": native_crc, "results": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
