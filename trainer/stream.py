"""Streaming input: the ``samples`` topic -> typed batches, decoded on a prefetch thread.

The consumer is *assigned* every partition of the topic (no consumer-group rebalancing:
the trainer owns its input) and seeks to the positions of the checkpoint it restored, or to
the beginning. A background thread polls, decodes records in bulk into ``Batch``es of
``batch_size`` (or fewer after ``max_wait_ms`` without a full one) and queues up to
``prefetch_batches`` of them, so decoding overlaps training. Each batch carries the
positions (partition -> next offset) once it is consumed, including records that went to
the dead-letter topic, which is what a checkpoint stores.

Bad records (undecodable bytes, or a sample the model cannot use) go to the dead-letter
topic with the reason and a counter; they never stop the trainer. Dead letters are
at-least-once: a restart re-reads records after the checkpoint and may send one again.

    source = KafkaSampleSource(kafka, topics, model_cfg, trainer_cfg, start=trainer.positions)
    batch = source.next_batch(timeout_s=1.0)      # None when nothing came in time
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from schemas import DeadLetter, Sample, codec_for
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, make_consumer, make_producer
from trainer.batch import Batch, BatchBuilder
from trainer.config import ModelConfig, TrainerConfig
from trainer.errors import StreamError

log = logging.getLogger(__name__)
STAGE = "trainer"


class KafkaSampleSource:
    exhausted = False  # a stream never ends; the trainer stops on its own bounds

    def __init__(self, kafka: KafkaConfig, topics: TopicsConfig, model: ModelConfig,
                 cfg: TrainerConfig, start: dict[int, int] | None = None, metadata_timeout_s: float = 30.0):
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        self.topic, self.dead_topic, self.cfg = topics.samples, topics.dead_letter, cfg
        self.builder = BatchBuilder(model)
        self.codec = codec_for(Sample)
        self.dead_codec = codec_for(DeadLetter)
        self.dead_letters = 0
        self.records = 0
        try:
            self.consumer = make_consumer(kafka, group_id=None, max_poll_records=max(cfg.batch_size, 500))
            parts = self._partitions(metadata_timeout_s)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            self.consumer.assign(tps)
            for tp in tps:
                if start and tp.partition in start:
                    self.consumer.seek(tp, start[tp.partition])
                else:
                    self.consumer.seek_to_beginning(tp)
            self.producer = make_producer(kafka)
        except KafkaError as exc:
            raise StreamError(f"cannot consume {self.topic} from {kafka.bootstrap}: {exc}; is the "
                              "broker up and the topic created (`streamtrain topics create`)?") from exc
        log.info("consuming topic=%s partitions=%s start=%s", self.topic, sorted(parts), start or "beginning")
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=cfg.prefetch_batches)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="sample-prefetch", daemon=True)
        self._thread.start()

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
        pending: list = []
        first_at = 0.0
        try:
            while not self._stop.is_set():
                want = self.cfg.batch_size - len(pending)
                polled = self.consumer.poll(timeout_ms=50, max_records=want)
                for recs in polled.values():
                    if recs and not pending:
                        first_at = time.monotonic()
                    pending.extend(recs)
                waited = (time.monotonic() - first_at) * 1000 if pending else 0.0
                if pending and (len(pending) >= self.cfg.batch_size or waited >= self.cfg.max_wait_ms):
                    batch, pending = self._decode(pending), []
                    while not self._stop.is_set():
                        try:
                            self._queue.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except BaseException as exc:  # surfaced to the trainer by next_batch
            self._error = exc
            log.exception("prefetch thread failed topic=%s", self.topic)

    def _decode(self, records: list) -> Batch:
        samples: list[Sample] = []
        positions: dict[int, int] = {}
        now_ms = int(time.time() * 1000)
        for r in records:
            positions[r.partition] = max(positions.get(r.partition, 0), r.offset + 1)
            rec = self.codec.decode_or_dead_letter(r.value, stage=STAGE, topic=self.topic, now_ms=now_ms,
                                                   partition=r.partition, offset=r.offset)
            if not isinstance(rec, DeadLetter):
                problem = self.builder.problem(rec)
                if problem is None:
                    samples.append(rec)
                    continue
                rec = DeadLetter(stage=STAGE, source_topic=self.topic, reason=f"invalid sample: {problem}",
                                 time_ms=now_ms, raw=bytes(r.value), partition=r.partition, offset=r.offset)
            self._dead_letter(rec)
        self.records += len(records)
        return self.builder.build(samples, positions)

    def _dead_letter(self, dl: DeadLetter) -> None:
        self.dead_letters += 1
        self.producer.send(self.dead_topic, self.dead_codec.encode(dl))
        log.warning("dead letter topic=%s partition=%d offset=%d reason=%s",
                    dl.source_topic, dl.partition, dl.offset, dl.reason)

    # -- the BatchSource interface ---------------------------------------------------
    def next_batch(self, timeout_s: float = 1.0) -> Batch | None:
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            if self._error is not None:
                raise StreamError(f"reading {self.topic} failed: {self._error}") from self._error
            return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.producer.flush(timeout=10)
            self.producer.close(timeout=10)
        finally:
            self.consumer.close()
