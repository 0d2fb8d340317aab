"""The Flink side of the feature job: key selectors and the two keyed process functions that
run FeatureStep inside Flink tasks, one EntityState per key in a ValueState.

    impressions ─┐ key_by user   UserFeatureFunction   (kind, item, bytes)  key_by item
    actions ─────┴─────────────► gate, dedup, user  ─────────────────────► ItemFeatureFunction
                                 features; side: dead                       item features; main:
                                 letters, FeatureUpdates                    enriched impressions;
                                                                            side: actions, updates

Timers: an event-time timer at each pending impression's time (Flink fires it once the
watermark reaches it) and one at ``cleanup_ms`` that drops an entity whose history aged out.
"""

from __future__ import annotations

import logging
import time

from pyflink.common import Types
from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction, OutputTag
from pyflink.datastream.state import ValueStateDescriptor

from schemas import Action, DeadLetter, FeatureUpdate, Impression, codec_for
from schemas.peek import peek_ids
from schemas.validation import ValidationLimits
from streaming.features.feature_step import FeatureStep
from streaming.features.spec import FeatureSpec
from streaming.flink_env import bytes_type, dead_letter_tag
from streaming.record_gate import RecordGate

log = logging.getLogger(__name__)
KIND_IMPRESSION, KIND_ACTION = 0, 1
CLEANUP_TICK_MS = 60_000


def step_output_type():
    """(kind, item id, Avro bytes) between the user step and the item step."""
    return Types.TUPLE([Types.INT(), Types.LONG(), bytes_type()])


def features_tag() -> OutputTag:
    return OutputTag("feature-updates", bytes_type())


def actions_tag() -> OutputTag:
    return OutputTag("actions-deduped", bytes_type())


def user_key(raw) -> int:
    """user_id of an Impression/Action message without a full decode (both start with
    schema_version, request_id, user_id); 0 for unreadable bytes (the gate dead-letters them)."""
    try:
        return peek_ids(bytes(raw))[1]
    except IndexError:
        return 0


class _StepFunction:
    """What both keyed functions share: the entity state, timers, output encoding."""

    entity = ""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec

    def open(self, runtime_context) -> None:
        self.step = FeatureStep(self.spec, self.entity)
        self.state = runtime_context.get_state(
            ValueStateDescriptor(f"{self.entity}-features", Types.PICKLED_BYTE_ARRAY()))
        self.imp_codec, self.act_codec = codec_for(Impression), codec_for(Action)
        self.fu_codec = codec_for(FeatureUpdate)
        self.features_tag = features_tag()
        group = runtime_context.get_metrics_group().add_group("features").add_group(self.entity)
        for name in ("impressions", "actions", "duplicate_impressions", "duplicate_actions",
                     "late_impressions", "enriched"):
            group.gauge(name, lambda n=name: int(self.step.counters[n]))

    def close(self) -> None:
        if hasattr(self, "step"):
            log.info("features close entity=%s %s", self.entity,
                     " ".join(f"{k}={v}" for k, v in sorted(self.step.counters.items())))

    def _apply(self, rec, ctx):
        state = self.state.value() or self.step.new_state()
        wm = ctx.timer_service().current_watermark()
        if isinstance(rec, Impression):
            outs = self.step.on_impression(state, rec, wm)
        else:
            outs = self.step.on_action(state, rec, wm)
        self._save(state, ctx)
        return outs

    def on_timer(self, timestamp, ctx):
        state = self.state.value()
        if state is None:
            return
        wm = max(timestamp, ctx.timer_service().current_watermark())
        outs = self.step.on_watermark(state, wm)
        if state.empty():
            self.state.clear()
        else:
            self._save(state, ctx)
        yield from self._emit(outs)

    def _save(self, state, ctx) -> None:
        self.state.update(state)
        timers = ctx.timer_service()
        at = self.step.next_timer_ms(state)
        if at is not None:
            timers.register_event_time_timer(at)
        cleanup = self.step.cleanup_ms(state)
        timers.register_event_time_timer(-(-cleanup // CLEANUP_TICK_MS) * CLEANUP_TICK_MS)

    def _emit(self, outs):
        raise NotImplementedError


class UserFeatureFunction(_StepFunction, KeyedCoProcessFunction):
    """Input 1: impression bytes, input 2: action bytes, keyed by ``user_key``. Main output:
    (kind, item, bytes) for the item step; side outputs: dead letters, FeatureUpdates."""

    entity = "user"

    def __init__(self, spec: FeatureSpec, impressions_topic: str, actions_topic: str):
        super().__init__(spec)
        self.topics = (impressions_topic, actions_topic)

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        limits = ValidationLimits(action_types=self.spec.action_types)
        self.imp_gate = RecordGate(Impression, "features", self.topics[0], limits)
        self.act_gate = RecordGate(Action, "features", self.topics[1], limits)
        self.dl_codec, self.dl_tag = codec_for(DeadLetter), dead_letter_tag()

    def process_element1(self, value, ctx):
        yield from self._gated(self.imp_gate, value, ctx)

    def process_element2(self, value, ctx):
        yield from self._gated(self.act_gate, value, ctx)

    def _gated(self, gate: RecordGate, value, ctx):
        rec = gate.update(bytes(value), int(time.time() * 1000))
        if isinstance(rec, DeadLetter):
            yield self.dl_tag, self.dl_codec.encode(rec)
            return
        yield from self._emit(self._apply(rec, ctx))

    def _emit(self, outs):
        for o in outs:
            if isinstance(o, Impression):
                yield KIND_IMPRESSION, o.item_id, self.imp_codec.encode(o)
            elif isinstance(o, Action):
                yield KIND_ACTION, o.item_id, self.act_codec.encode(o)
            else:
                yield self.features_tag, self.fu_codec.encode(o)


class ItemFeatureFunction(_StepFunction, KeyedProcessFunction):
    """Input: (kind, item, bytes) keyed by item. Main output: enriched impression bytes; side
    outputs: deduplicated action bytes, FeatureUpdates."""

    entity = "item"

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.actions_tag = actions_tag()

    def process_element(self, value, ctx):
        kind, _, payload = value
        codec = self.imp_codec if kind == KIND_IMPRESSION else self.act_codec
        yield from self._emit(self._apply(codec.decode(bytes(payload)), ctx))

    def _emit(self, outs):
        for o in outs:
            if isinstance(o, Impression):
                yield self.imp_codec.encode(o)
            elif isinstance(o, Action):
                yield self.actions_tag, self.act_codec.encode(o)
            else:
                yield self.features_tag, self.fu_codec.encode(o)
