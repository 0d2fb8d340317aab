"""Both steps of the feature job over an in-memory stream, without Flink: the same
FeatureStep/EntityState code the job runs, with the job's watermark rule (bounded
out-of-orderness: watermark = max event time seen - out_of_orderness - 1) and event-time
timers. Tests check the logic with it; the benchmark measures the core's speed and memory.

    pipe = FeaturePipeline(FeatureSpec(), out_of_orderness_ms=5000)
    for topic, raw in arrivals:          # "impressions" | "actions", Avro bytes
        pipe.update(topic, raw, now_ms)
    pipe.finish()                        # end of input: the watermark goes to +inf
    pipe.enriched, pipe.actions, pipe.features, pipe.dead_letters
"""

from __future__ import annotations

import heapq

from schemas import Action, DeadLetter, FeatureUpdate, Impression
from schemas.validation import ValidationLimits
from streaming.event_time import END_OF_TIME
from streaming.features.entity_state import EntityState
from streaming.features.feature_step import FeatureStep
from streaming.features.spec import FeatureSpec
from streaming.record_gate import RecordGate


class _KeyedStep:
    """One FeatureStep with a dict of states and a heap of event-time timers."""

    def __init__(self, step: FeatureStep):
        self.step = step
        self.states: dict[int, EntityState] = {}
        self.timers: list[tuple[int, int]] = []

    def update(self, rec: Impression | Action, watermark_ms: int) -> list:
        key = self.step.entity_of(rec)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = self.step.new_state()
        if isinstance(rec, Impression):
            out = self.step.on_impression(state, rec, watermark_ms)
        else:
            out = self.step.on_action(state, rec, watermark_ms)
        at = self.step.next_timer_ms(state)
        if at is not None:
            heapq.heappush(self.timers, (at, key))
        return out

    def advance(self, watermark_ms: int) -> list:
        out: list = []
        while self.timers and self.timers[0][0] <= watermark_ms:
            _, key = heapq.heappop(self.timers)
            state = self.states.get(key)
            if state is None or not state.pending or state.pending[0][0] > watermark_ms:
                continue  # a stale timer (already served)
            out += self.step.on_watermark(state, watermark_ms)
            at = self.step.next_timer_ms(state)
            if at is not None:
                heapq.heappush(self.timers, (at, key))
            elif state.empty():
                del self.states[key]
        return out


class FeaturePipeline:
    def __init__(self, spec: FeatureSpec, out_of_orderness_ms: int = 5000,
                 limits: ValidationLimits | None = None):
        self.spec = spec
        self.ooo = out_of_orderness_ms
        limits = limits or ValidationLimits(action_types=spec.action_types)
        self.gates: dict[str, RecordGate[Impression] | RecordGate[Action]] = {
            "impressions": RecordGate(Impression, "features", "impressions", limits),
            "actions": RecordGate(Action, "features", "actions", limits)}
        self.user = _KeyedStep(FeatureStep(spec, "user"))
        self.item = _KeyedStep(FeatureStep(spec, "item"))
        self.watermark = -END_OF_TIME
        self.max_seen = -END_OF_TIME
        self.enriched: list[Impression] = []
        self.actions: list[Action] = []
        self.features: list[FeatureUpdate] = []
        self.dead_letters: list[DeadLetter] = []

    def update(self, topic: str, raw: bytes, now_ms: int) -> None:
        rec = self.gates[topic].update(raw, now_ms)
        if isinstance(rec, DeadLetter):
            self.dead_letters.append(rec)
            return
        self._item_outputs(self._user_outputs(self.user.update(rec, self.watermark)))
        self.max_seen = max(self.max_seen, rec.event_time_ms)
        wm = self.max_seen - self.ooo - 1
        if wm > self.watermark:
            self._advance(wm)

    def finish(self) -> None:
        self._advance(END_OF_TIME)

    def _advance(self, watermark_ms: int) -> None:
        self.watermark = watermark_ms
        self._item_outputs(self._user_outputs(self.user.advance(watermark_ms)))
        self._item_outputs(self.item.advance(watermark_ms))

    def _user_outputs(self, outs: list) -> list:
        """Feature updates are published; impressions and actions go on to the item step."""
        down: list = []
        for o in outs:
            if isinstance(o, FeatureUpdate):
                self.features.append(o)
            else:
                down += self.item.update(o, self.watermark)
        return down

    def _item_outputs(self, outs: list) -> None:
        for o in outs:
            if isinstance(o, FeatureUpdate):
                self.features.append(o)
            elif isinstance(o, Impression):
                self.enriched.append(o)
            else:
                self.actions.append(o)

    def state_entities(self) -> int:
        return len(self.user.states) + len(self.item.states)
