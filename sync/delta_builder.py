"""Turn the trainer's touched rows into SparseDelta messages (pure: no Kafka, no clock).

Wire contract of one push with version ``v`` (docs/sync.md has the reader's view):

- every shard (= partition of ``model-deltas``) gets at least one message for ``v``: a shard
  whose ids did not change gets one empty *heartbeat* (``table=""``, no ids), so a replica
  sees every version on every partition and can tell a gap from a quiet shard;
- ``part``/``num_parts`` count the messages of ``(model, v, shard)`` across all tables,
  so a replica knows when it has the whole version of its shard;
- each message stays under ``max_message_bytes``: large tables are split by rows;
- ``tombstones`` are ids the trainer evicted; an id both updated and evicted since the last
  push keeps its row (the trainer gathered its values, so it was live at collect time).

    deltas = build_deltas("ctr", 7, updates, num_shards=4, dtype="fp16",
                          max_message_bytes=900_000, now_ms=t)   # [(shard, SparseDelta), ...]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from schemas import SparseDelta
from sync.sharding import shard_of

ITEMSIZE = {"fp32": 4, "fp16": 2}
NP_DTYPE = {"fp32": "<f4", "fp16": "<f2"}
_ID_BYTES = 10  # worst case of an Avro zig-zag varint long
_OVERHEAD = 256  # header, fingerprint, strings and counters of one message


class TableRows(Protocol):
    """What the trainer hands over (``trainer.updates.TableUpdate``); read-only."""

    @property
    def table(self) -> str: ...
    @property
    def ids(self) -> np.ndarray: ...  # (n,) int64
    @property
    def values(self) -> np.ndarray: ...  # (n, dim) float32
    @property
    def evicted(self) -> np.ndarray: ...  # (m,) int64


def _last_unique(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated ids keeping the last row of each (one row per id and version)."""
    rev = ids[::-1]
    uniq, idx = np.unique(rev, return_index=True)
    if len(uniq) == len(ids):
        return ids, values
    keep = np.sort(len(ids) - 1 - idx)
    return ids[keep], values[keep]


def _chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def table_messages(model: str, version: int, shard: int, num_shards: int, now_ms: int,
                   table: str, ids: np.ndarray, values: np.ndarray, tombstones: np.ndarray,
                   dtype: str, max_message_bytes: int,
                   ids_as_arrays: bool = False) -> list[SparseDelta]:
    """Messages of one table for one shard (part numbers are filled in by the caller).
    ``ids_as_arrays``: ids and tombstones stay int64 arrays (for ``sync.delta_wire``)."""
    ids_of: Any = (lambda a: a) if ids_as_arrays else (lambda a: a.tolist())
    dim = int(values.shape[1]) if values.ndim == 2 else 0
    budget = max_message_bytes - _OVERHEAD - len(model.encode()) - len(table.encode())
    per_msg = max(1, budget // (dim * ITEMSIZE[dtype] + _ID_BYTES))
    per_tomb = max(1, budget // _ID_BYTES)
    payload = np.ascontiguousarray(values, dtype=NP_DTYPE[dtype])
    out = []
    for lo, hi in _chunks(len(ids), per_msg):
        out.append(SparseDelta(model, table, version, shard, num_shards, now_ms, dim,
                               ids_of(ids[lo:hi]), payload[lo:hi].tobytes(), ids_of(ids[:0]), dtype))
    for lo, hi in _chunks(len(tombstones), per_tomb):
        out.append(SparseDelta(model, table, version, shard, num_shards, now_ms, dim,
                               ids_of(tombstones[:0]), b"", ids_of(tombstones[lo:hi]), dtype))
    return out


def build_deltas(model: str, version: int, updates: Sequence[TableRows], num_shards: int,
                 dtype: str, max_message_bytes: int, now_ms: int,
                 ids_as_arrays: bool = False) -> list[tuple[int, SparseDelta]]:
    """All messages of one push, as (shard, message), every shard covered. With
    ``ids_as_arrays`` the ids and tombstones of each message are int64 arrays instead of
    lists (what ``sync.delta_wire.DeltaWire.encode`` reads fastest)."""
    per_shard: list[list[SparseDelta]] = [[] for _ in range(num_shards)]
    for upd in updates:
        ids = np.asarray(upd.ids, dtype=np.int64)
        values = np.asarray(upd.values, dtype=np.float32)
        if values.ndim != 2:
            values = values.reshape(len(ids), -1) if len(ids) else np.zeros((0, 0), np.float32)
        ids, values = _last_unique(ids, values)
        evicted = np.unique(np.asarray(upd.evicted, dtype=np.int64))
        if len(evicted):  # (isin sorts ids even for no evictions)
            evicted = evicted[~np.isin(evicted, ids)]
        row_shard = shard_of(ids, num_shards)
        tomb_shard = shard_of(evicted, num_shards)
        order = np.argsort(row_shard, kind="stable")
        bounds = np.searchsorted(row_shard[order], np.arange(num_shards + 1))
        for s in range(num_shards):
            sel = order[bounds[s]:bounds[s + 1]]
            tomb = evicted[tomb_shard == s]
            if len(sel) == 0 and len(tomb) == 0:
                continue
            per_shard[s].extend(table_messages(model, version, s, num_shards, now_ms, upd.table,
                                               ids[sel], values[sel], tomb, dtype,
                                               max_message_bytes, ids_as_arrays))
    out: list[tuple[int, SparseDelta]] = []
    for s, msgs in enumerate(per_shard):
        if not msgs:  # heartbeat: this shard is at `version` too
            msgs = [SparseDelta(model, "", version, s, num_shards, now_ms, 0, [], b"", [], dtype)]
        for i, msg in enumerate(msgs):
            msg.part, msg.num_parts = i, len(msgs)
            out.append((s, msg))
    return out


def decode_values(delta: SparseDelta) -> np.ndarray:
    """(n, dim) float32 rows of a delta (fp16 widened)."""
    n = len(delta.ids)
    if n == 0:
        return np.zeros((0, delta.dim), np.float32)
    return np.frombuffer(delta.values, dtype=NP_DTYPE[delta.dtype]).reshape(n, delta.dim) \
        .astype(np.float32)


def check_delta(delta: SparseDelta) -> str | None:
    """Why a decoded delta is structurally unusable, or None."""
    if delta.dtype not in ITEMSIZE:
        return f"unknown dtype {delta.dtype!r}"
    if not (0 <= delta.shard < max(1, delta.num_shards)):
        return f"shard {delta.shard} outside num_shards {delta.num_shards}"
    if not (0 <= delta.part < max(1, delta.num_parts)):
        return f"part {delta.part} outside num_parts {delta.num_parts}"
    if delta.version < 0 or delta.dim < 0:
        return f"negative version {delta.version} or dim {delta.dim}"
    want = len(delta.ids) * delta.dim * ITEMSIZE[delta.dtype]
    if len(delta.values) != want:
        return f"values hold {len(delta.values)} bytes, {len(delta.ids)} ids x dim {delta.dim} " \
               f"{delta.dtype} need {want}"
    return None
