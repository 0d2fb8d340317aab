"""Streaming input: the ``samples`` topic -> typed batches, decoded on a prefetch worker.

The consumer is *assigned* every partition of the topic (no consumer-group rebalancing:
the trainer owns its input) and seeks to the positions of the checkpoint it restored, or to
the beginning. A prefetch worker polls, decodes records in bulk into ``Batch``es of
``batch_size`` (or fewer after ``max_wait_ms`` without a full one) and queues up to
``prefetch_batches`` of them, so decoding overlaps training. A fetch is decoded in columns
(``trainer.columnar``: every record at once with numpy, straight into the batch's arrays;
~8 us of CPU per sample against ~35 us record by record with fastavro and a ``Sample`` each,
bench/trainer_kafka.py ``decode``); a record the columnar reader cannot read exactly is
decoded by the codec, which gives the same sample or dead letter (``columnar=False`` decodes
everything that way). The worker is one thread by default (``prefetch="thread"``), or child
processes (``prefetch="process"``: the training process then spends on a sample about what
it spends fed from memory, and the worker's fetch + decode runs beside it, a wall-clock gain
only where a core is free; a spawned process imports what decoding needs, not torch:
``trainer``'s torch-backed names load on first use). Each process is spawned (a forked child
inherited the parent's Kafka client state without its network threads and hung), exits when
the trainer process is gone (even killed with -9), reads its share of the partitions
(``workers``, default 1, at most one per partition) with its own consumer and dead-letter
producer, and hands batches over a pipe; each batch carries the positions of its worker's
partitions only. On the 2-core dev box a second process did not help. Each batch carries the
positions (partition -> next offset) once it is consumed, including records that went to the
dead-letter topic, which is what a checkpoint stores.

Bad records (undecodable bytes, or a sample the model cannot use) go to the dead-letter
topic with the reason and a counter; they never stop the trainer. Dead letters are
at-least-once: a restart re-reads records after the checkpoint and may send one again.

The consumer reads ``trainer.isolation_level`` (default ``read_committed``): samples of
aborted transactions (a joiner with ``exactly_once`` that failed mid-checkpoint) are never
trained on, and samples of an open transaction only once it commits.

After ``trainer.idle_warn_s`` without a sample it logs one warning per idle period (not per
poll) naming the topic and what the dead-letter topic holds (count, newest reasons), since
an empty samples topic next to a filling dead-letter topic means an upstream stage rejects
its input.

    source = KafkaSampleSource(kafka, topics, model_cfg, trainer_cfg, start=trainer.positions)
    batch = source.next_batch(timeout_s=1.0)      # None when nothing came in time
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas import DeadLetter, Sample, codec_for
from streamtrain.clock import now_ms
from streamtrain.dead_letters import DeadLetterSink
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, assign, make_consumer
from trainer.batch import Batch, BatchBuilder
from trainer.columnar import ColumnarReader, UnsupportedSchema
from trainer.config import ModelConfig, TrainerConfig
from trainer.errors import StreamError

log = logging.getLogger(__name__)
STAGE = "trainer"
PREFETCH = ("process", "thread")


def decode_records(records: list, codec, builder: BatchBuilder, dead: DeadLetterSink,
                   topic: str, reader: ColumnarReader | None = None) -> Batch:
    """One batch of the samples in ``records`` (Kafka records of ``topic``), with the
    positions after them; bad ones go to ``dead`` (dead letters count as consumed). With a
    ``reader`` the whole fetch is decoded in columns (trainer.columnar), the same batch and
    dead letters as record by record at a fraction of the CPU; a fetch holding a record
    the reader leaves to ``codec`` that is still a sample (another writer schema) is read
    record by record."""
    positions: dict[int, int] = {}
    for r in records:
        positions[r.partition] = max(positions.get(r.partition, 0), r.offset + 1)
    now = now_ms()
    if reader is not None:
        batch = _decode_columns(records, reader, codec, builder, dead, topic, positions, now)
        if batch is not None:
            return batch
    samples: list[Sample] = []
    for r in records:
        rec = codec.decode_or_dead_letter(r.value, stage=STAGE, topic=topic, now_ms=now,
                                          partition=r.partition, offset=r.offset)
        if not isinstance(rec, DeadLetter):
            problem = builder.problem(rec)
            if problem is None:
                samples.append(rec)
                continue
            rec = _invalid(rec, problem, r, builder, topic, now)
        dead.send(rec)
    return builder.build(samples, positions)


def _invalid(sample: Sample, problem: str, r, builder: BatchBuilder, topic: str,
             now: int) -> DeadLetter:
    _warn_layout(sample, builder)
    return DeadLetter(stage=STAGE, source_topic=topic, reason=f"invalid sample: {problem}",
                      time_ms=now, raw=bytes(r.value), partition=r.partition, offset=r.offset)


def _decode_columns(records: list, reader: ColumnarReader, codec, builder: BatchBuilder,
                    dead: DeadLetterSink, topic: str, positions: dict[int, int],
                    now: int) -> Batch | None:
    """``decode_records`` in columns, or None (nothing sent) where a record the columnar
    reader flagged still decodes to a sample. Flagged records and samples ``problems``
    rejects are decoded one by one for the reason: the same dead letters, in order."""
    cols = reader.read([r.value for r in records])
    invalid = builder.problems(cols) & ~cols.bad
    letters: list[DeadLetter] = []
    for i in np.flatnonzero(cols.bad | invalid).tolist():
        r = records[i]
        rec = codec.decode_or_dead_letter(r.value, stage=STAGE, topic=topic, now_ms=now,
                                          partition=r.partition, offset=r.offset)
        if not isinstance(rec, DeadLetter):
            problem = builder.problem(rec)
            if problem is None:
                return None
            rec = _invalid(rec, problem, r, builder, topic, now)
        letters.append(rec)
    for letter in letters:
        dead.send(letter)
    return builder.build_columns(cols, ~(cols.bad | invalid), positions)


def columnar_reader(codec) -> ColumnarReader | None:
    """The columnar reader of ``codec``'s schema, or None where it has types the reader
    does not read (then every record is decoded by ``codec``)."""
    try:
        return ColumnarReader(codec)
    except UnsupportedSchema as exc:
        log.warning("samples decoded record by record: %s", exc)
        return None


_LAYOUTS_WARNED: set[tuple[int, int]] = set()


def _warn_layout(sample: Sample, builder: BatchBuilder) -> None:
    """Once per dense width: samples laid out for another model (e.g. the feature job's 9
    slots and 33 dense values behind a trainer left on the defaults) are all dead-lettered;
    say loudly how to start the trainer for them."""
    model = builder.model
    width = len(sample.dense)
    if width == model.dense_dim or (width, model.dense_dim) in _LAYOUTS_WARNED:
        return
    _LAYOUTS_WARNED.add((width, model.dense_dim))
    slots = ",".join(str(s) for s in sorted(set(sample.slots)))
    log.error("samples carry %d dense values and slots %s, the model expects %d dense values and slots %s: "
              "every such sample is dead-lettered. To train on them, start the trainer with "
              "--set model.dense_dim=%d --set model.slots=%s (or the [model] section of the samples' "
              "producer)", width, slots, model.dense_dim, ",".join(map(str, model.slots)), width, slots)


def _fill(consumer, cfg: TrainerConfig, stop, put: Callable[[list], bool]) -> None:
    """Poll into ``put`` record lists of ``batch_size`` (fewer after ``max_wait_ms``)
    until ``stop`` is set or ``put`` returns False."""
    pending: list = []
    first_at = 0.0
    while not stop.is_set():
        want = cfg.batch_size - len(pending)
        polled = consumer.poll(timeout_ms=50, max_records=want)
        for recs in polled.values():
            if recs and not pending:
                first_at = time.monotonic()
            pending.extend(recs)
        waited = (time.monotonic() - first_at) * 1000 if pending else 0.0
        if pending and (len(pending) >= cfg.batch_size or waited >= cfg.max_wait_ms):
            records, pending = pending, []
            if not put(records):
                return


def _put_until_stopped(q, item, stop) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _UntilParentGone:
    """``stop`` of a prefetch process, also set once the trainer process is gone (killed
    with -9 it sets nothing, and the orphan would poll Kafka forever)."""

    def __init__(self, stop) -> None:
        self.stop, self.parent = stop, multiprocessing.parent_process()

    def is_set(self) -> bool:
        return self.stop.is_set() or (self.parent is not None and not self.parent.is_alive())


def _process_worker(kafka: KafkaConfig, topic: str, dead_topic: str, model: ModelConfig,
                    cfg: TrainerConfig, start: dict[int, int] | None, parts: list[int],
                    out, stop, worker: int = 0, columnar: bool = True) -> None:
    """A prefetch process reading ``parts``: its own consumer and dead-letter sink; puts
    ("batch", worker, batch, records so far, dead letters so far), or ("error", message)
    and stops; stops too when the trainer process is gone."""
    out.cancel_join_thread()  # never block the exit on batches nobody will read
    stop = _UntilParentGone(stop)
    dead = consumer = None
    try:
        dead = DeadLetterSink(kafka, dead_topic, STAGE)
        consumer = make_consumer(kafka, group_id=None, max_poll_records=max(cfg.batch_size, 500),
                                 isolation_level=cfg.isolation_level)
        mine = {p: o for p, o in (start or {}).items() if p in parts}
        assign(consumer, kafka, topic, start=mine or None, partitions=parts)
        codec, builder, seen = codec_for(Sample), BatchBuilder(model), [0]
        reader = columnar_reader(codec) if columnar else None

        def put(records: list) -> bool:
            batch = decode_records(records, codec, builder, dead, topic, reader)
            seen[0] += len(records)
            return _put_until_stopped(out, ("batch", worker, batch, seen[0], dead.count), stop)

        _fill(consumer, cfg, stop, put)
    except BaseException as exc:  # surfaced to the trainer by next_batch
        log.exception("prefetch process failed topic=%s", topic)
        _put_until_stopped(out, ("error", f"{type(exc).__name__}: {exc}"), stop)
    finally:
        try:
            if dead is not None:
                dead.close(timeout_s=10)
        finally:
            if consumer is not None:
                consumer.close()


class KafkaSampleSource:
    exhausted = False  # a stream never ends; the trainer stops on its own bounds

    def __init__(self, kafka: KafkaConfig, topics: TopicsConfig, model: ModelConfig,
                 cfg: TrainerConfig, start: dict[int, int] | None = None,
                 metadata_timeout_s: float = 30.0, prefetch: str = "thread",
                 workers: int = 1, columnar: bool = True) -> None:
        from kafka.errors import KafkaError

        if prefetch not in PREFETCH:
            raise StreamError(f"prefetch={prefetch!r}: one of {', '.join(PREFETCH)}")
        if workers < 1:
            raise StreamError(f"workers={workers}: at least 1 prefetch process")
        self.topic, self.dead_topic, self.cfg = topics.samples, topics.dead_letter, cfg
        self.prefetch = prefetch
        self.builder = BatchBuilder(model)
        self.codec = codec_for(Sample)
        self.reader = columnar_reader(self.codec) if columnar else None
        self.dead = DeadLetterSink(kafka, topics.dead_letter, STAGE)
        self.records = 0
        self._worker_counts: dict[int, tuple[int, int]] = {}  # worker -> (records, dead letters)
        try:
            self.consumer = make_consumer(kafka, group_id=None, max_poll_records=max(cfg.batch_size, 500),
                                          isolation_level=cfg.isolation_level)
            parts = sorted(self._partitions(metadata_timeout_s))
            if prefetch == "thread":
                assign(self.consumer, kafka, self.topic, start=start, partitions=parts)
        except KafkaError as exc:
            raise StreamError(f"cannot consume {self.topic} from {kafka.bootstrap}: {exc}; is the "
                              "broker up and the topic created (`streamtrain topics create`)?") from exc
        log.info("consuming topic=%s partitions=%s start=%s isolation_level=%s prefetch=%s",
                 self.topic, parts, start or "beginning", cfg.isolation_level, prefetch)
        self.kafka = kafka
        self.positions: dict[int, int] = dict(start or {})  # of the batches served so far
        self._idle_since = time.monotonic()
        self._idle_warned = False
        self._error: BaseException | None = None
        self._stop: Any
        self._queue: Any
        if prefetch == "thread":
            self._queue = queue.Queue(maxsize=cfg.prefetch_batches)
            self._stop = threading.Event()
            self._workers: list[Any] = [threading.Thread(target=self._loop,
                                                         name="sample-prefetch", daemon=True)]
        else:
            self.consumer.close()  # the workers own the input from here
            # spawn, not fork: a forked child inherits the parent's Kafka client state but not
            # its network threads (kafka-python 3), and hung in its first poll in the suite
            ctx = multiprocessing.get_context("spawn")
            self._queue = ctx.Queue(maxsize=cfg.prefetch_batches)
            self._stop = ctx.Event()
            n = min(workers, len(parts))  # partitions dealt out: each read by one worker
            self._workers = [ctx.Process(
                target=_process_worker, name=f"sample-prefetch-{w}", daemon=True,
                args=(kafka, self.topic, self.dead_topic, model, cfg, start, parts[w::n],
                      self._queue, self._stop, w, columnar)) for w in range(n)]
        for w in self._workers:
            w.start()

    @property
    def dead_letters(self) -> int:
        """Records sent to the dead-letter topic so far."""
        return self.dead.count + sum(d for _, d in self._worker_counts.values())

    def _partitions(self, timeout_s: float) -> set[int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(self.topic)
            if parts:
                return parts
            time.sleep(0.1)
        raise StreamError(f"topic {self.topic} has no partitions after {timeout_s:.0f}s; create it first")

    # -- prefetch thread -------------------------------------------------------------
    def _loop(self) -> None:
        try:
            _fill(self.consumer, self.cfg, self._stop,
                  lambda records: _put_until_stopped(self._queue, self._decode(records),
                                                     self._stop))
        except BaseException as exc:  # surfaced to the trainer by next_batch
            self._error = exc
            log.exception("prefetch thread failed topic=%s", self.topic)

    def _decode(self, records: list) -> Batch:
        batch = decode_records(records, self.codec, self.builder, self.dead, self.topic,
                               self.reader)
        self.records += len(records)
        return batch

    def _get(self, timeout_s: float) -> Batch:
        """The next batch (raises queue.Empty)."""
        item = self._queue.get(timeout=timeout_s)
        if self.prefetch == "thread":
            return item
        if item[0] == "error":
            self._error = StreamError(item[1])
            raise queue.Empty
        _, worker, batch, records, dead = item
        self._worker_counts[worker] = (records, dead)
        self.records = sum(r for r, _ in self._worker_counts.values())
        return batch

    # -- the BatchSource interface ---------------------------------------------------
    def next_batch(self, timeout_s: float = 1.0) -> Batch | None:
        try:
            batch = self._get(timeout_s)
        except queue.Empty:
            if self._error is not None:
                raise StreamError(f"reading {self.topic} failed: {self._error}") from self._error
            self._check_idle()
            return None
        self.positions.update(batch.positions)
        if len(batch):
            self._idle_since, self._idle_warned = time.monotonic(), False
        else:  # every record went to the dead-letter topic: still no samples
            self._check_idle()
        return batch

    def _check_idle(self) -> None:
        idle = time.monotonic() - self._idle_since
        if self._idle_warned or not self.cfg.idle_warn_s or idle < self.cfg.idle_warn_s:
            return
        self._idle_warned = True
        hint = (" (read_committed: an exactly_once joiner's samples appear only once its checkpoint "
                "commits them)" if self.cfg.isolation_level == "read_committed" else "")
        try:
            count, reasons = dead_letter_summary(self.kafka, self.dead_topic)
        except Exception as exc:  # a diagnostic must not stop the trainer
            log.warning("no samples in %s for %.0f s at positions %s%s; the dead-letter topic %s "
                        "could not be read: %s", self.topic, idle, self.positions or "beginning",
                        hint, self.dead_topic, exc)
            return
        if count == 0:
            log.warning("no samples in %s for %.0f s at positions %s%s; the dead-letter topic %s is "
                        "empty — is the joiner running (`streamtrain join`) and writing to this topic?",
                        self.topic, idle, self.positions or "beginning", hint, self.dead_topic)
            return
        newest = ", ".join(f"{stage}: {reason} x{n}" for (stage, reason), n in reasons.most_common())
        log.warning("no samples in %s for %.0f s at positions %s%s; dead-letter topic %s has %d "
                    "records (newest %d, stage: reason: %s) — an upstream stage is rejecting its "
                    "input; the reasons name the producer or setting to fix", self.topic, idle,
                    self.positions or "beginning", hint, self.dead_topic, count,
                    sum(reasons.values()), newest)

    def close(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout=15)
            if self.prefetch == "process" and w.is_alive():
                log.warning("prefetch process %s did not stop in 15 s; terminating it", w.name)
                w.terminate()
                w.join(timeout=5)
        if self.prefetch == "process":
            self._queue.close()
        try:
            self.dead.close(timeout_s=10)
        finally:
            if self.prefetch == "thread":
                self.consumer.close()


def dead_letter_summary(kafka: KafkaConfig, topic: str, newest: int = 50,
                        timeout_s: float = 5.0) -> tuple[int, Counter[tuple[str, str]]]:
    """(records in the dead-letter ``topic`` now, (stage, reason) counts of up to ``newest``
    of the newest ones per partition). A short-lived consumer of its own (the trainer's is
    owned by the prefetch thread)."""
    from kafka import TopicPartition

    consumer = make_consumer(kafka, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return 0, Counter()
        begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        count = sum(end[tp] - begin[tp] for tp in tps)
        reasons: Counter[tuple[str, str]] = Counter()
        want = {tp: max(begin[tp], end[tp] - newest) for tp in tps if end[tp] > begin[tp]}
        if not want:
            return count, reasons
        consumer.assign(list(want))
        for tp, offset in want.items():
            consumer.seek(tp, offset)
        codec = codec_for(DeadLetter)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in want):
            for recs in consumer.poll(timeout_ms=200).values():
                for r in recs:
                    try:
                        dl = codec.decode(r.value)
                    except Exception:
                        reasons[("?", "undecodable dead letter")] += 1
                        continue
                    reasons[(dl.stage, dl.reason.split(":")[0])] += 1
        return count, reasons
    finally:
        consumer.close()
