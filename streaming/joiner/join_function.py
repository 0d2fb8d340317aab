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
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import replace
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import KeyedCoProcessFunction
from pyflink.datastream.state import MapStateDescriptor

from schemas import Action, DeadLetter, Impression, Sample, codec_for
from schemas.peek import peek_ids
from streaming.flink_env import dead_letter_tag
from streaming.joiner.config import JoinerConfig
from streaming.joiner.core import END_OF_TIME, JoinCore
from streaming.joiner.kv_fallback import KvFallback
from streaming.joiner.metrics import JoinerMetrics
from streaming.joiner.stall_detector import StallDetector
from streaming.record_gate import RecordGate

log = logging.getLogger(__name__)
MAX_TIMESTAMP = (1 << 63) - 1  # Flink's Long.MAX_VALUE watermark


def join_bucket(raw: bytes, buckets: int) -> int:
    """Bucket of an Impression or Action message without a full decode: both start with
    schema_version, request_id, user_id, item_id. Unreadable bytes go to bucket 0 (the core's
    gate dead-letters them there)."""
    try:
        rid, _, item = peek_ids(bytes(raw))
        return zlib.crc32(rid + b"|" + item) % buckets
    except IndexError:
        return 0


def subtask_of(runtime_context) -> tuple[int, int]:
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
                 log_interval_s: float = 30.0) -> None:
        self.cfg = cfg
        self.kv_dir = kv_dir
        self.impressions_topic = impressions_topic
        self.actions_topic = actions_topic
        self.buckets = buckets
        self.timer_tick_ms = timer_tick_ms
        self.log_interval_s = log_interval_s

    def open(self, runtime_context) -> None:
        self.cores: dict[int, JoinCore] = {}
        self.kv = None
        self.subtask, parallelism = subtask_of(runtime_context)
        cfg = self.cfg
        # the memory bound is for the whole job: share it among the buckets of one subtask
        per_bucket = max(1, self.buckets // parallelism)
        self.bucket_cfg = replace(
            cfg, max_entries=max(1, cfg.max_entries // per_bucket) if cfg.max_entries else 0,
            max_bytes=max(1, cfg.max_bytes // per_bucket) if cfg.max_bytes else 0)
        self.kv = KvFallback(Path(self.kv_dir) / f"subtask-{self.subtask}", cfg.kv_ttl_ms)
        self.metrics = JoinerMetrics()
        self.stall = StallDetector(cfg.stall_after_ms, cfg.stall_min_impressions)
        self.journal_state = runtime_context.get_map_state(
            MapStateDescriptor("joiner-journal", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.imp_gate = RecordGate(Impression, "joiner", self.impressions_topic)
        self.act_gate = RecordGate(Action, "joiner", self.actions_topic)
        self.sample_codec = codec_for(Sample)
        self.dl_codec = codec_for(DeadLetter)
        self.dl_tag = dead_letter_tag()
        self._register_metrics(runtime_context.get_metrics_group().add_group("joiner"))
        self._last_log = time.monotonic()
        log.info("joiner open subtask=%d buckets=%d window_ms=%d policy=%s kv=%s",
                 self.subtask, self.buckets, cfg.window_ms, cfg.policy, self.kv.path)

    def _register_metrics(self, group) -> None:
        m = self.metrics
        for name in m.counters():
            group.gauge(name, lambda n=name: int(getattr(m, n)))
        group.gauge("joined_pct_x100", lambda: int(m.joined_pct() * 100))
        group.gauge("label_wait_p50_ms", lambda: m.label_wait_percentile(50))
        group.gauge("label_wait_p99_ms", lambda: m.label_wait_percentile(99))

    def close(self) -> None:
        if getattr(self, "kv", None) is None:
            return  # open() did not get that far
        log.info("joiner close subtask=%d %s", self.subtask, self.metrics.log_line())
        for core in self.cores.values():
            core.close()
        self.kv.close()
        self.kv = None

    # ---- Flink callbacks -----------------------------------------------------------------

    def process_element1(self, value, ctx):
        rec = self.imp_gate.update(bytes(value), int(time.time() * 1000))
        if isinstance(rec, DeadLetter):
            yield self.dl_tag, self.dl_codec.encode(rec)
            return
        core = self._core(ctx.get_current_key())
        now = ctx.timer_service().current_watermark()
        yield from self._emit(core.on_impression(rec, now, raw=bytes(value)))
        self._schedule(core, ctx, now)

    def process_element2(self, value, ctx):
        rec = self.act_gate.update(bytes(value), int(time.time() * 1000))
        if isinstance(rec, DeadLetter):
            yield self.dl_tag, self.dl_codec.encode(rec)
            return
        core = self._core(ctx.get_current_key())
        now = ctx.timer_service().current_watermark()
        yield from self._emit(core.on_action(rec, now))
        self._schedule(core, ctx, now)

    def on_timer(self, timestamp, ctx):
        core = self._core(ctx.get_current_key())
        now = max(timestamp, ctx.timer_service().current_watermark())
        yield from self._emit(core.advance(now))
        self._schedule(core, ctx, now)

    # ---- helpers -------------------------------------------------------------------------

    def _core(self, bucket: int) -> JoinCore:
        core = self.cores.get(bucket)
        if core is None:
            core = JoinCore(self.bucket_cfg, self.kv, stall=self.stall, metrics=self.metrics,
                            journal=self._journal, actions_topic=self.actions_topic)
            items = [(k, bytes(v)) for k, v in self.journal_state.items()]
            if items:
                log.info("joiner subtask=%d restoring bucket=%d from %d journal entries",
                         self.subtask, bucket, len(items))
                core.restore(items)
            self.cores[bucket] = core
        return core

    def _journal(self, key: str, data: bytes | None) -> None:
        if data is None:
            self.journal_state.remove(key)
        else:
            self.journal_state.put(key, data)

    def _schedule(self, core: JoinCore, ctx, now: int) -> None:
        deadline = core.next_deadline()
        if deadline is None or now >= END_OF_TIME:
            return  # nothing waits, or the input ended (everything closed)
        tick = self.timer_tick_ms
        at = -(-max(deadline, now + 1) // tick) * tick
        if at < MAX_TIMESTAMP:
            ctx.timer_service().register_event_time_timer(at)

    def _emit(self, outputs):
        for out in outputs:
            if isinstance(out, Sample):
                yield self.sample_codec.encode(out)
            else:
                yield self.dl_tag, self.dl_codec.encode(out)
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            self.metrics.kv_size = self.kv.size
            log.info("joiner subtask=%d buckets_open=%d %s", self.subtask, len(self.cores),
                     self.metrics.log_line())
