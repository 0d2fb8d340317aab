"""What serving reads: one whole model version at a time, never half of one.

A ``VersionedView`` sits on top of a ``RowStore``. The applier stages a version's rows in
memory until every part of it arrived (``sync.applier``), then *commits* them as one
immutable ``Overlay``: a new ``Snapshot`` (version + the overlays above the store) replaces
the current one under a short lock. Readers pin a snapshot and read through it:

    with view.snapshot() as snap:            # pinned: later commits do not change it
        rows, found = snap.lookup("emb", ids, dim=16)
        version = snap.version               # the version those rows belong to

Only afterwards does ``flush`` write the overlay into the store (possibly slow: RocksDB),
outside any lock readers take. It first waits until no reader is pinned to a snapshot older
than the overlay (those few reads take milliseconds), because the store's rows for the
overlay's ids are about to change; readers pinned to newer snapshots read those ids from
the overlay itself, so what they see does not change while the store is written. Then the
overlay is dropped from the current snapshot (same version). Predictions therefore never
wait for an apply, and never mix two versions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from sync.store import RowStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableOverlay:
    """Rows of one table in one commit: ``ids`` sorted and unique; ``live[i]`` False means
    ``ids[i]`` is a tombstone. ``rows`` holds the live rows only (``row_of[i]`` indexes it)."""

    ids: np.ndarray  # (n,) int64, sorted
    live: np.ndarray  # (n,) bool
    row_of: np.ndarray  # (n,) int64 index into rows (-1 for tombstones)
    rows: np.ndarray  # (live, dim) float32

    @staticmethod
    def build(ids: np.ndarray, rows: np.ndarray, tombstones: np.ndarray) -> TableOverlay:
        """Upserts (``ids``, ``rows``) and ``tombstones`` of one version. An id listed twice
        keeps its last upsert; an id both upserted and tombstoned keeps its row (the wire
        never sends both; this is what the per-row versioned store would keep)."""
        ids = np.asarray(ids, np.int64)
        tombstones = np.asarray(tombstones, np.int64)
        all_ids = np.concatenate([tombstones, ids])
        live = np.concatenate([np.zeros(len(tombstones), bool), np.ones(len(ids), bool)])
        src = np.concatenate([np.full(len(tombstones), -1), np.arange(len(ids))])
        rev = all_ids[::-1]
        uniq, first = np.unique(rev, return_index=True)  # sorted ids, last occurrence
        keep = len(all_ids) - 1 - first
        live, src = live[keep], src[keep]
        row_of = np.full(len(uniq), -1, np.int64)
        row_of[live] = np.arange(int(live.sum()))
        dim = rows.shape[1] if rows.ndim == 2 else 0
        kept_rows = np.ascontiguousarray(rows[src[live]], np.float32) if live.any() else \
            np.zeros((0, dim), np.float32)
        return TableOverlay(uniq, live, row_of, kept_rows)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, keep: np.ndarray) -> TableOverlay:
        """The entries where ``keep`` (n,) is True."""
        live = self.live[keep]
        row_of = np.full(int(keep.sum()), -1, np.int64)
        row_of[live] = np.arange(int(live.sum()))
        return TableOverlay(self.ids[keep], live, row_of,
                            self.rows[self.row_of[keep & self.live]])

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask, position in ``self.ids``) of ``ids``."""
        if not len(self.ids) or not len(ids):
            return np.zeros(len(ids), bool), np.zeros(len(ids), np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, len(self.ids) - 1)
        return self.ids[pos] == ids, pos

    def live_ids(self) -> np.ndarray:
        return self.ids[self.live]

    def dead_ids(self) -> np.ndarray:
        return self.ids[~self.live]


@dataclass(frozen=True)
class Overlay:
    """One committed version's rows (all written with row version ``version``)."""

    version: int
    tables: dict[str, TableOverlay]
    seq: int = 0  # the snapshot sequence number that made it visible

    @property
    def rows(self) -> int:
        return sum(len(t) for t in self.tables.values())


@dataclass(frozen=True)
class Snapshot:
    """An immutable view: the store plus ``overlays`` (oldest first), at ``version``."""

    version: int | None
    created_ms: int
    overlays: tuple[Overlay, ...]
    seq: int
    store: RowStore = field(repr=False)

    def lookup(self, table: str, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float32 rows and (n,) found mask, as of ``version`` (zeros if absent)."""
        ids = np.asarray(ids, np.int64)
        rows, found = self.store.lookup(table, ids, dim)
        for ov in self.overlays:
            t = ov.tables.get(table)
            if t is None:
                continue
            hit, pos = t.locate(ids)
            if not hit.any():
                continue
            p = pos[hit]
            live = t.live[p]
            idx = np.flatnonzero(hit)
            rows[idx[~live]] = 0.0
            found[idx[~live]] = False
            if live.any():
                rows[idx[live]] = t.rows[t.row_of[p[live]]]
                found[idx[live]] = True
        return rows, found


class VersionedView:
    """Atomic version switching over a ``RowStore`` (see the module docstring). One writer
    (the thread that applies deltas), any number of readers."""

    def __init__(self, store: RowStore) -> None:
        self.store = store
        self._lock = threading.Condition(threading.Lock())
        self._pins: Counter[int] = Counter()  # snapshot seq -> readers pinned to it
        self._seq = 0
        self._current = Snapshot(None, 0, (), 0, store)
        self.flush_wait_s = 0.0  # total time flushes waited for old readers

    # -- readers -----------------------------------------------------------------------
    @property
    def version(self) -> int | None:
        return self._current.version

    @property
    def created_ms(self) -> int:
        return self._current.created_ms

    def current(self) -> Snapshot:
        """The latest snapshot, unpinned: fine for its version, not for reading rows while
        versions are applied (use ``snapshot()``)."""
        return self._current

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """Pin the current version for the duration of the ``with`` block."""
        with self._lock:
            snap = self._current
            self._pins[snap.seq] += 1
        try:
            yield snap
        finally:
            with self._lock:
                self._pins[snap.seq] -= 1
                if not self._pins[snap.seq]:
                    del self._pins[snap.seq]
                self._lock.notify_all()

    # -- the writer --------------------------------------------------------------------
    def reset(self, version: int | None, created_ms: int = 0) -> None:
        """The store alone holds ``version`` (after loading a dump)."""
        with self._lock:
            self._seq += 1
            self._current = Snapshot(version, created_ms, (), self._seq, self.store)

    def row_versions(self, table: str, ids: np.ndarray) -> np.ndarray:
        """(n,) int64: the version of each id's current row or tombstone, -1 if none."""
        ids = np.asarray(ids, np.int64)
        fn = getattr(self.store, "row_versions", None)
        if fn is not None:
            out = np.asarray(fn(table, ids), np.int64)
        else:
            out = np.array([-1 if v is None else v for v in
                            (self.store.row_version(table, i) for i in ids.tolist())], np.int64)
        for ov in self._current.overlays:
            t = ov.tables.get(table)
            if t is not None:
                hit, _ = t.locate(ids)
                out[hit] = np.maximum(out[hit], ov.version)
        return out

    def commit(self, overlay_version: int, tables: dict[str, TableOverlay], version: int,
               created_ms: int) -> Overlay:
        """Make ``tables`` (rows of ``overlay_version``) visible, the view now at ``version``:
        one pointer swap under the lock."""
        with self._lock:
            self._seq += 1
            ov = Overlay(overlay_version, tables, self._seq)
            cur = self._current
            self._current = Snapshot(version, created_ms, cur.overlays + (ov,), self._seq,
                                     self.store)
        return ov

    def flush(self) -> tuple[int, int]:
        """Write every committed overlay into the store, oldest first; (rows, tombstones)
        the store took (rows it already held at that version or newer are not counted)."""
        rows = tombs = 0
        while self._current.overlays:
            ov = self._current.overlays[0]
            self._wait_for_readers_older_than(ov.seq)
            for table, t in ov.tables.items():
                live = t.live_ids()
                if len(live):
                    rows += self.store.write_rows(table, live, t.rows, ov.version)
                dead = t.dead_ids()
                if len(dead):
                    tombs += self.store.write_tombstones(table, dead, ov.version)
            with self._lock:
                cur = self._current
                self._seq += 1
                self._current = Snapshot(cur.version, cur.created_ms,
                                         tuple(o for o in cur.overlays if o is not ov),
                                         self._seq, self.store)
        return rows, tombs

    def _wait_for_readers_older_than(self, seq: int) -> None:
        start = time.monotonic()
        warned = False
        with self._lock:
            while any(s < seq for s in self._pins):
                self._lock.wait(timeout=1.0)
                if not warned and time.monotonic() - start > 10.0:
                    warned = True
                    log.warning("flush waiting >10 s for readers pinned to old versions "
                                "(a reader that never leaves view.snapshot()?)")
        self.flush_wait_s += time.monotonic() - start


def overlay_tables(parts: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]
                   ) -> dict[str, TableOverlay]:
    """Merge staged parts ``(table, ids, rows (n, dim) float32, tombstones)`` per table."""
    by_table: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for table, ids, rows, tombs in parts:
        by_table.setdefault(table, []).append((ids, rows, tombs))
    out = {}
    for table, items in by_table.items():
        dims = {r.shape[1] for _, r, _ in items if len(r)}
        dim = dims.pop() if dims else 0
        ids = np.concatenate([i for i, _, _ in items]) if items else np.zeros(0, np.int64)
        rows = np.concatenate([r.reshape(len(r), dim) for _, r, _ in items]) if len(ids) else \
            np.zeros((0, dim), np.float32)
        tombs = np.concatenate([t for _, _, t in items])
        out[table] = TableOverlay.build(ids, rows, tombs)
    return out
