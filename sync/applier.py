"""Apply SparseDelta messages to a RowStore: idempotent, version-ordered, gap-aware.

Pure logic, no Kafka: the consumer feeds it decoded messages in whatever order Kafka (or a
test) delivers them. Per row, the store keeps only the newest version (see ``sync.store``).
Per shard, the applier tracks which versions it has seen complete (all ``num_parts``
messages) and reports a *gap* when a version completes while earlier ones never did —
those rows may be stale until the next update of each row, or until a re-bootstrap.

    applier = DeltaApplier(store, model="ctr")
    applier.start_at(dump_version, shards=range(4))   # after loading a dump
    result = applier.apply(delta)                     # ApplyResult(rows=..., skipped=...)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from schemas import SparseDelta
from sync.delta_builder import decode_values
from sync.store import RowStore

log = logging.getLogger(__name__)
_KEEP_DONE = 4096  # completed versions remembered per shard, to tell duplicates from late ones
_MAX_MISSING = 100_000


@dataclass
class ApplyResult:
    rows: int = 0  # rows written (newer than what the store held)
    skipped: int = 0  # rows (and tombstones) ignored: the store already held that version or newer
    tombstones: int = 0
    duplicate: bool = False  # the very same (version, shard, part) was applied before
    completed: bool = False  # this message completed its (version, shard)


@dataclass
class ShardState:
    version: int | None = None  # highest version seen complete on this shard
    pending: dict[int, set[int]] = field(default_factory=dict)  # version -> parts seen
    done: set[int] = field(default_factory=set)
    missing: set[int] = field(default_factory=set)
    created_ms: int = 0  # created_ms of `version`
    base: int = -1  # everything <= base came from a dump: older messages are ignored whole


@dataclass
class ApplierStats:
    messages: int = 0
    rows_applied: int = 0
    rows_skipped: int = 0
    tombstones_applied: int = 0
    duplicates: int = 0
    late_messages: int = 0  # older than the shard's version but never seen: applied per row
    stale_messages: int = 0  # not newer than the dump this replica bootstrapped from: ignored
    gaps: int = 0  # times a version completed with earlier ones missing
    other_model: int = 0


class DeltaApplier:
    """Per-shard version bookkeeping on top of a per-row versioned store."""

    def __init__(self, store: RowStore, model: str,
                 on_gap: Callable[[int, list[int]], None] | None = None):
        self.store = store
        self.model = model
        self.shards: dict[int, ShardState] = {}
        self.stats = ApplierStats()
        self.on_gap = on_gap

    def start_at(self, version: int | None, shards: Iterable[int], created_ms: int = 0) -> None:
        """Everything up to ``version`` is in the store (a dump was loaded)."""
        for s in shards:
            self.shards[s] = ShardState(version=version, created_ms=created_ms,
                                        base=-1 if version is None else version)

    @property
    def version(self) -> int | None:
        """The version every tracked shard has reached (min over shards), None before any."""
        vs = [st.version for st in self.shards.values()]
        return None if not vs or None in vs else min(vs)

    @property
    def created_ms(self) -> int:
        """When the trainer published the applied version (oldest over shards)."""
        return min((st.created_ms for st in self.shards.values()), default=0)

    @property
    def missing(self) -> dict[int, list[int]]:
        return {s: sorted(st.missing) for s, st in self.shards.items() if st.missing}

    def apply(self, delta: SparseDelta) -> ApplyResult:
        if delta.model != self.model:
            self.stats.other_model += 1
            return ApplyResult(skipped=len(delta.ids) + len(delta.tombstones))
        self.stats.messages += 1
        st = self.shards.setdefault(delta.shard, ShardState())
        v = delta.version
        if v <= st.base:  # the dump holds this version and may have dropped rows it evicted
            self.stats.stale_messages += 1
            return ApplyResult(skipped=len(delta.ids) + len(delta.tombstones))
        if v in st.done or delta.part in st.pending.get(v, ()):
            self.stats.duplicates += 1
            return ApplyResult(skipped=len(delta.ids) + len(delta.tombstones), duplicate=True)
        if st.version is not None and v <= st.version:
            self.stats.late_messages += 1
        result = self._write(delta)
        parts = st.pending.setdefault(v, set())
        parts.add(delta.part)
        if len(parts) >= delta.num_parts:
            del st.pending[v]
            self._complete(delta.shard, st, v, delta.created_ms)
            result.completed = True
        return result

    def _write(self, delta: SparseDelta) -> ApplyResult:
        res = ApplyResult()
        if delta.ids:
            ids = np.asarray(delta.ids, np.int64)
            res.rows = self.store.write_rows(delta.table, ids, decode_values(delta), delta.version)
            res.skipped += len(ids) - res.rows
        if delta.tombstones:
            n = self.store.write_tombstones(delta.table, np.asarray(delta.tombstones, np.int64),
                                            delta.version)
            res.tombstones = n
            res.skipped += len(delta.tombstones) - n
        self.stats.rows_applied += res.rows
        self.stats.rows_skipped += res.skipped
        self.stats.tombstones_applied += res.tombstones
        return res

    def _complete(self, shard: int, st: ShardState, v: int, created_ms: int) -> None:
        st.done.add(v)
        if len(st.done) > _KEEP_DONE:
            st.done = set(sorted(st.done)[-_KEEP_DONE // 2:])
        st.missing.discard(v)
        if st.version is None or v > st.version:
            if st.version is not None and v > st.version + 1:
                lost = list(range(st.version + 1, min(v, st.version + 1 + _MAX_MISSING)))
                lost = [x for x in lost if x not in st.done]
                if lost:
                    st.missing.update(lost)
                    self.stats.gaps += 1
                    log.warning("gap model=%s shard=%d missing_versions=%s..%s applied_version=%d",
                                self.model, shard, lost[0], lost[-1], v)
                    if self.on_gap:
                        self.on_gap(shard, lost)
            st.version, st.created_ms = v, created_ms
        for old in [p for p in st.pending if p < v - _KEEP_DONE]:
            del st.pending[old]
