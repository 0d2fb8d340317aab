"""One entity's (user's or item's) event history, bounded by the largest window, and the
feature values it gives as of any time ``t`` (only events strictly before ``t``).

Engine-free: the Flink job keeps one EntityState per key in keyed state; tests and the
in-memory pipeline keep them in a dict. Events may be added in any order (late actions);
reads bisect time-sorted lists, so a value as of ``t`` never sees an event at or after ``t``.

>>> from streaming.features.spec import FeatureSpec
>>> spec = FeatureSpec(windows_ms=(300_000,), action_types=("buy",), ctr_action="buy")
>>> s = EntityState()
>>> s.add("imp", 1000); s.add("buy", 1500, item=7)
>>> [round(v, 3) for v in s.values(spec, "user", 2000)]   # imp_5m, buy_5m, ctr_5m as of t=2000
[1.0, 1.0, 0.095]
>>> s.last_items(spec, 2000)    # newest first, distinct, within the largest window
[7]
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any

from streaming.features.dedup import DedupFilter
from streaming.features.spec import Entity, FeatureSpec


class EntityState:
    __slots__ = ("times", "acted", "pending", "dedup")

    def __init__(self, dedup_ttl_ms: int | None = None):
        self.times: dict[str, list[int]] = {}  # event ("imp" | action type) -> sorted times
        self.acted: list[tuple[int, int]] = []  # sorted (time, item) of last-N action types
        self.pending: list[tuple[int, Any]] = []  # (time, impression | action) awaiting the watermark
        self.dedup = DedupFilter(dedup_ttl_ms) if dedup_ttl_ms else None

    def add(self, event: str, time_ms: int, item: int | None = None) -> None:
        ts = self.times.get(event)
        if ts is None:
            self.times[event] = [time_ms]
        elif ts[-1] <= time_ms:
            ts.append(time_ms)
        else:
            insort(ts, time_ms)
        if item is not None:
            insort(self.acted, (time_ms, item))

    def count(self, event: str, start_ms: int, end_ms: int) -> int:
        """Events of this type with start_ms <= time < end_ms."""
        ts = self.times.get(event)
        if not ts:
            return 0
        return bisect_left(ts, end_ms) - bisect_left(ts, start_ms)

    def values(self, spec: FeatureSpec, entity: Entity, t_ms: int) -> list[float]:
        """Every feature of ``spec.features(entity)`` as of ``t_ms`` (events < t_ms)."""
        out: list[float] = []
        imps: dict[int, int] = {}
        for f in spec.features(entity):
            if f.kind == "count":
                n = self.count(f.event, t_ms - f.window_ms, t_ms)
                if f.event == "imp":
                    imps[f.window_ms] = n
                out.append(float(n))
            else:  # ctr
                n_imp = imps.get(f.window_ms)
                if n_imp is None:
                    n_imp = self.count("imp", t_ms - f.window_ms, t_ms)
                hits = self.count(f.event, t_ms - f.window_ms, t_ms)
                out.append((hits + spec.ctr_prior * spec.ctr_strength) / (n_imp + spec.ctr_strength))
        return out

    def last_items(self, spec: FeatureSpec, t_ms: int) -> list[int]:
        """The last ``spec.last_n`` distinct items acted on in [t - max window, t)."""
        lo = bisect_left(self.acted, (t_ms - spec.max_window_ms, -(1 << 63)))
        return _last_distinct(self.acted, lo, bisect_left(self.acted, (t_ms, -(1 << 63))), spec.last_n)

    def prune(self, spec: FeatureSpec, watermark_ms: int) -> None:
        """Drop what no impression at or after the watermark can see: events older than the
        largest window (late impressions, behind the watermark, see a truncated history)."""
        cutoff = watermark_ms - spec.max_window_ms
        for ev in list(self.times):
            ts = self.times[ev]
            i = bisect_left(ts, cutoff)
            if i:
                del ts[:i]
            if not ts:
                del self.times[ev]
        i = bisect_left(self.acted, (cutoff, -(1 << 63)))
        if i:
            del self.acted[:i]
        if self.dedup is not None:
            self.dedup.expire(watermark_ms)

    def newest_ms(self) -> int:
        """The latest event time held (0 when empty)."""
        newest = max((ts[-1] for ts in self.times.values() if ts), default=0)
        return max(newest, self.acted[-1][0] if self.acted else 0)

    def empty(self) -> bool:
        return not self.times and not self.acted and not self.pending and not (self.dedup and len(self.dedup))

    def __getstate__(self):
        return (self.times, self.acted, self.pending, self.dedup)

    def __setstate__(self, state) -> None:
        self.times, self.acted, self.pending, self.dedup = state


def _last_distinct(acted: list[tuple[int, int]], lo: int, end: int, n: int) -> list[int]:
    out: list[int] = []
    seen: set[int] = set()
    for j in range(end - 1, lo - 1, -1):
        if len(out) >= n:
            break
        item = acted[j][1]
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out

