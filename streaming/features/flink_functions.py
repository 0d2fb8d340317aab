"""The Flink side of the feature job: key selectors and the two keyed process functions that
run FeatureStep inside Flink tasks, one EntityState per key in a ValueState.

    impressions ─┐ key_by user   UserFeatureFunction   (kind, item, bytes)  key_by item
    actions ─────┴─────────────► gate, dedup, user  ─────────────────────► ItemFeatureFunction
                                 features; side: dead                       item features; main:
                                 letters, FeatureUpdates                    enriched impressions;
                                                                            side: actions, updates

Timers: an event-time timer at each pending impression's time (Flink fires it once the
watermark reaches it) and one at ``cleanup_ms`` that drops an entity whose history aged out
(one at a time per key, its time in a ValueState; when it fires early, because events came
since, it registers the next).

State, per key: the EntityState (pickled ValueState) written every ``LOG_LIMIT`` records,
the records taken since in a log (ListState of (watermark, kind, Avro bytes): a record
appends ~100 bytes instead of re-pickling a ~1-2 kB history) and the time of its last
timer (a timer releases and prunes; it writes that time only). The live objects of the
most recently used ``cache_size`` keys stay in the function (``state_cache.StateCache``);
a key read from Flink (after a restore, or evicted) is put together again in ``_read``:
the EntityState, its log replayed, what the timers did since.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import ClassVar, TypeAlias

from pyflink.common import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from schemas import Action, DeadLetter, Impression, codec_for
from schemas.errors import DecodeError
from schemas.peek import fits_long, peek_action_time, peek_ids, peek_impression_time
from schemas.splice import feature_update_bytes, impression_dense, impression_with_dense
from schemas.validation import ValidationLimits
from streaming import python_gc
from streaming.dead_letters import REASONS
from streaming.features.entity_state import EntityState
from streaming.features.feature_step import FeatureStep, Output
from streaming.features.metrics import FeatureMetrics
from streaming.features.spec import Entity, FeatureSpec
from streaming.features.state_cache import CachedState, StateCache
from streaming.flink_env import bytes_type, dead_letter_tag
from streaming.flink_metrics import MetricMirror
from streaming.record_gate import RecordGate
from streamtrain.clock import now_ms

log = logging.getLogger(__name__)
KIND_IMPRESSION, KIND_ACTION = 0, 1
CLEANUP_TICK_MS = 60_000
DEFAULT_CACHE_SIZE = 100_000  # keys whose live state a function keeps (flink.state_cache_size)
LOG_LIMIT = 16  # records a key's log takes before its whole EntityState is written again
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


def gate_limits(spec: FeatureSpec, limits: ValidationLimits | None) -> ValidationLimits:
    """What the user step's record gate accepts: ``[validation]``, the action types the
    spec's (the JVM's screen in front of the sort reads the same, ``jvm_ops.screen``)."""
    return replace(limits or ValidationLimits(), action_types=spec.action_types)


class _StepFunction:
    """What both keyed functions share: the entity state, timers, output encoding."""

    entity: ClassVar[Entity]
    # FeatureMetrics counted by the JVM operator in front of the step, not exported here
    counted_in_jvm: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: FeatureSpec, cache_size: int = DEFAULT_CACHE_SIZE):
        self.spec = spec
        self.cache_size = cache_size

    def open(self, runtime_context: RuntimeContext) -> None:
        python_gc.tune()
        self.step = FeatureStep(self.spec, self.entity)
        self.cache: StateCache[EntityState] = StateCache(self.cache_size)
        self.state = runtime_context.get_state(
            ValueStateDescriptor(f"{self.entity}-features", Types.PICKLED_BYTE_ARRAY()))
        # the records taken since the EntityState was last written: (watermark, kind, Avro
        # bytes), replayed onto it when the key is read from Flink (_read)
        self.log = runtime_context.get_list_state(
            ListStateDescriptor(f"{self.entity}-log", Types.PICKLED_BYTE_ARRAY()))
        # the time of the key's last timer: its pending records at or before it have left,
        # whatever the (older) EntityState and log still hold (on_timer)
        self.released = runtime_context.get_state(
            ValueStateDescriptor(f"{self.entity}-released", Types.LONG()))
        # the key's registered cleanup tick (one at a time: _timers), so a key read from
        # Flink registers what the live object would have
        self.cleanup = runtime_context.get_state(
            ValueStateDescriptor(f"{self.entity}-cleanup", Types.LONG()))
        self.imp_codec, self.act_codec = codec_for(Impression), codec_for(Action)
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
            out |= {name: int(v) for name, v in m.counters().items() if name not in self.counted_in_jvm}
            return out | {f"dead_letters_{key}": int(m.dead_letters[key]) for key in REASONS}
        self.mirror = MetricMirror(group, read)

    def close(self) -> None:
        python_gc.report(f"features-{self.entity}")
        if hasattr(self, "mirror"):
            self.mirror.sync()
        if hasattr(self, "step"):
            counts = {**self.step.counters, **self.metrics.counters()}
            log.info("features close entity=%s %s", self.entity,
                     " ".join(f"{k}={v}" for k, v in sorted(counts.items())))

    def _dead_letter(self, dl: DeadLetter) -> tuple[OutputTag, bytes]:
        self.metrics.dead_letters.add(dl.reason)
        return self.dl_tag, self.dl_codec.encode(dl)

    def _load(self, key: int) -> CachedState[EntityState]:
        """The key's state: the cached object, else Flink's (a new one for a new key)."""
        entry = self.cache.get(key)
        if entry is None:
            entry = self._read(key)
            if entry is None:
                self.metrics.entities_created += 1
                entry = self.cache.put(key, self.step.new_state())
                entry.log_len = 0
        return entry

    def _read(self, key: int) -> CachedState[EntityState] | None:
        """Flink's copy of the current key's state: the EntityState written last, the
        records of its log replayed onto it as they were taken (same watermark; their
        outputs left then), then what the key's timers did since (``released``): the
        pending records up to the last one's time left, the history pruned to it. Timers'
        pruning between the records is not redone in between: it changes no history that
        the final prune keeps, and a replay's outputs are dropped."""
        state = self.state.value()
        log = list(self.log.get() or ())
        if state is None and not log:
            return None
        if state is None:
            state = self.step.new_state()
        counters = self.step.counters
        counted = counters.copy()  # a replay is not traffic: keep the figures as they were
        for wm, kind, raw in log:
            rec = self.imp_codec.decode(raw) if kind == KIND_IMPRESSION else self.act_codec.decode(raw)
            if wm is None:  # taken in event-time order (_apply_ordered)
                self.step.on_ordered(state, rec)
            elif kind == KIND_IMPRESSION:
                self.step.on_impression(state, rec, wm)
            else:
                self.step.on_action(state, rec, wm)
        counters.clear()
        counters.update(counted)
        self._released(state, self.released.value())
        entry = self.cache.put(key, state)
        entry.log_len = len(log)
        entry.cleanup_ms = self.cleanup.value()
        return entry

    def _released(self, state: EntityState, released: int | None) -> None:
        """What the key's timers up to ``released`` did to it: its pending records at or
        before it left, its history pruned to it (``FeatureStep.on_watermark``)."""
        if released is None:
            return
        pending = state.pending
        n = 0
        while n < len(pending) and pending[n][0] <= released:
            n += 1
        del pending[:n]
        state.prune(self.spec, released)

    def _apply(self, rec: Impression | Action, raw: bytes, key: int, ctx: Context) -> list[Output]:
        """One record (``raw``: its Avro bytes) into its key's state: the record goes to the
        key's log, the whole state every ``LOG_LIMIT`` records (``_read`` puts them together)."""
        entry = self._load(key)
        state = entry.state
        wm = ctx.timer_service().current_watermark()
        if isinstance(rec, Impression):
            kind = KIND_IMPRESSION
            outs = self.step.on_impression(state, rec, wm)
        else:
            kind = KIND_ACTION
            outs = self.step.on_action(state, rec, wm)
        self._logged(entry, wm, kind, raw)
        self._timers(entry, ctx)
        return self._outputs(outs)

    def _apply_ordered(self, rec: Impression | Action, raw: bytes, key: int,
                       ctx: Context) -> list[Output]:
        """``_apply`` for an input in event-time order (``FeatureStep.on_ordered``): the
        record leaves at once; no timer but the cleanup tick. Logged with watermark None."""
        entry = self._load(key)
        outs = self.step.on_ordered(entry.state, rec)
        self._took_ordered(entry, KIND_IMPRESSION if isinstance(rec, Impression) else KIND_ACTION,
                           raw, ctx)
        return self._outputs(outs)

    def _took_ordered(self, entry: CachedState[EntityState], kind: int, raw: bytes,
                      ctx: Context) -> None:
        """After a record taken in event-time order: into the log (watermark None), and the
        key's cleanup tick if none is registered (no pending records, so no other timer)."""
        self._logged(entry, None, kind, raw)
        if entry.cleanup_ms is None:
            self._timers(entry, ctx)

    def _logged(self, entry: CachedState[EntityState], wm: int | None, kind: int,
                raw: bytes) -> None:
        """The record into the key's log, or the whole state every ``LOG_LIMIT`` records."""
        if entry.log_len is not None and entry.log_len < LOG_LIMIT:
            self.log.add((wm, kind, raw))
            entry.log_len += 1
        else:
            self.state.update(entry.state)
            self.log.clear()
            entry.log_len = 0

    def on_timer(self, timestamp: int, ctx: TimerContext) -> Iterator[Emitted]:
        if self.mirror.fired(ctx):
            return
        self.mirror.maybe_sync(ctx)
        key = ctx.get_current_key()
        entry = self.cache.get(key) or self._read(key)
        if entry is None:
            return
        # timers of this key fire in time order: the ones at or before this have fired
        if entry.timer_ms is not None and entry.timer_ms <= timestamp:
            entry.timer_ms = None
        if entry.cleanup_ms is not None and entry.cleanup_ms <= timestamp:
            entry.cleanup_ms = None
        state = entry.state
        # release up to the timer's time, not the whole watermark: Flink fires the timers of
        # all keys in time order, so the outputs leave in event-time order even when the
        # watermark jumps ahead (a fast replay); the rest of this key's pending impressions
        # get their own (already due) timer in _save
        outs = self._outputs(self.step.on_watermark(state, timestamp))
        if state.empty():
            self.state.clear()
            self.log.clear()
            self.released.clear()
            self.cleanup.clear()
            self.cache.drop(key)
            self.metrics.entities_dropped += 1
        else:
            # a timer only releases pending records and prunes: it writes its time, not the
            # whole state; a key read from Flink does the same again (_read)
            self.released.update(timestamp)
            self._timers(entry, ctx)
        yield from self._emit(outs)

    def _outputs(self, outs: list[Output]) -> list[Output]:
        self.metrics.on_outputs(outs)
        return outs

    def _timers(self, entry: CachedState[EntityState], ctx: Context) -> None:
        """Register a timer only where one is missing: the oldest pending record's when it
        is earlier than the one registered; a cleanup tick when none is registered. New
        events move an entity's cleanup later; the cleanup timer that fires before it finds
        the history still there and registers the next one (on_timer). One cleanup timer
        per entity at a time: registering one per event that moved it made a timer per
        event, each of which fired (a JVM call into Python and a state write)."""
        state = entry.state
        at = self.step.next_timer_ms(state)
        if at is not None and (entry.timer_ms is None or at < entry.timer_ms):
            ctx.timer_service().register_event_time_timer(at)
            entry.timer_ms = at
        if entry.cleanup_ms is None:
            cleanup = -(-self.step.cleanup_ms(state) // CLEANUP_TICK_MS) * CLEANUP_TICK_MS
            ctx.timer_service().register_event_time_timer(cleanup)
            self.cleanup.update(cleanup)
            entry.cleanup_ms = cleanup

    def _emit(self, outs: list[Output]) -> Iterator[Emitted]:
        raise NotImplementedError


class _UserStep(_StepFunction):
    """What both forms of the user step share: the gates, the outputs."""

    entity = "user"

    def __init__(self, spec: FeatureSpec, impressions_topic: str, actions_topic: str,
                 limits: ValidationLimits | None = None, cache_size: int = DEFAULT_CACHE_SIZE):
        super().__init__(spec, cache_size)
        self.topics = (impressions_topic, actions_topic)
        self.limits = limits or ValidationLimits()  # [validation]; the action types are the spec's

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        limits = gate_limits(self.spec, self.limits)
        self.imp_gate = RecordGate(Impression, "features", self.topics[0], limits)
        self.act_gate = RecordGate(Action, "features", self.topics[1], limits)

    def _gated(self, gate: RecordGate, value: bytes,
               ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        raw = bytes(value)
        rec = gate.update(raw, now_ms())
        if isinstance(rec, DeadLetter):
            yield self._dead_letter(rec)
            return
        yield from self._emit(self._apply(rec, raw, rec.user_id, ctx))  # the gate checked it is user_key's

    def _emit(self, outs: list[Output]) -> Iterator[Emitted]:
        for o in outs:
            if isinstance(o, Impression):
                yield KIND_IMPRESSION, o.item_id, self.imp_codec.encode(o)
            elif isinstance(o, Action):
                yield KIND_ACTION, o.item_id, self.act_codec.encode(o)
            else:
                yield self.features_tag, feature_update_bytes(o)


class UserFeatureFunction(_UserStep, KeyedCoProcessFunction):
    """Input 1: impression bytes, input 2: action bytes, keyed by ``user_key``. Main output:
    (kind, item, bytes) for the item step; side outputs: dead letters, FeatureUpdates."""

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        self.metrics.impressions_in += 1
        self.mirror.maybe_sync(ctx)
        yield from self._gated(self.imp_gate, value, ctx)

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        self.metrics.actions_in += 1
        self.mirror.maybe_sync(ctx)
        yield from self._gated(self.act_gate, value, ctx)


class OrderedUserFeatureFunction(_UserStep, KeyedProcessFunction):
    """The user step on one input in event-time order: (kind, 0, bytes) records of both
    topics, each key's records sorted by ``streamtrain.flink.EventTimeSort`` in the JVM
    (the watermark has passed each one's event time), but for records the gate may reject:
    those come at once (``streamtrain.flink.Screen``). The sort counts the input on arrival
    (``impressions_in``, ``actions_in``). Outputs as ``UserFeatureFunction``."""

    counted_in_jvm = frozenset({"impressions_in", "actions_in"})

    def process_element(self, value: StepRecord,
                        ctx: KeyedProcessFunction.Context) -> Iterator[Emitted]:
        kind, _, payload = value
        self.mirror.maybe_sync(ctx)
        raw = bytes(payload)
        rec: Impression | Action | DeadLetter
        if kind == KIND_IMPRESSION:
            self.metrics.impressions_in += 1
            rec = self.imp_gate.update(raw, now_ms())
        else:
            self.metrics.actions_in += 1
            rec = self.act_gate.update(raw, now_ms())
        if isinstance(rec, DeadLetter):
            yield self._dead_letter(rec)
            return
        yield from self._emit(self._apply_ordered(rec, raw, rec.user_id, ctx))


class ItemFeatureFunction(_StepFunction, KeyedProcessFunction):
    """Input: (kind, item, bytes) keyed by item. Main output: enriched impression bytes; side
    outputs: deduplicated action bytes, FeatureUpdates, dead letters (undecodable input)."""

    entity = "item"

    def __init__(self, spec: FeatureSpec, cache_size: int = DEFAULT_CACHE_SIZE,
                 ordered: bool = False):
        """``ordered``: each key's records arrive in event-time order, sorted in the JVM
        (``streamtrain.flink.EventTimeSort``), and are enriched as they come."""
        super().__init__(spec, cache_size)
        self.ordered = ordered

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        self.actions_tag = actions_tag()

    def process_element(self, value: StepRecord,
                        ctx: KeyedProcessFunction.Context) -> Iterator[Emitted]:
        kind, key, payload = value
        self.mirror.maybe_sync(ctx)
        if kind == KIND_IMPRESSION:
            self.metrics.impressions_in += 1
            if self.ordered:
                spliced = self._spliced(bytes(payload), key, ctx)
                if spliced is not None:
                    yield from spliced
                    return
        else:
            self.metrics.actions_in += 1
        codec = self.imp_codec if kind == KIND_IMPRESSION else self.act_codec
        try:  # written by the user step: bad bytes mean a bug upstream, never a restart loop
            raw = bytes(payload)
            rec = codec.decode(raw)
        except DecodeError as exc:
            dl = DeadLetter(stage="features", source_topic="user-step", reason=f"undecodable: {exc}",
                            time_ms=now_ms(), raw=bytes(payload))
            yield self._dead_letter(dl)
            return
        if self.ordered:
            yield from self._emit(self._apply_ordered(rec, raw, key, ctx))
        else:
            yield from self._emit(self._apply(rec, raw, key, ctx))

    def _spliced(self, raw: bytes, key: int, ctx: KeyedProcessFunction.Context) -> list[Emitted] | None:
        """An impression in event-time order without a decode: the item features computed
        from its time (``FeatureStep.on_ordered_impression_at``) and appended to its dense
        array in its bytes (``schemas.splice``), what ``_apply_ordered`` + ``_emit`` give;
        None for bytes of another layout (decoded then)."""
        try:
            layout = impression_dense(raw)
        except IndexError:
            layout = None
        if layout is None:
            return None
        t, dense_at, count = layout
        entry = self._load(key)
        more, update = self.step.on_ordered_impression_at(entry.state, key, t)
        self._took_ordered(entry, KIND_IMPRESSION, raw, ctx)
        self.metrics.on_outputs([update])
        self.metrics.impressions_out += 1
        return [impression_with_dense(raw, dense_at, count, more),
                (self.features_tag, feature_update_bytes(update))]

    def _emit(self, outs: list[Output]) -> Iterator[Emitted]:
        for o in outs:
            if isinstance(o, Impression):
                yield self.imp_codec.encode(o)
            elif isinstance(o, Action):
                yield self.actions_tag, self.act_codec.encode(o)
            else:
                yield self.features_tag, feature_update_bytes(o)
