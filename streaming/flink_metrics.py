"""Figures computed in a Python operator, exported as Flink counters that the operator's own
thread updates.

Why not ``group.gauge(name, fn)``: in thread execution mode the gauge's Python callable is
called by whichever JVM thread reads it — with the Prometheus reporter on, the reporter's
HTTP thread — and calling into the embedded interpreter from that thread crashes the JVM
(SIGSEGV in ``_PyEval_EvalFrameDefault``, seen under ``streamtrain up``). A counter is a
JVM object: the reporter reads it without touching Python; the operator moves it to the
current value (``inc``/``dec`` by the difference) at most once per ``every_s``, from
inside ``process_element`` / ``on_timer``, and once more on ``close``.

A burst of records inside one ``every_s`` followed by a quiet input would leave the counters
at what the burst's first record saw (a sync happens before the record's changes, and no
record comes after): given the context's timer service, ``maybe_sync`` keeps one
processing-time timer pending (one per function, not per record), and its firing syncs.

    mirror = MetricMirror(group, lambda: {"orphans": m.orphans, "window_occupancy": n})
    mirror.maybe_sync(ctx)                   # in the hot path: a clock read when not due
    if mirror.fired(ctx): return             # first in on_timer: the mirror's own timer
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pyflink.datastream.time_domain import TimeDomain


class MetricMirror:
    def __init__(self, group: Any, read: Callable[[], dict[str, int]], every_s: float = 1.0) -> None:
        self.group = group
        self.read = read
        self.every_s = every_s
        self.counters: dict[str, Any] = {}
        self.shown: dict[str, int] = {}
        self._due = 0.0
        self._timer_pending = False
        self.sync()  # every name exists from the start (a scrape before the first record sees 0)

    def maybe_sync(self, ctx: Any = None) -> None:
        """Sync when ``every_s`` has passed since the last one; with ``ctx`` (a keyed
        function's context) also keep a processing-time timer pending ``every_s`` ahead,
        whose firing (``fired``) syncs what came after."""
        now = time.monotonic()
        if now >= self._due:
            self._due = now + self.every_s
            self.sync()
        if ctx is not None and not self._timer_pending:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time()
                                                  + int(self.every_s * 1000))
            self._timer_pending = True

    def fired(self, ctx: Any) -> bool:
        """True (after a sync) when the timer firing in ``on_timer`` is the mirror's: the
        function's own timers are event-time ones (a processing-time timer restored from a
        checkpoint is the mirror's too)."""
        if ctx.time_domain() != TimeDomain.PROCESSING_TIME:
            return False
        self._timer_pending = False
        self._due = time.monotonic() + self.every_s
        self.sync()
        return True

    def sync(self) -> None:
        for name, value in self.read().items():
            counter = self.counters.get(name)
            if counter is None:
                counter = self.counters[name] = self.group.counter(name)
                self.shown[name] = 0
            delta = int(value) - self.shown[name]
            if delta > 0:
                counter.inc(delta)
            elif delta < 0:
                counter.dec(-delta)
            self.shown[name] += delta
