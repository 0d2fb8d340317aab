"""Versioned row stores for serving: every row remembers the version that wrote it.

A write of version ``v`` lands only on rows whose stored version is older than ``v``, so
applying deltas is idempotent (a duplicate has the same version) and order-insensitive (a
late, older delta never overwrites a newer row). A tombstone is a write too: it records
the version of the eviction, so an older delta cannot resurrect an evicted row.

Two implementations share this contract (``tests/sync/test_store_contract.py``):
``RocksRowStore`` (rocksdict on disk: what a replica uses) and ``MemoryRowStore`` (tests).

    store = RocksRowStore("/var/lib/replica/rows")
    store.write_rows("user", ids, values, version=7)       # (n,) int64, (n, dim) float32
    rows, found = store.lookup("user", ids, dim=16)        # (n, dim) float32, (n,) bool
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sync.errors import SyncError

_META = b"\x01meta\x00"  # meta keys sort apart from row keys (which start with the table name)
_MAXV = b"\x01maxv\x00"  # + table: the newest version written to the table (8 bytes big-endian)


def _vbytes(version: int) -> bytes:
    return int(version).to_bytes(8, "big")  # big-endian: byte order == numeric order


class RowStore(Protocol):
    def write_rows(self, table: str, ids: np.ndarray, values: np.ndarray, version: int) -> int: ...
    def write_tombstones(self, table: str, ids: np.ndarray, version: int) -> int: ...
    def lookup(self, table: str, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]: ...
    def row_version(self, table: str, id_: int) -> int | None: ...
    # optional: def row_versions(self, table, ids) -> (n,) int64, -1 where absent
    def rows(self, table: str) -> Iterator[tuple[int, np.ndarray]]: ...
    def set_meta(self, key: str, value: Any) -> None: ...
    def get_meta(self, key: str, default: Any = None) -> Any: ...
    def close(self) -> None: ...


class MemoryRowStore:
    """A dict per table: id -> (version, row or None for a tombstone)."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[int, tuple[int, np.ndarray | None]]] = {}
        self._meta: dict[str, object] = {}

    def _write(self, table: str, ids: np.ndarray, rows: np.ndarray | None, version: int) -> int:
        t = self._tables.setdefault(table, {})
        n = 0
        for i, id_ in enumerate(np.asarray(ids, np.int64).tolist()):
            old = t.get(id_)
            if old is None or old[0] < version:
                t[id_] = (version, None if rows is None else np.array(rows[i], np.float32))
                n += 1
        return n

    def write_rows(self, table: str, ids: np.ndarray, values: np.ndarray, version: int) -> int:
        return self._write(table, ids, np.asarray(values, np.float32), version)

    def write_tombstones(self, table: str, ids: np.ndarray, version: int) -> int:
        return self._write(table, ids, None, version)

    def lookup(self, table: str, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        t = self._tables.get(table, {})
        out = np.zeros((len(ids), dim), np.float32)
        found = np.zeros(len(ids), bool)
        for i, id_ in enumerate(np.asarray(ids, np.int64).tolist()):
            entry = t.get(id_)
            if entry is not None and entry[1] is not None:
                out[i], found[i] = entry[1], True
        return out, found

    def row_version(self, table: str, id_: int) -> int | None:
        entry = self._tables.get(table, {}).get(int(id_))
        return None if entry is None else entry[0]

    def row_versions(self, table: str, ids: np.ndarray) -> np.ndarray:
        """(n,) int64 version of each id's row or tombstone, -1 where the store has none."""
        t = self._tables.get(table, {})
        return np.array([t[i][0] if i in t else -1 for i in np.asarray(ids, np.int64).tolist()],
                        np.int64)

    def rows(self, table: str) -> Iterator[tuple[int, np.ndarray]]:
        for id_, (_, row) in sorted(self._tables.get(table, {}).items()):
            if row is not None:
                yield id_, row

    def set_meta(self, key: str, value: Any) -> None:
        self._meta[key] = json.loads(json.dumps(value))

    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._meta.get(key, default)

    def close(self) -> None:
        pass


def _fixed_width(head: bytes, body: np.ndarray) -> list[bytes]:
    """``head + body[i]`` as one bytes object per row of the (n, w) uint8 ``body``, built
    in numpy (a void view's ``tolist`` makes the bytes objects without a Python loop)."""
    n, width = body.shape[0], len(head) + body.shape[1]
    out = np.empty((n, width), np.uint8)
    out[:, :len(head)] = np.frombuffer(head, np.uint8)
    out[:, len(head):] = body
    return out.view(f"V{width}").ravel().tolist()


class RocksRowStore:
    """rocksdict, raw bytes. Key ``table \\0 id(8 bytes big-endian)``, value
    ``version(8 bytes big-endian) + row (dim float32 little-endian)``; a tombstone is the
    version alone. Writes of one call go in one atomic WriteBatch.

    Per table the store also keeps the newest version any write of it carried (key
    ``\\x01maxv\\0 table``, written in the same batch). A write of a version above it
    cannot meet a newer row, so it skips the read of the stored versions (the in-order
    case: every new version a replica applies); any other write reads them first. A table
    whose rows predate that key (a store written by an older release) always reads."""

    def __init__(self, path: str | Path) -> None:
        from rocksdict import Options, Rdict

        try:
            self._db: Any = Rdict(str(path), Options(raw_mode=True))  # raw mode: bytes in, bytes out
        except Exception as exc:  # rocksdict raises plain Exception on lock/IO errors
            raise SyncError(f"cannot open row store at {path}: {exc}; is another replica "
                            "using this store_dir?") from exc
        self.path = Path(path)
        self._maxv: dict[str, int | None] = {}  # table -> newest version written; None: unknown

    @staticmethod
    def _keys(table: str, ids: np.ndarray) -> list[bytes]:
        raw = np.asarray(ids, np.int64).astype(">i8").view(np.uint8).reshape(-1, 8)
        return _fixed_width(table.encode() + b"\x00", raw)

    def _max_version(self, table: str) -> int | None:
        """Newest version written to ``table`` (-1: none), None when unknown."""
        if table not in self._maxv:
            raw = self._db.get(_MAXV + table.encode())
            if raw is not None:
                self._maxv[table] = int.from_bytes(raw, "big")
            else:  # no key: a fresh table, or rows written before the key existed
                prefix = table.encode() + b"\x00"
                first = next(iter(self._db.keys(from_key=prefix)), None)
                self._maxv[table] = -1 if first is None or not first.startswith(prefix) else None
        return self._maxv[table]

    def _write(self, table: str, keys: list[bytes], vals: list[bytes], version: int) -> int:
        from rocksdict import WriteBatch

        if not keys:
            return 0
        vb = _vbytes(version)
        newest = self._max_version(table)
        wb = WriteBatch(raw_mode=True)
        if newest is not None and version > newest:  # nothing stored can be as new
            deque(map(wb.put, keys, vals), maxlen=0)  # the loop in C
            wb.put(_MAXV + table.encode(), vb)
            self._db.write(wb)
            self._maxv[table] = version
            return len(keys)
        olds = self._db.get(keys)
        n = 0
        for k, v, old in zip(keys, vals, olds):
            if old is None or old[:8] < vb:
                wb.put(k, v)
                n += 1
        if n:
            self._db.write(wb)
        return n

    @staticmethod
    def _key_order(ids: np.ndarray) -> np.ndarray | None:
        """The permutation that puts ``ids`` in key (byte) order, None if they are in it.
        RocksDB inserts keys in order ~15x cheaper than scattered ones (measured: 1M rows,
        0.2 s against 3.4 s of CPU); the order of equal ids is kept (the last one wins)."""
        u = ids.view(np.uint64)  # big-endian bytes of an int64 sort as its uint64 bits
        if len(u) < 2 or bool((u[1:] >= u[:-1]).all()):
            return None
        return np.argsort(u, kind="stable")

    def write_rows(self, table: str, ids: np.ndarray, values: np.ndarray, version: int) -> int:
        ids = np.asarray(ids, np.int64)
        values = np.ascontiguousarray(values, dtype="<f4")
        order = self._key_order(ids)
        if order is not None:
            ids, values = ids[order], values[order]
        n = len(ids)
        body = values.view(np.uint8).reshape(n, -1) if values.ndim == 2 and values.size else \
            np.zeros((n, 0), np.uint8)
        return self._write(table, self._keys(table, ids), _fixed_width(_vbytes(version), body),
                           version)

    def write_tombstones(self, table: str, ids: np.ndarray, version: int) -> int:
        ids = np.asarray(ids, np.int64)
        order = self._key_order(ids)
        if order is not None:
            ids = ids[order]
        vb = _vbytes(version)
        return self._write(table, self._keys(table, ids), [vb] * len(ids), version)

    def lookup(self, table: str, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        olds = self._db.get(self._keys(table, ids)) if len(ids) else []
        found = np.array([o is not None and len(o) > 8 for o in olds], dtype=bool)
        out = np.zeros((len(ids), dim), np.float32)
        if found.any():
            blob = b"".join(o[8:] for o, f in zip(olds, found) if f)
            out[found] = np.frombuffer(blob, "<f4").reshape(-1, dim)
        return out, found

    def row_version(self, table: str, id_: int) -> int | None:
        old = self._db.get(self._keys(table, np.array([id_]))[0])
        return None if old is None else int.from_bytes(old[:8], "big")

    def row_versions(self, table: str, ids: np.ndarray) -> np.ndarray:
        """(n,) int64 version of each id's row or tombstone, -1 where the store has none."""
        olds = self._db.get(self._keys(table, ids)) if len(ids) else []
        return np.array([-1 if o is None else int.from_bytes(o[:8], "big") for o in olds],
                        np.int64)

    def rows(self, table: str) -> Iterator[tuple[int, np.ndarray]]:
        prefix = table.encode() + b"\x00"
        for k, v in self._db.items(from_key=prefix):
            if not k.startswith(prefix):
                break
            if len(v) > 8:
                yield int.from_bytes(k[len(prefix):], "big", signed=True), \
                    np.frombuffer(v[8:], "<f4").copy()

    def set_meta(self, key: str, value: Any) -> None:
        self._db[_META + key.encode()] = json.dumps(value).encode()

    def get_meta(self, key: str, default: Any = None) -> Any:
        raw = self._db.get(_META + key.encode())
        return default if raw is None else json.loads(raw)

    def close(self) -> None:
        self._db.close()
