"""HashQueue: entries ordered by deadline plus a hash index by key, with a memory bound.

The waiting window of the joiner. Entries leave in (deadline, arrival) order, whatever
order their deadlines arrive in. Two lanes keep that cheap: an ``OrderedDict`` (a hash
table threaded by a doubly linked list, in C) holds the entries that arrived in deadline
order, the usual case, at O(1) per push and per expiry; an entry whose deadline is earlier
than that lane's tail goes to a binary heap instead (O(log n)). Arrivals out of deadline
order are normal for a joiner: two Kafka partitions (or two sources) read at their own
pace, and after a restart one may be hours of event time ahead of another. Clamping such
a deadline to the tail's instead would hold the entry until the far-ahead deadline.
Lookups are O(1) through the index; a pop from the middle is O(1) too (a heap entry is
left behind as garbage and skipped or compacted later).

>>> q = HashQueue(max_entries=2, max_bytes=1 << 20)
>>> q.push("r1|7", "entry 1", 60_000, 120)     # evicted entries: none while within the bound
[]
>>> q.get("r1|7")                              # O(1) lookup
'entry 1'
>>> q.push("r2|8", "entry 2", 70_000, 120), q.push("r3|9", "entry 3", 80_000, 120)
([], [('r1|7', 'entry 1')])
>>> list(q.expire(75_000))                     # pops every entry whose deadline passed
[('r2|8', 'entry 2')]
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_DEADLINE, _SEQ, _NBYTES, _VALUE = range(4)


class HashQueue(Generic[K, V]):
    """Ordered by (deadline, arrival) + hash index; bounded by entries and/or bytes
    (0 = unbounded); the entry that leaves first is also the one evicted first."""

    __slots__ = ("_nodes", "_fifo", "_tail", "_heap", "_garbage", "_seq", "max_entries",
                 "max_bytes", "nbytes")

    def __init__(self, max_entries: int = 0, max_bytes: int = 0) -> None:
        # a node: [deadline_ms, arrival seq, nbytes, value]
        self._nodes: dict[K, list] = {}
        self._fifo: OrderedDict[K, list] = OrderedDict()  # arrived in deadline order
        self._tail = 0  # deadline of the newest fifo entry (>= it after a pop from the middle)
        self._heap: list[tuple[int, int, K, list]] = []   # arrived earlier than the fifo tail
        self._garbage = 0  # heap items whose node was popped from the middle
        self._seq = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, key: K) -> bool:
        return key in self._nodes

    def get(self, key: K) -> V | None:
        node = self._nodes.get(key)
        return None if node is None else node[_VALUE]

    def deadline(self, key: K) -> int | None:
        node = self._nodes.get(key)
        return None if node is None else node[_DEADLINE]

    def push(self, key: K, value: V, deadline_ms: int, nbytes: int = 0) -> list[tuple[K, V]]:
        """Enqueue ``key`` (must be absent); returns the entries evicted by the memory bound,
        oldest first (possibly ``key`` itself if it is the oldest)."""
        if key in self._nodes:
            raise KeyError(f"{key!r} is already queued")
        node: list = [deadline_ms, self._seq, nbytes, value]  # mixed types, as in self._nodes
        self._seq += 1
        self._nodes[key] = node
        fifo = self._fifo
        if not fifo or deadline_ms >= self._tail:
            fifo[key] = node
            self._tail = deadline_ms
        else:
            heapq.heappush(self._heap, (deadline_ms, node[_SEQ], key, node))
        self.nbytes += nbytes
        evicted: list[tuple[K, V]] = []
        while self._nodes and ((self.max_entries and len(self._nodes) > self.max_entries)
                               or (self.max_bytes and self.nbytes > self.max_bytes)):
            evicted.append(self._pop_first())
        return evicted

    def pop(self, key: K) -> V | None:
        """Remove ``key`` from anywhere in the queue."""
        node = self._nodes.pop(key, None)
        if node is None:
            return None
        if self._fifo.pop(key, None) is None:
            self._garbage += 1
            if self._garbage > 64 and self._garbage * 2 > len(self._heap):
                self._heap = [it for it in self._heap if self._nodes.get(it[2]) is it[3]]
                heapq.heapify(self._heap)
                self._garbage = 0
        self.nbytes -= node[_NBYTES]
        return node[_VALUE]

    def resize(self, key: K, nbytes: int) -> None:
        """Account a change of an entry's size (does not evict; the next push will)."""
        node = self._nodes[key]
        self.nbytes += nbytes - node[_NBYTES]
        node[_NBYTES] = nbytes

    def head_deadline(self) -> int | None:
        first = self._first()
        return None if first is None else first[_DEADLINE]

    def expire(self, now_ms: int) -> Iterator[tuple[K, V]]:
        """Pop, oldest first, every entry whose deadline is <= ``now_ms``. Lazy: entries are
        popped as the iterator is consumed."""
        fifo, nodes = self._fifo, self._nodes
        while True:
            if self._heap:
                first = self._first()
                if first is None or first[_DEADLINE] > now_ms:
                    return
                yield self._pop_first(first)
                continue
            if not fifo:  # the usual case below: everything arrived in deadline order
                return
            key = next(iter(fifo))
            node = fifo[key]
            if node[_DEADLINE] > now_ms:
                return
            fifo.popitem(last=False)
            del nodes[key]
            self.nbytes -= node[_NBYTES]
            yield key, node[_VALUE]

    def items(self) -> Iterator[tuple[K, V, int]]:
        """(key, value, deadline_ms) in (deadline, arrival) order, without removing anything."""
        live = sorted((it for it in self._heap if self._nodes.get(it[2]) is it[3]),
                      key=lambda it: (it[0], it[1]))
        fifo = ((node[_DEADLINE], node[_SEQ], key, node) for key, node in self._fifo.items())
        for deadline, _, key, node in heapq.merge(fifo, live, key=lambda it: (it[0], it[1])):
            yield key, node[_VALUE], deadline

    def _first(self) -> list | None:
        """The node that leaves next (drops heap garbage on the way)."""
        heap = self._heap
        while heap and self._nodes.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)
            self._garbage -= 1
        head = self._fifo[next(iter(self._fifo))] if self._fifo else None
        if not heap:
            return head
        top = heap[0][3]
        if head is None or (top[_DEADLINE], top[_SEQ]) < (head[_DEADLINE], head[_SEQ]):
            return top
        return head

    def _pop_first(self, first: list | None = None) -> tuple[K, V]:
        first = first or self._first()
        if self._fifo and self._fifo[next(iter(self._fifo))] is first:
            key, node = self._fifo.popitem(last=False)
        else:
            _, _, key, node = heapq.heappop(self._heap)
        del self._nodes[key]
        self.nbytes -= node[_NBYTES]
        return key, node[_VALUE]
