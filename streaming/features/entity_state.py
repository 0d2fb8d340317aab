"""One entity's (user's or item's) event history, bounded by the largest window, and the
feature values it gives as of any time ``t`` (only events strictly before ``t``).

Engine-free: the Flink job keeps one EntityState per key in keyed state; tests and the
in-memory pipeline keep them in a dict. Events may be added in any order (late actions);
reads bisect time-sorted arrays, so a value as of ``t`` never sees an event at or after ``t``.

Compact, because Flink keeps the state pickled and (un)pickles it with every record and timer:
event times are ``array('q')`` (one bytes blob each in a pickle, 8 bytes a time, instead of a
list of int objects), the acted-on items two parallel arrays (times, items), the pending records pickled as their
field values (``Pending``).

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

import dataclasses
from array import array
from bisect import bisect_left, bisect_right, insort
from operator import attrgetter
from typing import Any

from streaming.features.dedup import DedupFilter
from streaming.features.spec import Entity, FeatureSpec

_STATE_VERSION = 2  # (2, times, acted_ms, acted_items, pending, dedup); version 1: (times, acted, pending, dedup)


class EntityState:
    __slots__ = ("times", "acted_ms", "acted_items", "pending", "dedup")

    def __init__(self, dedup_ttl_ms: int | None = None):
        self.times: dict[str, array[int]] = {}  # event ("imp" | action type) -> sorted times
        # last-N action types: sorted by (time, item), as two parallel arrays
        self.acted_ms: array[int] = array("q")
        self.acted_items: array[int] = array("q")
        self.pending: list[tuple[int, Any]] = Pending()  # (time, impression | action) awaiting the watermark
        self.dedup = DedupFilter(dedup_ttl_ms) if dedup_ttl_ms else None

    def add(self, event: str, time_ms: int, item: int | None = None) -> None:
        ts = self.times.get(event)
        if ts is None:
            self.times[event] = array("q", (time_ms,))
        elif ts[-1] <= time_ms:
            ts.append(time_ms)
        else:
            insort(ts, time_ms)
        if item is not None:
            self._add_acted(time_ms, item)

    def _add_acted(self, time_ms: int, item: int) -> None:
        """Insert (time, item) after equal pairs, as ``insort`` on a list of pairs would."""
        ms, items = self.acted_ms, self.acted_items
        if not ms or ms[-1] < time_ms or (ms[-1] == time_ms and items[-1] <= item):
            ms.append(time_ms)
            items.append(item)
            return
        lo = bisect_left(ms, time_ms)
        i = bisect_right(items, item, lo, bisect_right(ms, time_ms, lo))
        ms.insert(i, time_ms)
        items.insert(i, item)

    @property
    def acted(self) -> tuple[array[int], array[int]]:
        """(times, items) of the acted-on items; assigning also takes the pre-array form, a
        sorted list of (time, item) pairs."""
        return self.acted_ms, self.acted_items

    @acted.setter
    def acted(self, value) -> None:
        if isinstance(value, list):
            value = (array("q", [t for t, _ in value]), array("q", [i for _, i in value]))
        self.acted_ms, self.acted_items = value

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
        ms = self.acted_ms
        lo = bisect_left(ms, t_ms - spec.max_window_ms)
        return _last_distinct(self.acted_items, lo, bisect_left(ms, t_ms, lo), spec.last_n)

    def prune(self, spec: FeatureSpec, watermark_ms: int) -> None:
        """Drop what no impression at or after the watermark can see: events older than the
        largest window (late impressions, behind the watermark, see a truncated history)."""
        cutoff = watermark_ms - spec.max_window_ms
        times = self.times
        for ev in list(times):
            ts = times[ev]
            if not ts or ts[0] < cutoff:
                i = bisect_left(ts, cutoff)
                if i == len(ts):
                    del times[ev]
                    continue
                del ts[:i]
        ms = self.acted_ms
        if ms and ms[0] < cutoff:
            i = bisect_left(ms, cutoff)
            del ms[:i]
            del self.acted_items[:i]
        if self.dedup is not None:
            self.dedup.expire(watermark_ms)

    def newest_ms(self) -> int:
        """The latest event time held (0 when empty)."""
        newest = max((ts[-1] for ts in self.times.values() if ts), default=0)
        return max(newest, self.acted_ms[-1] if self.acted_ms else 0)

    def empty(self) -> bool:
        return not self.times and not self.acted_ms and not self.pending and not (self.dedup and len(self.dedup))

    def __getstate__(self):
        return (_STATE_VERSION, self.times, self.acted_ms, self.acted_items, self.pending, self.dedup)

    def __setstate__(self, state) -> None:
        if len(state) == 4:  # version 1 (a checkpoint from before the arrays): lists
            times, self.acted, pending, self.dedup = state
            self.pending = Pending(pending)
            self.times = {ev: array("q", ts) for ev, ts in times.items()}
        else:
            _, self.times, self.acted_ms, self.acted_items, self.pending, self.dedup = state


class Pending(list):
    """(time, record) pairs awaiting the watermark, in time order: a list that pickles each
    record (a slots dataclass: Impression, Action) as its field values, not through the
    dataclass's Python-level __getstate__/__setstate__ (~3x cheaper both ways).

    >>> from schemas import Action
    >>> p = Pending([(5, Action("r1", 1, 2, "click", 5))])
    >>> import pickle; q = pickle.loads(pickle.dumps(p)); q == p and type(q) is Pending
    True
    """

    __slots__ = ()

    def __reduce__(self):
        return _unpack_pending, ([_pack(t, rec) for t, rec in self],)


_FIELDS: dict[type, attrgetter | None] = {}  # record class -> getter of its field values


def _pack(t: int, rec: Any) -> tuple:
    cls = type(rec)
    try:
        get = _FIELDS[cls]
    except KeyError:
        names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
        get = _FIELDS[cls] = attrgetter(*names) if len(names) > 1 else None
    return (t, rec) if get is None else (t, cls, *get(rec))


def _unpack_pending(packed: list[tuple]) -> Pending:
    return Pending([(p[0], p[1](*p[2:])) if len(p) > 2 else p for p in packed])


def _last_distinct(items: array[int], lo: int, end: int, n: int) -> list[int]:
    out: list[int] = []
    seen: set[int] = set()
    for j in range(end - 1, lo - 1, -1):
        if len(out) >= n:
            break
        item = items[j]
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out

