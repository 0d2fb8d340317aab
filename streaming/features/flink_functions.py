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
from collections.abc import Iterator
from dataclasses import replace
from typing import ClassVar, TypeAlias

from pyflink.common import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from schemas import Action, DeadLetter, FeatureUpdate, Impression, codec_for
from schemas.errors import DecodeError
from schemas.peek import fits_long, peek_action_time, peek_ids, peek_impression_time
from schemas.validation import ValidationLimits
from streaming.dead_letters import REASONS
from streaming.features.entity_state import EntityState
from streaming.features.feature_step import FeatureStep, Output
from streaming.features.metrics import FeatureMetrics
from streaming.features.spec import Entity, FeatureSpec
from streaming.flink_env import bytes_type, dead_letter_tag
from streaming.flink_metrics import MetricMirror
from streaming.record_gate import RecordGate
from streamtrain.clock import now_ms

log = logging.getLogger(__name__)
KIND_IMPRESSION, KIND_ACTION = 0, 1
CLEANUP_TICK_MS = 60_000
# FeatureStep.counters exported as Flink counters (accepted records, drops, enrichment)
STEP_COUNTERS = ("impressions", "actions", "duplicate_impressions", "duplicate_actions",
                 "late_impressions", "enriched")
StepRecord: TypeAlias = tuple[int, int, bytes]  # (kind, item id, Avro bytes): user step -> item step
Emitted: TypeAlias = bytes | StepRecord | tuple[OutputTag, bytes]  # main output, or a side output's
Context: TypeAlias = KeyedProcessFunction.Context | KeyedCoProcessFunction.Context
TimerContext: TypeAlias = KeyedProcessFunction.OnTimerContext | KeyedCoProcessFunction.OnTimerContext


def step_output_type():
    """(kind, item id, Avro bytes) between the user step and the item step."""
    return Types.TUPLE([Types.INT(), Types.LONG(), bytes_type()])


def features_tag() -> OutputTag:
    return OutputTag("feature-updates", bytes_type())


def actions_tag() -> OutputTag:
    return OutputTag("actions-deduped", bytes_type())


class EventTimeStamp(TimestampAssigner):
    """Stamps an output record (an Impression's or an Action's Avro bytes) with its event
    time before the Kafka sink writes it.

    The element timestamps the feature functions emit are not event times: PyFlink's
    (thread-mode) side outputs drop them (the deduplicated actions carried wall-clock
    timestamps), and an impression released by a timer or by a later record carries that
    trigger's time. The joiner's watermarks read these Kafka timestamps: with wall-clock
    stamps the action input's watermark ran far ahead of event time and stopped holding the
    join back while actions were still being read (a bounded replay closed windows before
    their labels were read: negatives, then corrections).

    >>> from schemas import Action, codec_for
    >>> EventTimeStamp(action=True).extract_timestamp(
    ...     codec_for(Action).encode(Action("r1", 7, 42, "click", event_time_ms=5)), 77)
    5
    """

    def __init__(self, action: bool) -> None:
        self.action = action

    def extract_timestamp(self, value: bytes, record_timestamp: int) -> int:
        try:
            raw = bytes(value)
            return peek_action_time(raw) if self.action else peek_impression_time(raw)
        except (IndexError, TypeError, ValueError):  # our own encoding: cannot happen; keep the stamp
            return record_timestamp


def user_key(raw: bytes) -> int:
    """user_id of an Impression/Action message without a full decode (both start with
    schema_version, request_id, user_id); 0 for unreadable bytes or a user_id beyond a
    Flink LONG (a corrupt varint): the gate dead-letters them."""
    try:
        user_id = peek_ids(bytes(raw))[1]
    except (IndexError, TypeError, ValueError):
        return 0
    return user_id if fits_long(user_id) else 0


class _StepFunction:
    """What both keyed functions share: the entity state, timers, output encoding."""

    entity: ClassVar[Entity]

    def __init__(self, spec: FeatureSpec):
        self.spec = spec

    def open(self, runtime_context: RuntimeContext) -> None:
        self.step = FeatureStep(self.spec, self.entity)
        self.state = runtime_context.get_state(
            ValueStateDescriptor(f"{self.entity}-features", Types.PICKLED_BYTE_ARRAY()))
        self.imp_codec, self.act_codec = codec_for(Impression), codec_for(Action)
        self.fu_codec = codec_for(FeatureUpdate)
        self.features_tag = features_tag()
        self.metrics = FeatureMetrics()
        self.dl_codec, self.dl_tag = codec_for(DeadLetter), dead_letter_tag()
        self._register_metrics(runtime_context.get_metrics_group().add_group("features")
                               .add_group(self.entity))

    def _register_metrics(self, group) -> None:
        """Flink counters kept at the figures' values (``streaming.flink_metrics``):
        ``features.<entity>.<name>``, dead letters also by reason key:
        ``features.<entity>.dead_letters_<key>`` (streaming.dead_letters.REASONS)."""
        m, counters = self.metrics, self.step.counters

        def read() -> dict[str, int]:
            out = {name: int(counters[name]) for name in STEP_COUNTERS}
            out |= {name: int(v) for name, v in m.counters().items()}
            return out | {f"dead_letters_{key}": int(m.dead_letters[key]) for key in REASONS}
        self.mirror = MetricMirror(group, read)

    def close(self) -> None:
        if hasattr(self, "mirror"):
            self.mirror.sync()
        if hasattr(self, "step"):
            counts = {**self.step.counters, **self.metrics.counters()}
            log.info("features close entity=%s %s", self.entity,
                     " ".join(f"{k}={v}" for k, v in sorted(counts.items())))

    def _dead_letter(self, dl: DeadLetter) -> tuple[OutputTag, bytes]:
        self.metrics.dead_letters.add(dl.reason)
        return self.dl_tag, self.dl_codec.encode(dl)

    def _apply(self, rec: Impression | Action, ctx: Context) -> list[Output]:
        state = self.state.value()
        if state is None:
            state = self.step.new_state()
            self.metrics.entities_created += 1
        wm = ctx.timer_service().current_watermark()
        if isinstance(rec, Impression):
            outs = self.step.on_impression(state, rec, wm)
        else:
            outs = self.step.on_action(state, rec, wm)
        self._save(state, ctx)
        return self._outputs(outs)

    def on_timer(self, timestamp: int, ctx: TimerContext) -> Iterator[Emitted]:
        self.mirror.maybe_sync()
        state = self.state.value()
        if state is None:
            return
        # release up to the timer's time, not the whole watermark: Flink fires the timers of
        # all keys in time order, so the outputs leave in event-time order even when the
        # watermark jumps ahead (a fast replay); the rest of this key's pending impressions
        # get their own (already due) timer in _save
        outs = self._outputs(self.step.on_watermark(state, timestamp))
        if state.empty():
            self.state.clear()
            self.metrics.entities_dropped += 1
        else:
            self._save(state, ctx)
        yield from self._emit(outs)

    def _outputs(self, outs: list[Output]) -> list[Output]:
        self.metrics.on_outputs(outs)
        return outs

    def _save(self, state: EntityState, ctx: Context) -> None:
        self.state.update(state)
        timers = ctx.timer_service()
        at = self.step.next_timer_ms(state)
        if at is not None:
            timers.register_event_time_timer(at)
        cleanup = self.step.cleanup_ms(state)
        timers.register_event_time_timer(-(-cleanup // CLEANUP_TICK_MS) * CLEANUP_TICK_MS)

    def _emit(self, outs: list[Output]) -> Iterator[Emitted]:
        raise NotImplementedError


class UserFeatureFunction(_StepFunction, KeyedCoProcessFunction):
    """Input 1: impression bytes, input 2: action bytes, keyed by ``user_key``. Main output:
    (kind, item, bytes) for the item step; side outputs: dead letters, FeatureUpdates."""

    entity = "user"

    def __init__(self, spec: FeatureSpec, impressions_topic: str, actions_topic: str,
                 limits: ValidationLimits | None = None):
        super().__init__(spec)
        self.topics = (impressions_topic, actions_topic)
        self.limits = limits or ValidationLimits()  # [validation]; the action types are the spec's

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        limits = replace(self.limits, action_types=self.spec.action_types)
        self.imp_gate = RecordGate(Impression, "features", self.topics[0], limits)
        self.act_gate = RecordGate(Action, "features", self.topics[1], limits)

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        self.metrics.impressions_in += 1
        self.mirror.maybe_sync()
        yield from self._gated(self.imp_gate, value, ctx)

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        self.metrics.actions_in += 1
        self.mirror.maybe_sync()
        yield from self._gated(self.act_gate, value, ctx)

    def _gated(self, gate: RecordGate, value: bytes,
               ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        rec = gate.update(bytes(value), now_ms())
        if isinstance(rec, DeadLetter):
            yield self._dead_letter(rec)
            return
        yield from self._emit(self._apply(rec, ctx))

    def _emit(self, outs: list[Output]) -> Iterator[Emitted]:
        for o in outs:
            if isinstance(o, Impression):
                yield KIND_IMPRESSION, o.item_id, self.imp_codec.encode(o)
            elif isinstance(o, Action):
                yield KIND_ACTION, o.item_id, self.act_codec.encode(o)
            else:
                yield self.features_tag, self.fu_codec.encode(o)


class ItemFeatureFunction(_StepFunction, KeyedProcessFunction):
    """Input: (kind, item, bytes) keyed by item. Main output: enriched impression bytes; side
    outputs: deduplicated action bytes, FeatureUpdates, dead letters (undecodable input)."""

    entity = "item"

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        self.actions_tag = actions_tag()

    def process_element(self, value: StepRecord,
                        ctx: KeyedProcessFunction.Context) -> Iterator[Emitted]:
        kind, _, payload = value
        self.mirror.maybe_sync()
        if kind == KIND_IMPRESSION:
            self.metrics.impressions_in += 1
        else:
            self.metrics.actions_in += 1
        codec = self.imp_codec if kind == KIND_IMPRESSION else self.act_codec
        try:  # written by the user step: bad bytes mean a bug upstream, never a restart loop
            rec = codec.decode(bytes(payload))
        except DecodeError as exc:
            dl = DeadLetter(stage="features", source_topic="user-step", reason=f"undecodable: {exc}",
                            time_ms=now_ms(), raw=bytes(payload))
            yield self._dead_letter(dl)
            return
        yield from self._emit(self._apply(rec, ctx))

    def _emit(self, outs: list[Output]) -> Iterator[Emitted]:
        for o in outs:
            if isinstance(o, Impression):
                yield self.imp_codec.encode(o)
            elif isinstance(o, Action):
                yield self.actions_tag, self.act_codec.encode(o)
            else:
                yield self.features_tag, self.fu_codec.encode(o)
