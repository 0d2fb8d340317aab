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
        if state.dedup is not None and not state.dedup.update((imp.request_id, imp.item_id), t, watermark_ms):
            self.counters["duplicate_impressions"] += 1
            return []
        self.counters["impressions"] += 1
        state.add(IMPRESSION, t)
        insort(state.pending, (t, imp), key=_time)  # after equal times: arrival order kept
        if t <= watermark_ms:  # late (behind the watermark): nothing more can be waited for
            self.counters["late_impressions"] += 1
            return self.on_watermark(state, t)  # later pending ones wait for their timers: time order
        return []

    def on_action(self, state: EntityState, act: Action, watermark_ms: int) -> list[Output]:
        key = (act.request_id, act.item_id, act.action_type)
        if state.dedup is not None and not state.dedup.update(key, act.event_time_ms, watermark_ms):
            self.counters["duplicate_actions"] += 1
            return []
        self.counters["actions"] += 1
        t = act.event_time_ms
        item = act.item_id if self.is_user and act.action_type in self.acted_types else None
        state.add(act.action_type, t, item)
        # the history takes it at once; the action itself leaves in event-time order with
        # the impressions (the joiner's watermark reads the output topics' order)
        insort(state.pending, (t, act), key=_time)
        if t <= watermark_ms:
            return self.on_watermark(state, t)
        return []

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
            values = state.values(spec, self.entity, t)
            last = state.last_items(spec, t) if self.is_user else []
            imp.dense = list(imp.dense) + spec.attach_values(self.entity, values)
            if last:
                imp.slots = list(imp.slots) + [spec.last_n_slot] * len(last)
                imp.ids = list(imp.ids) + [feature_id(spec.last_n_slot, i) for i in last]
            out.append(imp)
            out.append(FeatureUpdate(self.entity, self.entity_of(imp), t, self.names, values, last))
        if n:
            del state.pending[:n]
            self.counters["enriched"] += enriched
        state.prune(spec, watermark_ms)
        return out

    def next_timer_ms(self, state: EntityState) -> int | None:
        """When the watermark must next wake this entity: its oldest pending record."""
        return state.pending[0][0] if state.pending else None

    def cleanup_ms(self, state: EntityState) -> int:
        """A watermark at which the entity's history will have aged out (state can go)."""
        return state.newest_ms() + max(self.spec.max_window_ms, self.spec.dedup_ttl_ms) + 1


def _time(entry: tuple[int, Impression]) -> int:
    return entry[0]
