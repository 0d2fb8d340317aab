"""Entity histories for request-time features: the feature job's per-user and per-item
``EntityState`` rebuilt from its outputs, in rocksdict, so serving computes any entity's
values as of any time ``t`` (request time) with the job's own code.

Why not the ``features`` topic: a ``FeatureUpdate`` is a snapshot of an entity's values as
of one of its impressions (events strictly before it). A request at a later ``t`` needs
more than the newest snapshot: the impression that made it, the actions since (actions
publish no update) and the windows aged to ``t`` (events leaving ``[t - w, t)``), none of
which a snapshot of counts can give. The job's deduplicated outputs (``impressions-enriched``,
``actions-deduped``) are exactly the events its histories are made of, so the store takes
them with the job's ``remember`` and answers with its ``as_of``/``attach``
(``streaming.features.feature_step``): for a request at ``t`` the values the job attaches to
an impression at ``t``, given the events the store has taken (all events before ``t`` once
the job's watermark passed ``t`` and the store caught up).

    store = HistoryStore(path, spec)
    store.update_many([imp, act, ...], {("impressions-enriched", 0): 124})   # + next offsets
    values, last, seen = store.as_of(("user", 42), t_ms)
    dense, slots, ids = store.complete(user_id, item_id, t_ms, dense, slots, ids)

Writes of one call (states and the next offsets of the records they came from) go in one
WriteBatch, so a restarted store resumes where it stopped and takes no event twice. Replayed
copies the job writes after a restore are dropped by the users' dedup (the job's
``remember``, TTL ``dedup_ttl_ms``, clock: the newest event time taken). Histories are pruned
to the largest window behind that clock when an entity is written; an entity that stops
receiving events keeps its last history (its windows age at read time; it is not deleted).
"""

from __future__ import annotations

import logging
import pickle
import struct
from collections.abc import Iterable
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from schemas import Action, Impression
from streaming.features.entity_state import EntityState
from streaming.features.feature_step import FeatureStep, attach, remember
from streaming.features.feature_step import as_of as values_as_of
from streaming.features.online_store import ENTITY_CODES
from streaming.features.spec import ENTITIES, Entity, FeatureSpec

log = logging.getLogger(__name__)
_STATE = b"s"  # + entity code + id (8 bytes big-endian) -> pickled EntityState
_OFFSET = b"o"  # + topic + \0 + partition (4 bytes) -> next offset (8 bytes)
_NEWEST = b"m:newest"  # newest event time taken (8 bytes)
_Q = struct.Struct(">Q")
_I = struct.Struct(">I")
EntityKey = tuple[Entity, int]


class HistoryStore:
    def __init__(self, path: str | Path, spec: FeatureSpec) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self._steps = {e: FeatureStep(spec, e) for e in ENTITIES}  # new_state: as the job makes them
        self._db = Rdict(str(self.path), Options(raw_mode=True))
        raw = self._db.get(_NEWEST)
        self.newest_ms = _Q.unpack(raw)[0] if raw is not None else 0
        self.applied = 0  # events taken
        self.duplicates = 0  # replayed copies dropped

    # ---- writes --------------------------------------------------------------------------

    def update_many(self, records: Iterable[Impression | Action],
                    offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Take the job's output records (any order); ``offsets``: (topic, partition) -> the
        next offset to read, written in the same batch."""
        spec = self.spec
        states: dict[EntityKey, EntityState] = {}

        def load(key: EntityKey) -> EntityState:
            st = states.get(key)
            if st is None:
                st = states[key] = self._load(key) or self._steps[key[0]].new_state()
            return st

        for rec in records:
            self.newest_ms = max(self.newest_ms, rec.event_time_ms)
            if not remember(spec, "user", load(("user", rec.user_id)), rec, self.newest_ms):
                self.duplicates += 1
                continue
            remember(spec, "item", load(("item", rec.item_id)), rec, self.newest_ms)
            self.applied += 1
        batch = WriteBatch(raw_mode=True)
        for key, st in states.items():
            st.prune(spec, self.newest_ms)
            batch.put(_state_key(key), pickle.dumps(st, protocol=5))  # EntityState's own pickling, as Flink's
        for (topic, partition), offset in (offsets or {}).items():
            batch.put(_offset_key(topic, partition), _Q.pack(offset))
        batch.put(_NEWEST, _Q.pack(self.newest_ms))
        self._db.write(batch)

    def offsets(self, topic: str) -> dict[int, int]:
        """partition -> next offset to read, as stored with the last write ({} when none)."""
        prefix = _OFFSET + topic.encode() + b"\x00"
        out = {}
        it = self._db.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix) and len(it.key()) == len(prefix) + 4:
            out[_I.unpack(it.key()[len(prefix):])[0]] = _Q.unpack(it.value())[0]
            it.next()
        return out

    # ---- reads ---------------------------------------------------------------------------

    def _load(self, key: EntityKey) -> EntityState | None:
        raw = self._db.get(_state_key(key))
        if raw is None:
            return None
        st = pickle.loads(raw)
        assert isinstance(st, EntityState)
        return st

    def as_of(self, entity: EntityKey, t_ms: int) -> tuple[list[float], list[int], bool]:
        """(raw values of ``spec.names(entity type)``, last-N items, seen) as of ``t_ms``;
        an entity never seen gets what the job gives a new one (zero counts, prior CTRs)."""
        st = self._load(entity)
        values, last = values_as_of(self.spec, entity[0], st or EntityState(), t_ms)
        return values, last, st is not None

    def complete(self, user_id: int, item_id: int, t_ms: int, dense: list[float], slots: list[int],
                 ids: list[int]) -> tuple[list[float], list[int], list[int], int]:
        """(dense, slots, ids, entities unseen) of an impression of ``user_id`` x ``item_id``
        at ``t_ms`` completed as the job completes one: user values, then item values,
        appended to ``dense``; the user's last-N items as ids in ``spec.last_n_slot``."""
        missed = 0
        pairs: tuple[EntityKey, ...] = (("user", user_id), ("item", item_id))
        for entity, eid in pairs:
            values, last, seen = self.as_of((entity, eid), t_ms)
            missed += not seen
            dense, slots, ids = attach(self.spec, entity, values, last, dense, slots, ids)
        return dense, slots, ids, missed

    def close(self) -> None:
        self._db.close()


def _state_key(key: EntityKey) -> bytes:
    return _STATE + ENTITY_CODES[key[0]] + _Q.pack(key[1])


def _offset_key(topic: str, partition: int) -> bytes:
    return _OFFSET + topic.encode() + b"\x00" + _I.pack(partition)
