"""The Flink side of the joiner: the key selector and the KeyedCoProcessFunction that runs
``JoinCore`` instances inside a Flink task.

Keying and state. Both streams are keyed by a *bucket* of the join key
(``crc32(request_id, item_id) % buckets``), not by the join key itself: one ``JoinCore``
(HashQueue window + shared rocksdict KV) serves each bucket, so its FIFO expiry pops many
join keys at once while Flink's current key is that bucket. Every state change of a core is
journaled into the bucket's ``MapState`` (checkpointed by Flink); after a restore, a bucket's
core is rebuilt from it on first use. One event-time timer per bucket, at the core's next
deadline (rounded up to ``timer_tick_ms``), drives ``advance``. The KV fallback is local to
the subtask (``<kv_dir>/subtask-<i>``) and written idempotently, so a replay after a restore
rewrites the same records; it is not part of the checkpoint (see docs/joiner.md).

Two clocks go into the cores: the operator's watermark closes windows; the subtask's
``ImpressionClock`` (``clocks.py``: the watermark, as long as the impressions read so far
vouch for it) ends the actions' waits for their impressions. The memory bounds of
``[joiner]`` are for the whole job: each bucket's core gets ``bound // buckets``.

The watermark comes from Kafka record timestamps, the cores work on ``event_time_ms``: a
record whose timestamp is more than ``SKEW_WARN_MS`` from its event time is counted
(``time_skewed``) and logged once per input, since such a producer moves the watermark
with a clock that is not event time (the feature job's side outputs did: wall-clock).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeAlias

from pyflink.common import Types
from pyflink.datastream import KeyedCoProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from schemas import Action, DeadLetter, Impression, Sample, codec_for
from schemas.peek import peek_ids
from schemas.validation import ValidationLimits
from streaming import python_gc
from streaming.dead_letters import REASONS, DeadLetterCounts
from streaming.event_time import END_OF_TIME
from streaming.flink_env import dead_letter_tag
from streaming.flink_metrics import MetricMirror
from streaming.joiner.clocks import ImpressionClock
from streaming.joiner.config import JoinerConfig
from streaming.joiner.core import JoinCore, Output
from streaming.joiner.kv_fallback import KvFallback
from streaming.joiner.metrics import JoinerMetrics
from streaming.joiner.stall_detector import StallDetector
from streaming.record_gate import RecordGate
from streamtrain.clock import now_ms

log = logging.getLogger(__name__)
Emitted: TypeAlias = bytes | tuple[OutputTag, bytes]  # a main-output record, or a side output's
SKEW_WARN_MS = 60_000  # record timestamp vs event_time_ms: beyond this, counted and logged


def join_bucket(raw: bytes, buckets: int) -> int:
    """Bucket of an Impression or Action message without a full decode: both start with
    schema_version, request_id, user_id, item_id. Unreadable bytes go to bucket 0 (the core's
    gate dead-letters them there)."""
    try:
        rid, _, item = peek_ids(bytes(raw))
        return zlib.crc32(rid + b"|" + item) % buckets
    except IndexError:
        return 0


def subtask_of(runtime_context: RuntimeContext) -> tuple[int, int]:
    """(index, parallelism) of this subtask. PyFlink 2.2's thread-mode runtime context calls
    RuntimeContext.getIndexOfThisSubtask(), which Flink 2.x moved to getTaskInfo()."""
    try:
        return (runtime_context.get_index_of_this_subtask(),
                runtime_context.get_number_of_parallel_subtasks())
    except Exception:  # pemja.PythonException / AttributeError in thread mode
        info = runtime_context._runtime_context.getTaskInfo()
        return info.getIndexOfThisSubtask(), info.getNumberOfParallelSubtasks()


class JoinFunction(KeyedCoProcessFunction):
    """Input 1: impression bytes, input 2: action bytes (keyed by bucket). Main output:
    Sample bytes; side output ``dead-letter``: DeadLetter bytes."""

    def __init__(self, cfg: JoinerConfig, kv_dir: str, impressions_topic: str,
                 actions_topic: str, buckets: int, timer_tick_ms: int = 1000,
                 log_interval_s: float = 30.0, limits: ValidationLimits | None = None,
                 out_of_orderness_ms: int = 0) -> None:
        self.cfg = cfg
        self.out_of_orderness_ms = out_of_orderness_ms  # [flink]: the inputs' watermark bound
        self.limits = limits or ValidationLimits()  # [validation]
        self.kv_dir = kv_dir
        self.impressions_topic = impressions_topic
        self.actions_topic = actions_topic
        self.buckets = buckets
        self.timer_tick_ms = timer_tick_ms
        self.log_interval_s = log_interval_s

    def open(self, runtime_context: RuntimeContext) -> None:
        python_gc.tune()
        self.cores: dict[int, JoinCore] = {}
        self._timer_at: dict[int, int] = {}  # bucket -> earliest timer this instance registered
        self.kv = None
        self.subtask, _ = subtask_of(runtime_context)
        cfg = self.cfg
        # the memory bounds are for the whole job: one share per bucket, wherever it runs
        self.bucket_cfg = cfg.per_core(self.buckets)
        self.clock = ImpressionClock(self.out_of_orderness_ms)
        self._skew_logged: set[str] = set()
        self.kv = KvFallback(Path(self.kv_dir) / f"subtask-{self.subtask}", cfg.kv_ttl_ms)
        self.metrics = JoinerMetrics()
        self.dead_letters = DeadLetterCounts()  # every dead letter this function writes, by reason
        self.stall = StallDetector(cfg.stall_after_ms, cfg.stall_min_impressions)
        self.journal_state = runtime_context.get_map_state(
            MapStateDescriptor("joiner-journal", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.imp_gate = RecordGate(Impression, "joiner", self.impressions_topic, self.limits)
        # the action types are the cores' check (dead-lettered and counted there)
        self.act_gate = RecordGate(Action, "joiner", self.actions_topic,
                                   replace(self.limits, action_types=None))
        self.sample_codec = codec_for(Sample)
        self.dl_codec = codec_for(DeadLetter)
        self.dl_tag = dead_letter_tag()
        self._register_metrics(runtime_context.get_metrics_group().add_group("joiner"))
        self._last_log = time.monotonic()
        log.info("joiner open subtask=%d buckets=%d window_ms=%d policy=%s kv=%s",
                 self.subtask, self.buckets, cfg.window_ms, cfg.policy, self.kv.path)

    def _register_metrics(self, group) -> None:
        """Flink counters kept at the figures' values (``streaming.flink_metrics``):
        ``joiner.<JoinerMetrics field>``, the join rate and label waits, dead letters in all
        and by reason key (the gate's rejects have no JoinerMetrics counter of their own)."""
        m, dead = self.metrics, self.dead_letters

        def read() -> dict[str, int]:
            out = {name: int(getattr(m, name)) for name in m.counters()}
            out |= {"joined_pct_x100": int(m.joined_pct() * 100),
                    "label_wait_p50_ms": int(m.label_wait_percentile(50)),
                    "label_wait_p99_ms": int(m.label_wait_percentile(99)), "dead_letters": dead.total()}
            return out | {f"dead_letters_{key}": int(dead[key]) for key in REASONS}
        self.mirror = MetricMirror(group, read)

    def close(self) -> None:
        kv = getattr(self, "kv", None)
        if kv is None:
            return  # open() did not get that far
        self.mirror.sync()
        log.info("joiner close subtask=%d %s", self.subtask, self.metrics.log_line())
        python_gc.report(f"joiner-{self.subtask}")
        for core in self.cores.values():
            core.close()
        kv.close()
        self.kv = None

    # ---- Flink callbacks -----------------------------------------------------------------

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        self.mirror.maybe_sync(ctx)
        rec = self.imp_gate.update(bytes(value), now_ms())
        if isinstance(rec, DeadLetter):
            yield self._dead_letter(rec)
            return
        self._check_time(ctx, rec.event_time_ms, self.impressions_topic)
        self.clock.on_impression(rec.event_time_ms)
        bucket = ctx.get_current_key()
        core = self._core(bucket)
        now = ctx.timer_service().current_watermark()
        yield from self._emit(core.on_impression(rec, now, raw=bytes(value)))
        self._schedule(bucket, core, ctx, now)

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[Emitted]:
        self.mirror.maybe_sync(ctx)
        rec = self.act_gate.update(bytes(value), now_ms())
        if isinstance(rec, DeadLetter):
            yield self._dead_letter(rec)
            return
        self._check_time(ctx, rec.event_time_ms, self.actions_topic)
        bucket = ctx.get_current_key()
        core = self._core(bucket)
        now = ctx.timer_service().current_watermark()
        yield from self._emit(core.on_action(rec, now, impressions_ms=self.clock.at(now)))
        self._schedule(bucket, core, ctx, now)

    def on_timer(self, timestamp: int,
                 ctx: KeyedCoProcessFunction.OnTimerContext) -> Iterator[Emitted]:
        if self.mirror.fired(ctx):
            return
        self.mirror.maybe_sync(ctx)
        bucket = ctx.get_current_key()
        if self._timer_at.get(bucket) == timestamp:
            del self._timer_at[bucket]  # fired (a later one, left from before, fires too)
        core = self._core(bucket)
        now = max(timestamp, ctx.timer_service().current_watermark())
        yield from self._emit(core.advance(now, impressions_ms=self.clock.at(now)))
        self._schedule(bucket, core, ctx, now)

    # ---- helpers -------------------------------------------------------------------------

    def _core(self, bucket: int) -> JoinCore:
        core = self.cores.get(bucket)
        if core is None:
            core = JoinCore(self.bucket_cfg, self.kv, stall=self.stall, metrics=self.metrics,
                            journal=self._journal, actions_topic=self.actions_topic,
                            action_types=self.limits.action_types, encode_samples=True)
            items = [(k, bytes(v)) for k, v in self.journal_state.items()]
            if items:
                log.info("joiner subtask=%d restoring bucket=%d from %d journal entries",
                         self.subtask, bucket, len(items))
                core.restore(items)
            self.cores[bucket] = core
        return core

    def _check_time(self, ctx: KeyedCoProcessFunction.Context, event_time_ms: int,
                    topic: str) -> None:
        """Count (and log once per topic) a record whose Kafka timestamp, the watermark's
        clock, is far from its event time."""
        ts = ctx.timestamp()
        if ts is None or abs(ts - event_time_ms) <= SKEW_WARN_MS:
            return
        self.metrics.time_skewed += 1
        if topic not in self._skew_logged:
            self._skew_logged.add(topic)
            log.warning("joiner subtask=%d topic=%s: record timestamp %d is %d ms from its "
                        "event_time_ms %d; the watermark follows record timestamps, so the "
                        "producer of this topic should stamp records with their event time",
                        self.subtask, topic, ts, ts - event_time_ms, event_time_ms)

    def _journal(self, key: str, data: bytes | None) -> None:
        if data is None:
            self.journal_state.remove(key)
        else:
            self.journal_state.put(key, data)

    def _dead_letter(self, dl: DeadLetter) -> tuple[OutputTag, bytes]:
        self.dead_letters.add(dl.reason)
        return self.dl_tag, self.dl_codec.encode(dl)

    def _schedule(self, bucket: int, core: JoinCore, ctx: KeyedCoProcessFunction.Context,
                  now: int) -> None:
        """An event-time timer at the bucket's next deadline (rounded up to the tick),
        unless one at or before it is registered already: that one fires first and
        schedules again (a call into the JVM saved on most records, whose push leaves the
        bucket's first deadline where it was). A timer pending here is after ``now``, the
        watermark: Flink fires every timer at or below a watermark before the records that
        follow it. After a restore the map is empty and Flink's restored timers are
        registered again, which Flink keeps once per time and key."""
        deadline = core.next_deadline()
        if deadline is None or now >= END_OF_TIME:
            return  # nothing waits, or the input ended (everything closed)
        tick = self.timer_tick_ms
        at = -(-max(deadline, now + 1) // tick) * tick
        pending = self._timer_at.get(bucket)
        if pending is not None and pending <= at:
            return
        if at < END_OF_TIME:  # a Java long holds no later timer; the final watermark is this
            ctx.timer_service().register_event_time_timer(at)
            self._timer_at[bucket] = at

    def _emit(self, outputs: Iterable[Output]) -> Iterator[Emitted]:
        for out in outputs:
            if isinstance(out, bytes):  # a Sample message spliced from its impression's
                yield out
            elif isinstance(out, Sample):
                yield self.sample_codec.encode(out)
            else:
                yield self._dead_letter(out)
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            if self.kv is not None:  # always, between open() and close()
                self.metrics.kv_size = self.kv.size
            log.info("joiner subtask=%d buckets_open=%d %s", self.subtask, len(self.cores),
                     self.metrics.log_line())
