"""Vectorised 64-bit id -> entry index, the bookkeeping half of a collisionless table.

Every id the table has seen and not yet expired owns one *entry*: its id, how often it was
seen (frequency filter), when it was last seen (event time, for expiry) and its row in the
value storage (-1 while it waits for admission). The id -> entry map is pandas'
``Int64HashTable`` (C, open addressing; ~11M lookups/s and ~13M inserts/s on one core
here), so a batch is mapped with one call, never a Python loop per id. The hash table has
no delete: ``compact`` drops dead entries and rebuilds it, which expiry does on a cadence
(O(live ids), ~0.1 s per million).

>>> import numpy as np
>>> index = IdIndex()
>>> ids = np.array([10, -3, 10**18], dtype=np.int64)
>>> entries = index.find(ids)                            # -1 where unseen
>>> entries[entries < 0] = index.insert(ids[entries < 0])   # ids must be unique
>>> entries.tolist(), index.find(np.array([10**18, 5])).tolist()
([0, 1, 2], [2, -1])
"""

from __future__ import annotations

import numpy as np
from pandas._libs.hashtable import Int64HashTable


class IdIndex:
    COLUMNS = {"ids": np.int64, "count": np.int64, "last_seen": np.int64, "row": np.int64}

    def __init__(self, capacity: int = 1024):
        self._table = Int64HashTable(capacity)
        self.size = 0
        self.ids = np.zeros(capacity, np.int64)
        self.count = np.zeros(capacity, np.int64)
        self.last_seen = np.zeros(capacity, np.int64)
        self.row = np.full(capacity, -1, np.int64)

    def __len__(self) -> int:
        return self.size

    def find(self, ids: np.ndarray) -> np.ndarray:
        """(n,) entry of each id, -1 where the id is not tracked."""
        if self.size == 0:
            return np.full(len(ids), -1, np.int64)
        return self._table.lookup(np.ascontiguousarray(ids, dtype=np.int64))

    def insert(self, ids: np.ndarray) -> np.ndarray:
        """Track new, distinct, untracked ids; returns their entries (count 0, row -1)."""
        n = len(ids)
        if n == 0:
            return np.zeros(0, np.int64)
        self._reserve(self.size + n)
        entries = np.arange(self.size, self.size + n, dtype=np.int64)
        self.ids[entries] = ids
        self.count[entries] = 0
        self.last_seen[entries] = np.iinfo(np.int64).min
        self.row[entries] = -1
        self._table.map_keys_to_values(np.ascontiguousarray(ids, dtype=np.int64), entries)
        self.size += n
        return entries

    def compact(self, keep: np.ndarray) -> None:
        """Keep only the entries where ``keep`` (shape (size,)) is True; rebuild the map."""
        cols = {name: getattr(self, name)[: self.size][keep] for name in self.COLUMNS}
        self.load(cols)

    def load(self, cols: dict[str, np.ndarray]) -> None:
        """Replace every entry with ``cols`` (the arrays of ``columns()``)."""
        n = len(cols["ids"])
        cap = max(1024, 1 << int(np.ceil(np.log2(max(n, 1) * 1.25 + 1))))
        IdIndex.__init__(self, cap)
        for name in self.COLUMNS:
            getattr(self, name)[:n] = cols[name]
        self.size = n
        if n:
            self._table.map_keys_to_values(self.ids[:n].copy(), np.arange(n, dtype=np.int64))

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[: self.size].copy() for name in self.COLUMNS}

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in self.COLUMNS) + int(self._table.sizeof())

    def _reserve(self, n: int) -> None:
        cap = len(self.ids)
        if n <= cap:
            return
        while cap < n:
            cap *= 2
        for name, dtype in self.COLUMNS.items():
            old = getattr(self, name)
            new = np.full(cap, -1, dtype) if name == "row" else np.zeros(cap, dtype)
            new[: len(old)] = old
            setattr(self, name, new)
