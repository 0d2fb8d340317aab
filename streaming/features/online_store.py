"""The online feature store: FeatureUpdates from the ``features`` topic in rocksdict, with
as-of lookups, so serving reads the values the feature job computed with the same spec.

Every update is kept as a version ``(entity type, entity id, event time)``; ``get`` returns
the newest version at or before ``as_of_ms`` (the latest when omitted). Versions older than
``history_ms`` behind an entity's newest are dropped as newer ones arrive, so the store holds
one entity's recent history, not all of it. The job publishes an entity's values as of each
of its impressions (only events strictly before it count), so ``get(e, names, as_of_ms=t)``
for an impression's own time returns exactly what was attached to it.

    store = OnlineStore("/tmp/features-db")
    store.consume(kafka, "features")                   # until the topic end (or forever)
    store.get(("user", 42), ["user_imp_1h", "user_ctr_1h"])                 # [3.0, 0.04]
    store.get(("item", 7), ["item_buy_5m"], as_of_ms=1_511_660_000_000)    # as of that time
    store.last_items(("user", 42))                                          # [7, 3]
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from schemas import FeatureUpdate, codec_for
from schemas.errors import DecodeError
from streaming.event_time import END_OF_TIME

log = logging.getLogger(__name__)
ENTITY_CODES = {"user": b"u", "item": b"i"}
_KEY = struct.Struct(">cQQ")  # entity code, entity id, event time (sorts by time per entity)


class OnlineStore:
    def __init__(self, path: str | Path, history_ms: int = 2 * 86_400_000):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.history_ms = history_ms
        self._db = Rdict(str(self.path), Options(raw_mode=True))
        self._codec = codec_for(FeatureUpdate)
        self.applied = 0
        self.rejected = 0

    # ---- writes --------------------------------------------------------------------------

    def update(self, fu: FeatureUpdate) -> None:
        self.update_many([fu])

    def update_many(self, updates: list[FeatureUpdate]) -> None:
        batch = WriteBatch(raw_mode=True)
        for fu in updates:
            code = ENTITY_CODES.get(fu.entity_type)
            if code is None:
                self.rejected += 1
                log.warning("online store: unknown entity_type=%s", fu.entity_type)
                continue
            batch.put(_KEY.pack(code, fu.entity_id, fu.event_time_ms), self._codec.encode(fu))
            if self.history_ms:
                batch.delete_range(_KEY.pack(code, fu.entity_id, 0),
                                   _KEY.pack(code, fu.entity_id, max(0, fu.event_time_ms - self.history_ms)))
            self.applied += 1
        self._db.write(batch)

    def consume(self, kafka, topic: str, until_end: bool = True, timeout_s: float = 60.0,
                group_id: str | None = None) -> int:
        """Apply the topic's FeatureUpdates from the beginning (or the group's committed
        offsets, the beginning where it has none) until its end offsets (``until_end``, at
        most ``timeout_s``) or forever; returns how many were applied."""
        from kafka import TopicPartition

        from streamtrain.kafka_io import assign, drain, make_consumer, topic_partitions

        consumer = make_consumer(kafka, group_id=group_id)
        start = self.applied
        try:
            parts = topic_partitions(kafka, topic)
            committed = None
            if group_id is not None:
                offsets = {p: consumer.committed(TopicPartition(topic, p)) for p in parts}
                committed = {p: o for p, o in offsets.items() if o is not None}
            tps = assign(consumer, kafka, topic, start=committed, partitions=parts)
            for records in drain(consumer, tps, timeout_s if until_end else math.inf,
                                 until_end=until_end):
                ups = []
                for r in records:
                    try:
                        ups.append(self._codec.decode(r.value))
                    except DecodeError as exc:
                        self.rejected += 1
                        log.warning("online store: undecodable update topic=%s partition=%d "
                                    "offset=%d reason=%s", topic, r.partition, r.offset, exc)
                self.update_many(ups)
        finally:
            consumer.close()
        return self.applied - start

    # ---- reads ---------------------------------------------------------------------------

    def lookup(self, entity: tuple[str, int], as_of_ms: int | None = None) -> FeatureUpdate | None:
        """The newest update of ``entity`` at or before ``as_of_ms`` (None: none stored)."""
        etype, eid = entity
        code = ENTITY_CODES[etype]
        it = self._db.iter()
        if as_of_ms is not None and as_of_ms < 0:
            return None
        it.seek_for_prev(_KEY.pack(code, eid, END_OF_TIME if as_of_ms is None else as_of_ms))
        if not it.valid():
            return None
        key = it.key()
        if key[:9] != _KEY.pack(code, eid, 0)[:9]:
            return None
        return self._codec.decode(it.value())

    def get(self, entity: tuple[str, int], names: list[str],
            as_of_ms: int | None = None) -> list[float | None]:
        """Values of ``names`` for ``entity`` as of ``as_of_ms``; None for an unknown name or
        an entity with no update at or before that time."""
        fu = self.lookup(entity, as_of_ms)
        if fu is None:
            return [None] * len(names)
        by_name = dict(zip(fu.names, fu.values))
        return [by_name.get(n) for n in names]

    def last_items(self, entity: tuple[str, int], as_of_ms: int | None = None) -> list[int]:
        fu = self.lookup(entity, as_of_ms)
        return list(fu.last_items) if fu is not None else []

    def close(self) -> None:
        self._db.close()
