"""Apply SparseDelta messages to a RowStore: atomic per version, idempotent, gap-aware.

Pure logic, no Kafka: the consumer feeds it decoded messages in whatever order Kafka (or a
test) delivers them. A version becomes visible *whole*: its messages are staged in memory
until every part (``part``/``num_parts``) of every shard this applier owns has arrived,
then committed in one pointer swap of the ``sync.view.VersionedView`` readers go through,
then written into the store (see ``sync.view``). Per row the store keeps only the newest
version (see ``sync.store``), so duplicates and late, older versions never overwrite newer
rows.

Per shard it tracks which versions it has seen complete and reports a *gap* when a version
completes while earlier ones never did — those rows may be stale until the next update of
each row, or until a re-bootstrap. A version that was still incomplete when a newer one
completed (its publisher died mid-push, or a part of it was dead-lettered) is *abandoned*:
never shown, counted (``stats.abandoned_versions``) and listed (``incomplete``); should its
missing parts still arrive it is applied then, like any late version.

    applier = DeltaApplier(store, model="ctr")
    applier.start_at(dump_version, shards=range(4))   # after loading a dump
    result = applier.apply(delta)                     # ApplyResult(rows=..., committed=...)
    with applier.view.snapshot() as snap:             # one version, pinned
        rows, found = snap.lookup("emb", ids, dim=16)
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from schemas import SparseDelta
from streamtrain.clock import WALL, Clock
from sync.delta_builder import decode_values
from sync.store import RowStore
from sync.view import VersionedView, overlay_tables

log = logging.getLogger(__name__)
_KEEP_DONE = 4096  # completed versions remembered per shard, to tell duplicates from late ones
_MAX_MISSING = 100_000
_MAX_ABANDONED_ROWS = 2_000_000  # staged rows kept for abandoned versions, should they complete
_KEEP_INCOMPLETE = 1000  # abandoned versions listed


@dataclass
class ApplyResult:
    rows: int = 0  # rows written by the commit this message triggered (0 while staging)
    skipped: int = 0  # rows and tombstones ignored: the store already held that version or newer
    tombstones: int = 0
    duplicate: bool = False  # the same (version, shard, part) was seen before
    conflict: bool = False  # ... and its content differs (a reused version number)
    completed: bool = False  # this message completed its (version, shard)
    committed: int | None = None  # the version this message made visible (or applied late)
    visible_ms: int | None = None  # when that commit became visible to readers (clock)


@dataclass
class ShardState:
    version: int | None = None  # highest version seen complete on this shard
    pending: dict[int, dict[int, int]] = field(default_factory=dict)  # version -> part -> digest
    done: set[int] = field(default_factory=set)
    done_parts: dict[int, dict[int, int]] = field(default_factory=dict)  # digests of done versions
    conflicted: set[int] = field(default_factory=set)  # versions already reported as reused
    missing: set[int] = field(default_factory=set)
    created_ms: int = 0  # created_ms of `version`
    base: int = -1  # everything <= base came from a dump: older messages are ignored whole


@dataclass
class ApplierStats:
    messages: int = 0
    rows_applied: int = 0
    rows_skipped: int = 0
    tombstones_applied: int = 0
    duplicates: int = 0  # messages seen before (ignored)
    conflicting_duplicates: int = 0  # of which the content differed: a version number reused
    late_messages: int = 0  # older than the shard's version but never seen: applied per row
    stale_messages: int = 0  # not newer than the dump this replica bootstrapped from: ignored
    gaps: int = 0  # times a version completed with earlier ones missing
    other_model: int = 0
    versions_committed: int = 0  # versions made visible (late ones included)
    abandoned_versions: int = 0  # versions still incomplete when a newer one completed


@dataclass
class _Staged:
    """One version being assembled, across the owned shards."""

    created_ms: int = 0
    parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    entries: int = 0  # ids + tombstones staged
    shards_done: set[int] = field(default_factory=set)
    since: float = field(default_factory=time.monotonic)
    abandoned: bool = False


def _digest(d: SparseDelta) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{d.table}\0{d.dim}\0{d.dtype}\0{d.num_parts}\0".encode())
    h.update(np.asarray(d.ids, np.int64).tobytes())
    h.update(b"\0")
    h.update(d.values)
    h.update(b"\0")
    h.update(np.asarray(d.tombstones, np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")


class DeltaApplier:
    """Per-shard version bookkeeping, staging and atomic commits over a per-row versioned
    store."""

    def __init__(self, store: RowStore, model: str,
                 on_gap: Callable[[int, list[int]], None] | None = None):
        self.store = store
        self.model = model
        self.view = VersionedView(store)
        self.shards: dict[int, ShardState] = {}
        self.owned: set[int] | None = None  # None: every shard the messages name
        self.stats = ApplierStats()
        self.on_gap = on_gap
        self.clock: Clock = WALL  # stamps ApplyResult.visible_ms (a test may set its own)
        self._staged: dict[int, _Staged] = {}
        self._incomplete: set[int] = set()  # abandoned and still incomplete
        self._dropped: set[int] = set()  # abandoned versions whose staged rows were let go

    def start_at(self, version: int | None, shards: Iterable[int], created_ms: int = 0) -> None:
        """Everything up to ``version`` is in the store (a dump was loaded); this applier
        owns ``shards`` (a version is visible once complete on all of them)."""
        shards = list(shards)
        self.owned = set(shards)
        for s in shards:
            self.shards[s] = ShardState(version=version, created_ms=created_ms,
                                        base=-1 if version is None else version)
        self.view.reset(version, created_ms)

    @property
    def version(self) -> int | None:
        """The visible version: every part of every owned shard of it was applied (None
        before any)."""
        return self.view.version

    @property
    def created_ms(self) -> int:
        """When the trainer published the visible version."""
        return self.view.created_ms

    @property
    def missing(self) -> dict[int, list[int]]:
        return {s: sorted(st.missing) for s, st in self.shards.items() if st.missing}

    @property
    def incomplete(self) -> list[int]:
        """Abandoned versions (a newer one completed first) still incomplete: never shown."""
        return sorted(self._incomplete)

    def pending(self) -> dict[int, dict[str, object]]:
        """Versions newer than the visible one, still being assembled: version ->
        {shards_done, entries, age_s}."""
        v0 = self.version
        now = time.monotonic()
        return {v: {"shards_done": sorted(s.shards_done), "entries": s.entries,
                    "age_s": round(now - s.since, 3)}
                for v, s in sorted(dict(self._staged).items())  # copy: called from other threads
                if v0 is None or v > v0}

    # -- one message ---------------------------------------------------------------------
    def apply(self, delta: SparseDelta) -> ApplyResult:
        n_entries = len(delta.ids) + len(delta.tombstones)
        if delta.model != self.model:
            self.stats.other_model += 1
            return ApplyResult(skipped=n_entries)
        self.stats.messages += 1
        st = self.shards.setdefault(delta.shard, ShardState())
        v = delta.version
        if v <= st.base:  # the dump holds this version and may have dropped rows it evicted
            self.stats.stale_messages += 1
            return ApplyResult(skipped=n_entries)
        digest = _digest(delta)
        seen = st.pending.get(v) if v in st.pending else st.done_parts.get(v)
        if v in st.done or (seen is not None and delta.part in seen):
            return self._duplicate(delta, st, seen, digest, n_entries)
        if v in self._dropped:
            self.stats.stale_messages += 1
            return ApplyResult(skipped=n_entries)
        if st.version is not None and v <= st.version:
            self.stats.late_messages += 1
        staged = self._staged.get(v)
        if staged is None:
            staged = self._staged[v] = _Staged(created_ms=delta.created_ms)
        if len(delta.ids) or len(delta.tombstones):  # lists, or arrays (sync.delta_wire)
            staged.parts.append((delta.table, np.asarray(delta.ids, np.int64),
                                 decode_values(delta), np.asarray(delta.tombstones, np.int64)))
            staged.entries += n_entries
        parts = st.pending.setdefault(v, {})
        parts[delta.part] = digest
        result = ApplyResult()
        if len(parts) >= delta.num_parts:
            del st.pending[v]
            self._complete(delta.shard, st, v, delta.created_ms, parts)
            result.completed = True
            staged.shards_done.add(delta.shard)
            owned = self.owned if self.owned is not None else range(delta.num_shards)
            if all(s in staged.shards_done for s in owned):
                self._commit(v, result)
        return result

    def _duplicate(self, delta: SparseDelta, st: ShardState, seen: dict[int, int] | None,
                   digest: int, n_entries: int) -> ApplyResult:
        self.stats.duplicates += 1
        conflict = seen is not None and seen.get(delta.part) != digest
        if conflict:
            self.stats.conflicting_duplicates += 1
            if delta.version not in st.conflicted:
                st.conflicted.add(delta.version)
                log.warning("model=%s shard=%d version=%d part=%d arrived again with different "
                            "content: a publisher reused this version number; the copy is "
                            "ignored (rows it holds stay stale until updated again)",
                            self.model, delta.shard, delta.version, delta.part)
        return ApplyResult(skipped=n_entries, duplicate=True, conflict=conflict)

    # -- versions ------------------------------------------------------------------------
    def _commit(self, v: int, result: ApplyResult) -> None:
        staged = self._staged.pop(v)
        tables = overlay_tables(staged.parts)
        visible = self.view.version
        late = visible is not None and v <= visible
        if late:  # an older version completing now: only rows nothing newer has written
            for name, t in list(tables.items()):
                tables[name] = t.select(self.view.row_versions(name, t.ids) < v)
        self.view.commit(v, tables, visible if late and visible is not None else v,
                         self.view.created_ms if late else staged.created_ms)
        result.visible_ms = self.clock.now_ms()  # readers see it from here; flush comes after
        rows, tombs = self.view.flush()
        result.rows, result.tombstones = rows, tombs
        result.skipped = staged.entries - rows - tombs
        result.committed = v
        self.stats.versions_committed += 1
        self.stats.rows_applied += rows
        self.stats.tombstones_applied += tombs
        self.stats.rows_skipped += result.skipped
        if late:
            if v in self._incomplete:
                self._incomplete.discard(v)
                log.info("model=%s abandoned version=%d completed late; applied row by row",
                         self.model, v)
            return
        for u, s in self._staged.items():
            if u < v and not s.abandoned:
                s.abandoned = True
                self.stats.abandoned_versions += 1
                self._incomplete.add(u)
                log.warning("model=%s version=%d abandoned: still incomplete (complete on shards "
                            "%s of %s, %d rows staged) when version=%d completed; it is never "
                            "shown (its publisher died mid-push or a part was lost)", self.model,
                            u, sorted(s.shards_done), sorted(self.owned or ()), s.entries, v)
        self._trim(v)

    def _trim(self, visible: int) -> None:
        abandoned = sorted((u for u, s in self._staged.items() if s.abandoned),
                           reverse=True)
        kept = 0
        for u in abandoned:
            kept += self._staged[u].entries
            if kept > _MAX_ABANDONED_ROWS or u < visible - _KEEP_DONE:
                del self._staged[u]
                self._dropped.add(u)
        if len(self._dropped) > _KEEP_INCOMPLETE:
            self._dropped = set(sorted(self._dropped)[-_KEEP_INCOMPLETE:])
        if len(self._incomplete) > _KEEP_INCOMPLETE:
            self._incomplete = set(sorted(self._incomplete)[-_KEEP_INCOMPLETE:])

    def _complete(self, shard: int, st: ShardState, v: int, created_ms: int,
                  parts: dict[int, int]) -> None:
        st.done.add(v)
        st.done_parts[v] = parts
        if len(st.done) > _KEEP_DONE:
            st.done = set(sorted(st.done)[-_KEEP_DONE // 2:])
            st.done_parts = {u: p for u, p in st.done_parts.items() if u in st.done}
            st.conflicted = {u for u in st.conflicted if u in st.done}
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
