"""HashQueue: a FIFO ordered by deadline plus a hash index by key, with a memory bound.

The waiting window of the joiner. Every operation is O(1): it is an ``OrderedDict`` (a
hash table threaded by a doubly linked list, in C) whose insertion order is kept equal to
deadline order by clamping each new deadline to be no earlier than the tail's. With
deadlines ``event_time + window`` and a bounded out-of-orderness, an impression that
arrives out of order waits at most that bound longer than its window; in exchange,
expiry only ever looks at the head.

    q = HashQueue(max_entries=1000, max_bytes=1 << 20)
    evicted = q.push("r1|7", entry, deadline_ms=60_000, nbytes=120)   # [] unless over the bound
    q.get("r1|7")                      # O(1) lookup
    for key, entry in q.expire(now_ms=61_000): ...   # pops every entry whose deadline passed
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class HashQueue(Generic[K, V]):
    """FIFO by deadline + hash index; bounded by entries and/or bytes (0 = unbounded)."""

    __slots__ = ("_d", "max_entries", "max_bytes", "nbytes", "_tail_deadline")

    def __init__(self, max_entries: int = 0, max_bytes: int = 0) -> None:
        # key -> [deadline_ms, nbytes, value]
        self._d: OrderedDict[K, list] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._tail_deadline = -(1 << 62)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: K) -> bool:
        return key in self._d

    def get(self, key: K) -> V | None:
        node = self._d.get(key)
        return None if node is None else node[2]

    def deadline(self, key: K) -> int | None:
        node = self._d.get(key)
        return None if node is None else node[0]

    def push(self, key: K, value: V, deadline_ms: int, nbytes: int = 0) -> list[tuple[K, V]]:
        """Enqueue ``key`` (must be absent); returns the entries evicted by the memory bound,
        oldest first (possibly ``key`` itself if one entry alone exceeds ``max_bytes``)."""
        if key in self._d:
            raise KeyError(f"{key!r} is already queued")
        deadline_ms = max(deadline_ms, self._tail_deadline)
        self._tail_deadline = deadline_ms
        self._d[key] = [deadline_ms, nbytes, value]
        self.nbytes += nbytes
        evicted: list[tuple[K, V]] = []
        while self._d and ((self.max_entries and len(self._d) > self.max_entries)
                           or (self.max_bytes and self.nbytes > self.max_bytes)):
            evicted.append(self._pop_head())
        return evicted

    def pop(self, key: K) -> V | None:
        """Remove ``key`` from anywhere in the queue."""
        node = self._d.pop(key, None)
        if node is None:
            return None
        self.nbytes -= node[1]
        return node[2]

    def resize(self, key: K, nbytes: int) -> None:
        """Account a change of an entry's size (does not evict; the next push will)."""
        node = self._d[key]
        self.nbytes += nbytes - node[1]
        node[1] = nbytes

    def head_deadline(self) -> int | None:
        if not self._d:
            return None
        return self._d[next(iter(self._d))][0]

    def expire(self, now_ms: int) -> Iterator[tuple[K, V]]:
        """Pop, oldest first, every entry whose deadline is <= ``now_ms``. Lazy: entries are
        popped as the iterator is consumed."""
        d = self._d
        while d:
            key = next(iter(d))
            if d[key][0] > now_ms:
                return
            yield self._pop_head()

    def items(self) -> Iterator[tuple[K, V, int]]:
        """(key, value, deadline_ms) in deadline order, without removing anything."""
        for key, (deadline, _, value) in self._d.items():
            yield key, value, deadline

    def _pop_head(self) -> tuple[K, V]:
        key, (_, nbytes, value) = self._d.popitem(last=False)
        self.nbytes -= nbytes
        return key, value
