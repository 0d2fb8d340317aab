"""The feature functions' read cache of keyed state: the live ``EntityState`` objects of the
most recently used keys, so a record or timer of a cached key skips Flink's ``value()``
(a JVM call and an unpickle of the whole history) and the function only writes through.

Why it is sound: a key's ValueState is written by this function only (every change goes
through ``update`` before the record's or timer's outputs leave), so the object cached for
it equals what Flink holds. The cache lives in the function instance and is made anew in
``open()``: a restored or restarted task starts empty and reads Flink's state again.

It also remembers, per key, the event-time timers this instance registered (the next
pending record's and the cleanup tick), so a record registers a timer only where one is
missing or later; an entry read from Flink (a miss) knows the cleanup tick (kept in state) but
not the pending timer, which it registers again (Flink keeps one timer per key and time:
a repeat is a no-op).

>>> cache = StateCache(capacity=2)
>>> cache.put(1, "a").state, cache.put(2, "b").state, cache.put(3, "c").state
('a', 'b', 'c')
>>> cache.get(1) is None, cache.get(3).state, len(cache)   # 1 went first (least recent)
(True, 'c', 2)
"""

from __future__ import annotations

from typing import Generic, TypeVar

S = TypeVar("S")


class CachedState(Generic[S]):
    """One key's state object and the timers registered for it (None: not known)."""

    __slots__ = ("state", "timer_ms", "cleanup_ms", "log_len")

    def __init__(self, state: S) -> None:
        self.state = state
        self.timer_ms: int | None = None  # earliest registered, not yet fired pending timer
        self.cleanup_ms: int | None = None  # the registered, not yet fired cleanup tick
        self.log_len: int | None = None  # records in the key's log of changes (flink_functions)


class StateCache(Generic[S]):
    """Least-recently-used map of key -> CachedState, at most ``capacity`` keys (0: none
    kept, every access reads Flink's state)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"state cache capacity={capacity}: must be >= 0 (0: no caching)")
        self.capacity = capacity
        self._entries: dict[int, CachedState[S]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: int) -> CachedState[S] | None:
        entries = self._entries
        entry = entries.pop(key, None)
        if entry is None:
            self.misses += 1
            return None
        entries[key] = entry  # most recent last
        self.hits += 1
        return entry

    def put(self, key: int, state: S) -> CachedState[S]:
        entries = self._entries
        entry = CachedState(state)
        if not self.capacity:
            return entry
        entries[key] = entry
        if len(entries) > self.capacity:
            del entries[next(iter(entries))]
        return entry

    def drop(self, key: int) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
