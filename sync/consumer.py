"""Serving side: the library a serving system embeds to keep a local copy of the model.

    store = RocksRowStore("/var/lib/replica/rows")
    consumer = DeltaConsumer(ConsumerConfig(model="ctr", dump_dir="/dumps"), kafka, topics,
                             store, on_dense=lambda version, cfg, state_dict: ...)
    consumer.bootstrap()            # latest complete dump -> store, seek to its offsets
    while serving:
        consumer.poll(timeout_ms=100)   # apply what arrived (deltas and dense versions)
    with consumer.snapshot() as snap:   # from any thread: one whole version, pinned
        rows, found = snap.lookup("emb", ids, dim=16)
        version = snap.version

It reads its shards' partitions of ``model-deltas`` (all, or ``shards``) with manual
assignment and commits its positions to its own consumer group (one per replica, so every
replica sees every update and operators can watch each replica's lag). Undecodable or
malformed messages go to the dead-letter topic; a gap in versions is logged, counted and
passed to ``on_gap``. A version becomes visible atomically, once every part of it on every
shard this consumer reads arrived (``sync.applier``, ``sync.view``); readers pin one with
``snapshot()`` and never wait for an apply.

With ``on_traces``, the freshness traces a version carries (the ``streamtrain-trace`` header,
``sync.freshness``) are handed over with the time that version became visible,
``on_traces(traces, visible_ms)``, once per version; versions up to the dump bootstrapped
from carry none that count (their messages are not applied).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas import DeadLetter, DenseSnapshot, SparseDelta, codec_for
from streamtrain.clock import now_ms
from streamtrain.dead_letters import DeadLetterSink
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, drain, make_consumer
from sync.applier import DeltaApplier
from sync.config import ConsumerConfig
from sync.delta_builder import check_delta
from sync.delta_wire import DeltaWire
from sync.dense import DenseAssembler, DenseChecksumError, DenseChunkError, decode_dense
from sync.dump import Dump, latest_dump
from sync.errors import SyncError
from sync.freshness import TraceHeaderError, VersionTraces, decode_traces, find_header
from sync.sharding import shard_of
from sync.store import RowStore

log = logging.getLogger(__name__)
STAGE = "sync.consumer"
DenseCallback = Callable[[int, dict, dict], None]
TracesCallback = Callable[[VersionTraces, int], object]
_KEEP_TRACES = 64  # versions whose traces wait for their commit (an abandoned one may never)


@dataclass
class ConsumerStats:
    records: int = 0
    dense_versions: int = 0
    rows_bootstrapped: int = 0
    dead_letter_sink: DeadLetterSink | None = field(default=None, repr=False, compare=False)

    @property
    def dead_letters(self) -> int:
        """Records sent to the dead-letter topic (the sink's count)."""
        return 0 if self.dead_letter_sink is None else self.dead_letter_sink.count


class DeltaConsumer:
    def __init__(self, config: ConsumerConfig, kafka: KafkaConfig, topics: TopicsConfig,
                 store: RowStore, on_dense: DenseCallback | None = None,
                 on_gap: Callable[[int, list[int]], None] | None = None,
                 on_traces: TracesCallback | None = None) -> None:
        from kafka import TopicPartition

        self.config = config
        self.kafka = kafka
        self.topics = topics
        self.store = store
        self.on_dense = on_dense
        self.on_traces = on_traces
        self._traces: dict[int, VersionTraces] = {}  # version -> traces awaiting its commit
        self._traces_floor = -1  # versions up to the bootstrap dump's: never traced here
        self.bad_trace_headers = 0
        self.applier = DeltaApplier(store, config.model, on_gap=on_gap)
        self.dense = DenseAssembler(config.model)
        self._dead = DeadLetterSink(kafka, topics.dead_letter, STAGE)
        self.stats = ConsumerStats(dead_letter_sink=self._dead)
        self.dims: dict[str, int] = {}
        # held while a poll's records are applied (and the store written); readers should
        # use snapshot() instead, which never waits for an apply
        self.lock = threading.RLock()
        from kafka.errors import KafkaError

        try:
            self._consumer = make_consumer(kafka, group_id=config.group_id,
                                           max_poll_records=config.max_poll_records,
                                           check_crcs=config.check_crcs)
        except KafkaError as exc:
            raise SyncError(f"cannot reach Kafka at {kafka.bootstrap} ({exc}); is the broker "
                            "up and kafka.bootstrap right?") from exc
        parts = sorted(self._consumer.partitions_for_topic(topics.model_deltas) or ())
        if not parts:
            raise SyncError(f"topic {topics.model_deltas} not found at {kafka.bootstrap}")
        self.num_shards = len(parts)
        bad = [s for s in config.shards if s not in parts]
        if bad:
            raise SyncError(f"serve.shards {bad} are not partitions of {topics.model_deltas} "
                            f"(it has {len(parts)})")
        self.shards = list(config.shards) or parts
        self._delta_tps = [TopicPartition(topics.model_deltas, s) for s in self.shards]
        self._dense_tp = TopicPartition(topics.model_dense, 0)
        self._consumer.assign(self._delta_tps + [self._dense_tp])
        self.applier.start_at(None, self.shards)  # unknown until a dump or first versions
        self._delta_codec = DeltaWire()  # the SparseDelta codec's format, ids in numpy
        self._dense_codec = codec_for(DenseSnapshot)

    @property
    def view(self):  # -> sync.view.VersionedView
        return self.applier.view

    def snapshot(self):
        """``with consumer.snapshot() as snap:`` pins the visible version: ``snap.version``
        and ``snap.lookup(table, ids, dim)`` agree however long the block runs. Thread-safe."""
        return self.applier.view.snapshot()

    # -- start -----------------------------------------------------------------------
    def bootstrap(self) -> Dump | None:
        """Load the latest complete dump (rows of our shards + dense), then seek
        ``model-deltas`` to the dump's offsets. Without a dump: from the beginning
        (or SyncError when ``require_dump``)."""
        dump = latest_dump(self.config.dump_dir, self.config.model)
        if dump is None:
            if self.config.require_dump:
                raise SyncError(f"no complete dump of model {self.config.model!r} under "
                                f"{self.config.dump_dir}; start the trainer's publisher first")
            self._consumer.seek_to_beginning(*self._delta_tps, self._dense_tp)
            return None
        if dump.num_shards != self.num_shards:
            raise SyncError(f"dump {dump.path} was cut for {dump.num_shards} shards but "
                            f"{self.topics.model_deltas} has {self.num_shards} partitions")
        for table, meta in dump.tables.items():
            self.dims[table] = meta["dim"]
            ids, values = dump.table_rows(table)
            mine = np.isin(shard_of(np.asarray(ids), self.num_shards), self.shards)
            for lo in range(0, len(ids), 200_000):
                sel = mine[lo:lo + 200_000]
                self.store.write_rows(table, np.asarray(ids[lo:lo + 200_000])[sel],
                                      np.asarray(values[lo:lo + 200_000])[sel], dump.version)
            self.stats.rows_bootstrapped += int(mine.sum())
        self.applier.start_at(dump.version, self.shards, dump.created_ms)
        self._traces_floor = dump.version
        self._set_dense(dump.version, dump.dense_payload())
        for tp in self._delta_tps:
            self._consumer.seek(tp, dump.deltas_offsets.get(tp.partition, 0))
        self._consumer.seek(self._dense_tp, dump.dense_offset)
        log.info("bootstrapped model=%s version=%d rows=%d from %s", self.config.model,
                 dump.version, self.stats.rows_bootstrapped, dump.path)
        return dump

    def _set_dense(self, version: int, payload: bytes) -> None:
        self.dense.version = max(self.dense.version, version)
        self.stats.dense_versions += 1
        if self.on_dense:
            cfg, state = decode_dense(payload)
            self.on_dense(version, cfg, state)

    # -- steady state ----------------------------------------------------------------
    def poll(self, timeout_ms: int = 100) -> int:
        """Apply whatever arrived within ``timeout_ms``; returns the number of records."""
        polled = self._consumer.poll(timeout_ms=timeout_ms)
        return self._apply([r for recs in polled.values() for r in recs])

    def _apply(self, records: list[Any]) -> int:
        with self.lock:
            for r in records:
                if r.topic == self.topics.model_dense:
                    self._on_dense_record(r)
                else:
                    self._on_delta_record(r)
        self.stats.records += len(records)
        if records:
            self._consumer.commit_async()
        return len(records)

    def _on_delta_record(self, r: Any) -> None:
        now = now_ms()
        d = self._delta_codec.decode_or_dead_letter(
            r.value, stage=STAGE, topic=r.topic, now_ms=now, partition=r.partition, offset=r.offset)
        if isinstance(d, SparseDelta):
            reason = check_delta(d)
            if reason is None and d.shard != r.partition:
                reason = f"delta for shard {d.shard} on partition {r.partition}"
            if reason is not None:
                d = DeadLetter(STAGE, r.topic, f"malformed delta: {reason}", now, r.value,
                               r.partition, r.offset)
        if isinstance(d, DeadLetter):
            self._dead_letter(d)
            return
        if d.table and d.dim:
            self.dims.setdefault(d.table, d.dim)
        traces = self._read_traces(d, r) if self.on_traces is not None else None
        result = self.applier.apply(d)
        if traces is not None and not result.duplicate:
            self._traces.setdefault(d.version, traces)
            while len(self._traces) > _KEEP_TRACES:
                del self._traces[min(self._traces)]
        if result.committed is not None and self.on_traces is not None:
            done = self._traces.pop(result.committed, None)
            if done is not None:
                self.on_traces(done, result.visible_ms or now)

    def _read_traces(self, d: SparseDelta, r: Any) -> VersionTraces | None:
        """The traces a record of version ``d.version`` carries, if it is to be awaited."""
        raw = find_header(getattr(r, "headers", None))
        if raw is None or d.model != self.config.model or d.version <= self._traces_floor \
                or d.version in self._traces:
            return None
        try:
            vt = decode_traces(raw)
        except TraceHeaderError as exc:  # the delta is fine: applied, only not traced
            self.bad_trace_headers += 1
            log.warning("model=%s version=%d partition=%d offset=%d: %s", d.model, d.version,
                        r.partition, r.offset, exc)
            return None
        if vt.version != d.version or vt.model != d.model:
            self.bad_trace_headers += 1
            log.warning("trace header of model=%s version=%d on a delta of model=%s version=%d "
                        "(partition=%d offset=%d): ignored", vt.model, vt.version, d.model,
                        d.version, r.partition, r.offset)
            return None
        return vt

    def _on_dense_record(self, r: Any) -> None:
        now = now_ms()
        snap = self._dense_codec.decode_or_dead_letter(
            r.value, stage=STAGE, topic=r.topic, now_ms=now, partition=r.partition, offset=r.offset)
        if isinstance(snap, DeadLetter):
            self._dead_letter(snap)
            return
        try:
            done = self.dense.add(snap)
        except (DenseChecksumError, DenseChunkError) as exc:
            self._dead_letter(DeadLetter(STAGE, r.topic, str(exc), now, r.value, r.partition,
                                         r.offset))
            return
        if done:
            try:
                self._set_dense(*done)
            except Exception as exc:  # checksummed but unloadable (or refused by on_dense)
                self._dead_letter(DeadLetter(
                    STAGE, r.topic, f"unusable dense payload of version {done[0]}: "
                    f"{type(exc).__name__}: {exc}", now, r.value, r.partition, r.offset))
                return
            log.info("dense model=%s version=%d applied", self.config.model, done[0])

    def _dead_letter(self, dl: DeadLetter) -> None:
        self._dead.send(dl)

    # -- status ----------------------------------------------------------------------
    def lag_records(self) -> int:
        """Messages on our partitions not applied yet (0 when caught up)."""
        ends = self._consumer.end_offsets(self._delta_tps)
        return sum(max(0, ends[tp] - self._consumer.position(tp)) for tp in self._delta_tps)

    def caught_up(self) -> bool:
        return self.lag_records() == 0

    def poll_until_caught_up(self, timeout_s: float = 30.0) -> bool:
        """Poll until every partition's position reached its end offset (taken once at the
        start); False on timeout."""
        tps = self._delta_tps + [self._dense_tp]
        ends = self._consumer.end_offsets(tps)
        for records in drain(self._consumer, tps, timeout_s=timeout_s):
            self._apply(records)
        return all(self._consumer.position(tp) >= end for tp, end in ends.items())

    def close(self) -> None:
        try:
            self._dead.close()
        finally:
            self._consumer.close()
