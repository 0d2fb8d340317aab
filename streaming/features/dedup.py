"""Duplicate detection inside a bounded event-time TTL.

A record is a duplicate when a record with the same key was kept less than ``ttl_ms`` away
from it in event time. Keys are forgotten once the watermark passes ``kept + ttl_ms``, so
memory is bounded by the keys of the last TTL; a duplicate arriving later than that (behind
the watermark by more than the TTL) passes, which is the documented bound.

>>> d = DedupFilter(ttl_ms=600_000)
>>> d.update(("r1", 7), event_time_ms=1000, watermark_ms=0)   # first: keep
True
>>> d.update(("r1", 7), event_time_ms=1000, watermark_ms=0)   # duplicate: drop
False
"""

from __future__ import annotations

from collections.abc import Hashable


class DedupFilter:
    __slots__ = ("ttl_ms", "kept", "duplicates", "_sweep_at")

    def __init__(self, ttl_ms: int):
        self.ttl_ms = ttl_ms
        self.kept: dict[Hashable, int] = {}  # key -> event time of the kept record
        self.duplicates = 0
        self._sweep_at = 64

    def update(self, key: Hashable, event_time_ms: int, watermark_ms: int) -> bool:
        """True when the record is the first of its key inside the TTL (keep it)."""
        self.expire(watermark_ms)
        prev = self.kept.get(key)
        if prev is not None and abs(event_time_ms - prev) < self.ttl_ms:
            self.duplicates += 1
            return False
        self.kept.pop(key, None)  # re-insert: dict order stays roughly by kept time
        self.kept[key] = event_time_ms
        return True

    def expire(self, watermark_ms: int) -> None:
        """Forget keys whose TTL the watermark has passed: pops from the front (oldest
        inserted) and sweeps everything once the table doubled since the last sweep."""
        kept, horizon = self.kept, watermark_ms - self.ttl_ms
        while kept:
            key = next(iter(kept))
            if kept[key] > horizon:
                break
            del kept[key]
        if len(kept) >= self._sweep_at:
            for key in [k for k, t in kept.items() if t <= horizon]:
                del kept[key]
            self._sweep_at = max(64, 2 * len(kept))

    def __len__(self) -> int:
        return len(self.kept)

    def __getstate__(self):
        return (self.ttl_ms, self.kept, self.duplicates)

    def __setstate__(self, state) -> None:
        self.ttl_ms, self.kept, self.duplicates = state
        self._sweep_at = max(64, 2 * len(self.kept))
