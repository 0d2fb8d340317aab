"""Trainer side: push touched rows every ``sparse_interval_s`` to ``model-deltas``, and
every ``dense_interval_s`` the dense weights to ``model-dense`` plus a full dump.

The publisher reads the model only through ``sync.source.ModelSource`` (collect_updates,
full_dump, dense_state_dict, model_config), which ``trainer.Trainer`` satisfies. ``tick``
is called from the training loop between batches (the trainer is not thread-safe: reading
rows while a step writes them would publish torn rows). It does nothing until an interval
is due, so calling it after every batch is cheap.

    publisher = ModelPublisher(PublisherConfig(model="ctr", sparse_interval_s=5), kafka,
                               topics, trainer, traces=trainer.traces)  # traces: freshness
    trainer.run(source, on_batch=publisher.on_batch,     # tick after every step
                on_idle=lambda _: publisher.tick())      # ... and while the stream is quiet
    publisher.publish_dense()            # the final model: rows, dense weights and a dump
    publisher.close()

or by hand: ``trainer.train_batch(batch); publisher.tick()``. Times come from ``clock``
(``streamtrain.clock``; tests pass ``now_s`` / ``now_ms`` or a ``FixedClock``).

Versions are consecutive integers per model, continued across restarts from the newest of
(the newest version of this model on ``model-deltas``, read backwards past other models'
and corrupt messages; the latest dump), so a restart never reuses a version. The first tick writes a dump (a
replica needs one to bootstrap) and, with ``full_push_on_start``, pushes every live row, so
replicas that outlived a trainer restart converge to the restored model.

With ``traces`` (the trainer's ``trainer.freshness.ActionTraces``), each sparse push takes
the freshness traces of the actions trained on since the previous push and attaches them,
with ``published_ms``, as the Kafka header ``streamtrain-trace`` on part 0 of every shard's
message of that version (``sync.freshness``); the message values do not change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas import DenseSnapshot, SparseDelta, codec_for
from schemas.errors import DecodeError
from streamtrain.clock import WALL, Clock
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, make_consumer, make_producer
from sync.config import PublisherConfig
from sync.delta_builder import TableRows, build_deltas, check_delta
from sync.delta_wire import DeltaWire
from sync.dense import chunk_dense, encode_dense
from sync.dump import Dump, latest_dump, write_dump
from sync.errors import SyncError
from sync.freshness import TRACE_HEADER, VersionTraces, encode_traces
from sync.source import ModelSource, TraceSource

log = logging.getLogger(__name__)


@dataclass
class PushStats:
    version: int
    rows: int
    tombstones: int
    messages: int
    bytes: int
    collect_s: float
    encode_s: float
    send_s: float
    created_ms: int


def merge_full(full: Sequence[TableRows], collected: Sequence[TableRows]) -> list[Any]:
    """Rows of ``full_dump`` with the evictions of ``collect_updates`` (for a full push)."""
    evicted = {u.table: u.evicted for u in collected}
    out = []
    for u in full:
        make: Any = type(u)  # the source's own update type
        out.append(make(u.table, u.ids, u.values,
                        np.asarray(evicted.pop(u.table, np.zeros(0, np.int64)), np.int64)))
    for u in collected:
        if u.table in evicted and len(u.evicted):
            make = type(u)
            out.append(make(u.table, u.ids[:0], u.values[:0], u.evicted))
    return out


class ModelPublisher:
    """Owns the version counter and the intervals; ``source`` is the trainer (any
    ``ModelSource``)."""

    def __init__(self, config: PublisherConfig, kafka: KafkaConfig, topics: TopicsConfig,
                 source: ModelSource, producer: Any = None, full_push_on_start: bool = True,
                 clock: Clock = WALL, traces: TraceSource | None = None) -> None:
        self.config = config
        self.traces = traces
        self.kafka = kafka
        self.topics = topics
        self.source = source
        self.clock = clock
        limit = max(config.max_message_bytes, config.dense_chunk_bytes) + 65536
        self._producer = producer or make_producer(kafka, max_request_size=limit, linger_ms=20)
        parts = self._producer.partitions_for(topics.model_deltas)
        if not parts:
            raise SyncError(f"topic {topics.model_deltas} has no partitions; create the topics "
                            "first (`streamtrain topics create`)")
        self.num_shards = len(parts)
        self._delta_codec = codec_for(SparseDelta)
        self._wire = DeltaWire()  # the same bytes as _delta_codec, ids encoded in numpy
        self._dense_codec = codec_for(DenseSnapshot)
        self.version = self._recover_version()
        self._full_next = full_push_on_start
        self._last_sparse: float | None = None
        self._last_dense: float | None = None
        self.last_push: PushStats | None = None
        self.last_dump: Dump | None = None

    def _recover_version(self) -> int:
        """Newest version already published for this model (0 if none): the newest of the
        latest dump's and of the newest message *of this model* on each ``model-deltas``
        partition. Each partition is read backwards from its end, past other models'
        messages and undecodable ones, down to the dump's offset for it (nothing older can
        be newer than the dump) or the beginning, at most ``recover_scan_messages`` deep;
        what was skipped, and a scan cut short by that bound, are logged."""
        from kafka import TopicPartition

        dump = latest_dump(self.config.dump_dir, self.config.model)
        best = dump.version if dump else 0
        floor = dump.deltas_offsets if dump and dump.deltas_topic == self.topics.model_deltas \
            else {}
        consumer = make_consumer(self.kafka, group_id=None)
        try:
            tps = [TopicPartition(self.topics.model_deltas, p) for p in range(self.num_shards)]
            ends = consumer.end_offsets(tps)
            begins = consumer.beginning_offsets(tps)
            for tp in tps:
                low = max(begins.get(tp, 0), floor.get(tp.partition, 0))
                found = self._scan_back(consumer, tp, low, ends.get(tp, 0))
                if found is not None:
                    best = max(best, found)
        finally:
            consumer.close()
        log.info("publisher model=%s resumes after version=%d shards=%d", self.config.model,
                 best, self.num_shards)
        return best

    def _scan_back(self, consumer: Any, tp: Any, low: int, end: int) -> int | None:
        """The version of the newest well-formed message of this model in ``[low, end)`` of
        ``tp``, reading backwards in growing windows; None if there is none (within the
        bound)."""
        limit = max(low, end - self.config.recover_scan_messages)
        consumer.assign([tp])
        hi, window, skipped = end, 16, {"other model": 0, "corrupt": 0}
        while hi > limit:
            lo = max(limit, hi - window)
            consumer.seek(tp, lo)
            records: list[Any] = []
            deadline = time.monotonic() + 30.0
            while consumer.position(tp) < hi and time.monotonic() < deadline:
                for recs in consumer.poll(timeout_ms=200).values():
                    records.extend(r for r in recs if lo <= r.offset < hi)
            for r in sorted(records, key=lambda r: r.offset, reverse=True):
                try:
                    d = self._decode_tail(r.value)
                except DecodeError:  # undecodable: tells nothing, look further back
                    skipped["corrupt"] += 1
                    continue
                if d.model != self.config.model:
                    skipped["other model"] += 1
                elif check_delta(d) is not None:
                    skipped["corrupt"] += 1
                else:
                    if any(skipped.values()):
                        log.warning("recover model=%s partition=%d: newest own version=%d at "
                                    "offset %d, below %s newer messages skipped (%s)",
                                    self.config.model, tp.partition, d.version, r.offset,
                                    sum(skipped.values()), skipped)
                    return d.version
            hi, window = lo, window * 4
        if limit > low:
            log.warning("recover model=%s partition=%d: no message of this model in the last %d "
                        "(offsets %d..%d, skipped %s); older ones were not read "
                        "(sync.recover_scan_messages) — versions could be reused if this "
                        "model's newest deltas lie further back", self.config.model,
                        tp.partition, end - limit, limit, end, skipped)
        elif any(skipped.values()):
            log.info("recover model=%s partition=%d: no message of this model after offset %d "
                     "(skipped %s)", self.config.model, tp.partition, low, skipped)
        return None

    def _decode_tail(self, raw: bytes) -> SparseDelta:
        return self._delta_codec.decode(raw)

    def tick(self, now_s: float | None = None) -> PushStats | None:
        """Publish what is due at ``now_s`` (wall clock if None); the push made, or None."""
        now = self.clock.now_ms() / 1000 if now_s is None else now_s
        if self._last_dense is None and self.config.dump_on_start or (
                self._last_dense is not None
                and now - self._last_dense >= self.config.dense_interval_s):
            self.publish_dense(int(now * 1000))
            self._last_dense = self._last_sparse = now
            return self.last_push
        if self._last_sparse is None or now - self._last_sparse >= self.config.sparse_interval_s:
            self._last_sparse = now
            if self._last_dense is None:
                self._last_dense = now
            return self.push_sparse(int(now * 1000))
        return None

    def on_batch(self, batch: object, trainer: object) -> None:
        """``Trainer.run(source, on_batch=publisher.on_batch)`` hook: tick after every step."""
        self.tick()

    def push_sparse(self, now_ms: int | None = None) -> PushStats:
        """Push the rows touched since the last push as the next version; returns its stats."""
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        t0 = time.perf_counter()
        updates = self.source.collect_updates()
        if self._full_next:
            updates = merge_full(self.source.full_dump(), updates)
            self._full_next = False
        t1 = time.perf_counter()
        version = self.version + 1
        msgs = build_deltas(self.config.model, version, updates, self.num_shards,
                            self.config.dtype, self.config.max_message_bytes, now_ms,
                            ids_as_arrays=True)
        encoded = [(shard, self._wire.encode(d)) for shard, d in msgs]
        t2 = time.perf_counter()
        header = self._trace_header(version)
        futures = [self._producer.send(self.topics.model_deltas, value=raw, partition=shard,
                                       key=str(shard).encode(),
                                       headers=header if d.part == 0 else None)
                   for (shard, raw), (_, d) in zip(encoded, msgs, strict=True)]
        self._producer.flush()
        offsets: dict[int, int] = {}
        for f in futures:
            meta = f.get(timeout=self.kafka.request_timeout_ms / 1000)
            offsets[meta.partition] = max(offsets.get(meta.partition, 0), meta.offset + 1)
        t3 = time.perf_counter()
        self.version = version
        self._offsets = offsets
        stats = PushStats(version, sum(len(u.ids) for u in updates),
                          sum(len(d.tombstones) for _, d in msgs), len(encoded),
                          sum(len(r) for _, r in encoded), t1 - t0, t2 - t1, t3 - t2, now_ms)
        self.last_push = stats
        log.info("sparse push model=%s version=%d rows=%d tombstones=%d messages=%d bytes=%d "
                 "collect_s=%.3f encode_s=%.3f send_s=%.3f", self.config.model, version,
                 stats.rows, stats.tombstones, stats.messages, stats.bytes, stats.collect_s,
                 stats.encode_s, stats.send_s)
        return stats

    def _trace_header(self, version: int) -> list[tuple[str, bytes]] | None:
        """The ``streamtrain-trace`` header of ``version``: the traces since the last push,
        published now (wall time of the send, whatever ``now_ms`` the push was given)."""
        if self.traces is None:
            return None
        rows, actions = self.traces.take()
        if not len(rows):  # nothing trained since the last push: no header
            return None
        vt = VersionTraces(self.config.model, version, self.clock.now_ms(), actions, rows)
        return [(TRACE_HEADER, encode_traces(vt))]

    def publish_dense(self, now_ms: int | None = None) -> Dump:
        """Sparse push, then dense weights to ``model-dense`` and a full dump, all at the
        push's version (nothing trains in between, so the three agree)."""
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        self.push_sparse(now_ms)
        payload = encode_dense(self.source.dense_state_dict(), self.source.model_config())
        chunks = chunk_dense(self.config.model, self.version, now_ms, payload,
                             self.config.dense_chunk_bytes)
        futures = [self._producer.send(self.topics.model_dense, value=self._dense_codec.encode(c),
                                       partition=0) for c in chunks]
        self._producer.flush()
        dense_offset = max(f.get(timeout=self.kafka.request_timeout_ms / 1000).offset
                           for f in futures) + 1
        self.last_dump = write_dump(
            self.config.dump_dir, self.config.model, self.version, now_ms,
            self.source.full_dump(), payload, self.topics.model_deltas, self._offsets,
            self.topics.model_dense, dense_offset, self.num_shards, self.config.keep_dumps)
        log.info("dense publish model=%s version=%d bytes=%d chunks=%d", self.config.model,
                 self.version, len(payload), len(chunks))
        return self.last_dump

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()
