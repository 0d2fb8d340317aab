"""One keyed step of the feature job, engine-free: the Flink function of that step keeps one
EntityState per key and calls this; the in-memory pipeline does the same with a dict.

Step ``user`` (keyed by user id) drops duplicates, updates the user's history and attaches the
user features; step ``item`` (keyed by item id) updates the item's history and attaches the
item features. In both, an impression waits in the entity's ``pending`` list until the
watermark reaches its event time, so every event strictly before it has arrived (up to the
watermark's out-of-orderness bound); then its values as of its own time are attached and
published as a FeatureUpdate. Actions update the history at once and wait in ``pending`` too,
so both outputs leave in event-time order (the joiner's watermarks read that order).

    step = FeatureStep(spec, "user")
    state = step.new_state()
    out = step.on_impression(state, imp, watermark_ms)   # [] until the watermark reaches it
    out = step.on_watermark(state, watermark_ms)          # [Impression, FeatureUpdate, ...]

What a step does to one record is in three functions that serving shares (request-time
features, ``streaming.features.history_store``): ``remember`` (dedup + history update),
``as_of`` (values and last-N as of a time) and ``attach`` (append them to dense/slots/ids).
"""

from __future__ import annotations

from bisect import insort
from collections import Counter

from schemas import Action, FeatureUpdate, Impression
from schemas.feature_ids import feature_id
from streaming.features.entity_state import EntityState
from streaming.features.spec import ENTITIES, IMPRESSION, Entity, FeatureSpec
from streamtrain.config import check

Output = Impression | Action | FeatureUpdate


class FeatureStep:
    def __init__(self, spec: FeatureSpec, entity: Entity):
        check(entity in ENTITIES, "entity", entity, f"one of {ENTITIES}")
        self.spec, self.entity = spec, entity
        self.names = spec.names(entity)
        self.is_user = entity == "user"
        self.acted_types = spec.acted_types
        self.counters: Counter[str] = Counter()

    def new_state(self) -> EntityState:
        return EntityState(self.spec.dedup_ttl_ms if self.is_user else None)

    def entity_of(self, rec: Impression | Action) -> int:
        return rec.user_id if self.is_user else rec.item_id

    def on_impression(self, state: EntityState, imp: Impression, watermark_ms: int) -> list[Output]:
        t = imp.event_time_ms
        if not remember(self.spec, self.entity, state, imp, watermark_ms):
            self.counters["duplicate_impressions"] += 1
            return []
        self.counters["impressions"] += 1
        insort(state.pending, (t, imp), key=_time)  # after equal times: arrival order kept
        if t <= watermark_ms:  # late (behind the watermark): nothing more can be waited for
            self.counters["late_impressions"] += 1
            return self.on_watermark(state, t)  # later pending ones wait for their timers: time order
        return []

    def on_action(self, state: EntityState, act: Action, watermark_ms: int) -> list[Output]:
        if not remember(self.spec, self.entity, state, act, watermark_ms):
            self.counters["duplicate_actions"] += 1
            return []
        self.counters["actions"] += 1
        t = act.event_time_ms
        # the history takes it at once; the action itself leaves in event-time order with
        # the impressions (the joiner's watermark reads the output topics' order)
        insort(state.pending, (t, act), key=_time)
        if t <= watermark_ms:
            return self.on_watermark(state, t)
        return []

    def on_ordered(self, state: EntityState, rec: Impression | Action) -> list[Output]:
        """One record of an input that arrives in event-time order, every earlier event of
        the entity already taken (the job sorts each key's records in the JVM,
        ``streamtrain.flink.EventTimeSort``): what ``on_impression``/``on_action`` and the
        watermark reaching the record's time give, at once and without ``pending``."""
        t = rec.event_time_ms
        if not remember(self.spec, self.entity, state, rec, t):
            self.counters["duplicate_impressions" if isinstance(rec, Impression)
                          else "duplicate_actions"] += 1
            return []
        out: list[Output]
        if isinstance(rec, Impression):
            self.counters["impressions"] += 1
            self.counters["enriched"] += 1
            out = [rec, self._enrich(state, rec)]
        else:
            self.counters["actions"] += 1
            out = [rec]
        state.prune(self.spec, t)
        return out

    def on_ordered_impression_at(self, state: EntityState, entity_id: int,
                                 t_ms: int) -> tuple[list[float], FeatureUpdate]:
        """``on_ordered`` for an impression at ``t_ms`` in a step without dedup or last-N
        (the item step), from its time alone: the values to append to its dense features
        and its FeatureUpdate (the job splices them into the impression's bytes)."""
        check(state.dedup is None and not self.is_user, "entity", self.entity,
              "a step without dedup or last-N (item)")
        state.add(IMPRESSION, t_ms)
        self.counters["impressions"] += 1
        self.counters["enriched"] += 1
        values, last = as_of(self.spec, self.entity, state, t_ms)
        state.prune(self.spec, t_ms)
        return (self.spec.attach_values(self.entity, values),
                FeatureUpdate(self.entity, entity_id, t_ms, self.names, values, last))

    def on_watermark(self, state: EntityState, watermark_ms: int) -> list[Output]:
        """Enrich the pending impressions at or before the watermark, then prune."""
        out: list[Output] = []
        spec = self.spec
        n = 0
        enriched = 0
        while n < len(state.pending) and state.pending[n][0] <= watermark_ms:
            t, imp = state.pending[n]
            n += 1
            if isinstance(imp, Action):
                out.append(imp)
                continue
            enriched += 1
            out.append(imp)
            out.append(self._enrich(state, imp))
        if n:
            del state.pending[:n]
            self.counters["enriched"] += enriched
        state.prune(spec, watermark_ms)
        return out

    def _enrich(self, state: EntityState, imp: Impression) -> FeatureUpdate:
        """Attach the entity's values and last-N as of the impression's time to it; its
        FeatureUpdate."""
        t = imp.event_time_ms
        values, last = as_of(self.spec, self.entity, state, t)
        imp.dense, imp.slots, imp.ids = attach(self.spec, self.entity, values, last,
                                               imp.dense, imp.slots, imp.ids)
        return FeatureUpdate(self.entity, self.entity_of(imp), t, self.names, values, last)

    def next_timer_ms(self, state: EntityState) -> int | None:
        """When the watermark must next wake this entity: its oldest pending record."""
        return state.pending[0][0] if state.pending else None

    def cleanup_ms(self, state: EntityState) -> int:
        """A watermark at which the entity's history will have aged out (state can go)."""
        return state.newest_ms() + max(self.spec.max_window_ms, self.spec.dedup_ttl_ms) + 1


def remember(spec: FeatureSpec, entity: Entity, state: EntityState, rec: Impression | Action,
             watermark_ms: int) -> bool:
    """Take one impression or action into ``entity``'s history, as the job does on arrival;
    False when the state dedups (user states) and already kept its key: a duplicate. The
    serving side (``history_store``) rebuilds the job's histories with it."""
    if isinstance(rec, Impression):
        key: tuple = (rec.request_id, rec.item_id)
        event, item = IMPRESSION, None
    else:
        key = (rec.request_id, rec.item_id, rec.action_type)
        event = rec.action_type
        item = rec.item_id if entity == "user" and rec.action_type in spec.acted_types else None
    if state.dedup is not None and not state.dedup.update(key, rec.event_time_ms, watermark_ms):
        return False
    state.add(event, rec.event_time_ms, item)
    return True


def as_of(spec: FeatureSpec, entity: Entity, state: EntityState, t_ms: int) -> tuple[list[float], list[int]]:
    """(raw values of ``spec.names(entity)``, last-N items) as of ``t_ms``: events < t_ms
    only, windows aged to ``t_ms``. An empty state gives what a new entity gets."""
    last = state.last_items(spec, t_ms) if entity == "user" else []
    return state.values(spec, entity, t_ms), last


def attach(spec: FeatureSpec, entity: Entity, values: list[float], last: list[int], dense: list[float],
           slots: list[int], ids: list[int]) -> tuple[list[float], list[int], list[int]]:
    """(dense, slots, ids) with ``entity``'s values appended to dense and its last-N items
    added as ids in ``spec.last_n_slot``: how an impression (or a serving request) is completed.

    >>> spec = FeatureSpec(windows_ms=(60_000,), action_types=("click",), last_n_slot=9)
    >>> dense, slots, ids = attach(spec, "user", [0.0, 0.0, 0.05], [7], [1.5], [0], [11])
    >>> dense, slots, ids == [11, feature_id(9, 7)]
    ([1.5, 0.0, 0.0, 0.05], [0, 9], True)
    """
    dense = list(dense) + spec.attach_values(entity, values)
    if last:
        slots = list(slots) + [spec.last_n_slot] * len(last)
        ids = list(ids) + [feature_id(spec.last_n_slot, i) for i in last]
    return dense, slots, ids


def _time(entry: tuple[int, Impression]) -> int:
    return entry[0]
