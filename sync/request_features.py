"""Request-time features of the serving replica: an instance that names its user and item
gets the realtime values the feature job would attach to an impression of that pair at
request time, from the job's own code (``streaming.features.history_store``).

The rule (``needs_completion``): an instance with ``user_id`` and ``item_id`` and exactly the
model's base dense width (``model.dense_dim - spec.dense_width()``) is completed: the user's
then the item's values appended to ``dense``, the user's last-N items added as ids in
``spec.last_n_slot`` (so it must not carry that slot itself). One that already carries the
model's full dense width is scored as sent (an old caller that does its own features), and
so is one without ``user_id``/``item_id``. Anything else is a 400 that says which widths are
accepted: one of the two ids alone, another dense width, the last-N slot sent with the base
width.

>>> needs_completion({"user_id": 7, "item_id": 3, "slots": [0], "ids": [5], "dense": [0.1]},
...                  dense_dim=31, realtime_width=30, last_n_slot=100)
True
>>> needs_completion({"slots": [0], "ids": [5], "dense": [0.0] * 31}, 31, 30, 100)
False

A thread tails the job's outputs (``topics.impressions_enriched``, ``topics.actions_deduped``)
into the store under the replica's store dir: a fresh store starts ``serve.features_start``
(``window``: the largest window before now, by the records' event-time timestamps;
``earliest``), a reopened one where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from schemas import Action, Impression, codec_for
from schemas.errors import DecodeError
from streaming.features.history_store import HistoryStore
from streaming.features.spec import FeatureSpec
from streamtrain.clock import now_ms
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, make_consumer, topic_partitions
from sync.api import RequestError, entity_id
from sync.config import ReplicaConfig

log = logging.getLogger(__name__)
LAG_EVERY_S = 0.5


def needs_completion(inst: dict[str, Any], dense_dim: int, realtime_width: int, last_n_slot: int) -> bool:
    """Whether the replica completes ``inst`` (the module's rule); RequestError (400) when
    it can neither complete it nor score it as sent."""
    has_user, has_item = "user_id" in inst, "item_id" in inst
    if not has_user and not has_item:
        return False
    if has_user != has_item:
        raise RequestError("user_id and item_id go together (request-time features need both)")
    entity_id(inst["user_id"], "user_id")
    entity_id(inst["item_id"], "item_id")
    width, base = len(inst.get("dense", [])), dense_dim - realtime_width
    if width == dense_dim:
        return False
    if base < 0 or width != base:
        accepted = f"{base} (base: the replica adds {realtime_width} realtime values) or " if base >= 0 else ""
        raise RequestError(f"dense has {width} values; with user_id/item_id this model takes "
                           f"{accepted}{dense_dim} (all features sent)")
    if last_n_slot in inst.get("slots", []):
        raise RequestError(f"slot {last_n_slot} (features.last_n_slot) is filled by the replica "
                           "from the user's history; do not send it with the base features")
    return True


class RequestFeatures:
    """The history store, the thread that tails the job's outputs into it, and the counters."""

    def __init__(self, spec: FeatureSpec, config: ReplicaConfig, kafka: KafkaConfig,
                 topics: TopicsConfig, path: str | Path) -> None:
        self.spec, self.config, self.kafka = spec, config, kafka
        self.width = spec.dense_width()
        self.store = HistoryStore(path, spec)
        self.codecs = {topics.impressions_enriched: codec_for(Impression),
                       topics.actions_deduped: codec_for(Action)}
        self.lookups = self.misses = self.completed = 0
        self.rejected = self.errors = 0
        self.lag_records = -1  # -1 until measured
        self._lock = threading.Lock()  # the counters (request threads)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- serving ------------------------------------------------------------------------

    def complete(self, inst: dict[str, Any], as_of_ms: int, dense_dim: int) -> dict[str, Any]:
        """``inst`` completed as of ``as_of_ms`` (a new dict), or ``inst`` itself when the rule
        leaves it as sent."""
        if not needs_completion(inst, dense_dim, self.width, self.spec.last_n_slot):
            return inst
        dense, slots, ids, missed = self.store.complete(
            inst["user_id"], inst["item_id"], as_of_ms, [float(x) for x in inst.get("dense", [])],
            list(inst["slots"]), list(inst["ids"]))
        with self._lock:
            self.lookups += 2
            self.misses += missed
            self.completed += 1
        return inst | {"dense": dense, "slots": slots, "ids": ids}

    def stats(self) -> dict[str, Any]:
        newest = self.store.newest_ms
        return {"features_lag_records": self.lag_records,
                "features_newest_age_ms": now_ms() - newest if newest else None,
                "feature_lookups": self.lookups, "feature_misses": self.misses,
                "feature_completions": self.completed, "feature_events_applied": self.store.applied,
                "feature_duplicates": self.store.duplicates, "feature_rejected": self.rejected,
                "feature_errors": self.errors}

    # ---- the tailing thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="replica-features", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        consumer, last_lag = None, 0.0
        tps: list = []
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer, tps = self._open()
                    last_lag = 0.0
                self._apply(consumer.poll(timeout_ms=self.config.poll_interval_ms,
                                          max_records=self.config.max_poll_records))
                if time.monotonic() - last_lag >= LAG_EVERY_S:
                    ends = consumer.end_offsets(tps)
                    self.lag_records = sum(max(0, ends[tp] - consumer.position(tp)) for tp in tps)
                    last_lag = time.monotonic()
            except Exception:  # keep answering with what the store holds; /ready shows the lag
                self.errors += 1
                log.exception("request features: tailing failed; reopening")
                if consumer is not None:
                    consumer.close()
                consumer = None
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()

    def _open(self) -> tuple[Any, list]:
        from kafka import TopicPartition

        consumer = make_consumer(self.kafka, group_id=None)
        tps = [TopicPartition(t, p) for t in self.codecs for p in topic_partitions(self.kafka, t)]
        consumer.assign(tps)
        stored = {t: self.store.offsets(t) for t in self.codecs}
        fresh = [tp for tp in tps if tp.partition not in stored[tp.topic]]
        for tp in tps:
            if tp not in fresh:
                consumer.seek(tp, stored[tp.topic][tp.partition])
        if fresh and self.config.features_start == "earliest":
            consumer.seek_to_beginning(*fresh)
        elif fresh:  # the largest window before now: nothing older counts at request time
            since = now_ms() - self.spec.max_window_ms
            found = consumer.offsets_for_times({tp: since for tp in fresh})
            for tp in fresh:
                if found.get(tp) is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found[tp].offset)
        log.info("request features: tailing %s from %s", sorted(self.codecs),
                 {f"{tp.topic}/{tp.partition}": consumer.position(tp) for tp in tps})
        return consumer, tps

    def _apply(self, polled: dict) -> None:
        records: list[Impression | Action] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp, recs in polled.items():
            codec = self.codecs[tp.topic]
            for r in recs:
                try:
                    records.append(codec.decode(r.value))
                except DecodeError as exc:  # the job writes only valid records: say so loudly
                    self.rejected += 1
                    log.warning("request features: undecodable record topic=%s partition=%d "
                                "offset=%d reason=%s", r.topic, r.partition, r.offset, exc)
            if recs:
                offsets[(tp.topic, tp.partition)] = recs[-1].offset + 1
        if offsets:
            self.store.update_many(records, offsets)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.close()
