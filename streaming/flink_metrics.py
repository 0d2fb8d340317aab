"""Figures computed in a Python operator, exported as Flink counters that the operator's own
thread updates.

Why not ``group.gauge(name, fn)``: in thread execution mode the gauge's Python callable is
called by whichever JVM thread reads it — with the Prometheus reporter on, the reporter's
HTTP thread — and calling into the embedded interpreter from that thread crashes the JVM
(SIGSEGV in ``_PyEval_EvalFrameDefault``, seen under ``streamtrain up``). A counter is a
JVM object: the reporter reads it without touching Python; the operator moves it to the
current value (``inc``/``dec`` by the difference) at most once per ``every_s``, from
inside ``process_element`` / ``on_timer``, and once more on ``close``.

    mirror = MetricMirror(group, lambda: {"orphans": m.orphans, "window_occupancy": n})
    mirror.maybe_sync()       # in the operator's hot path: one clock read when not due
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class MetricMirror:
    def __init__(self, group: Any, read: Callable[[], dict[str, int]], every_s: float = 1.0) -> None:
        self.group = group
        self.read = read
        self.every_s = every_s
        self.counters: dict[str, Any] = {}
        self.shown: dict[str, int] = {}
        self._due = 0.0
        self.sync()  # every name exists from the start (a scrape before the first record sees 0)

    def maybe_sync(self) -> None:
        now = time.monotonic()
        if now >= self._due:
            self._due = now + self.every_s
            self.sync()

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
