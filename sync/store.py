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
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from sync.errors import SyncError

_META = b"\x01meta\x00"  # meta keys sort apart from row keys (which start with the table name)


def _vbytes(version: int) -> bytes:
    return int(version).to_bytes(8, "big")  # big-endian: byte order == numeric order


class RowStore(Protocol):
    def write_rows(self, table: str, ids: np.ndarray, values: np.ndarray, version: int) -> int: ...
    def write_tombstones(self, table: str, ids: np.ndarray, version: int) -> int: ...
    def lookup(self, table: str, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]: ...
    def row_version(self, table: str, id_: int) -> int | None: ...
    def rows(self, table: str) -> Iterator[tuple[int, np.ndarray]]: ...
    def set_meta(self, key: str, value) -> None: ...
    def get_meta(self, key: str, default=None): ...
    def close(self) -> None: ...


class MemoryRowStore:
    """A dict per table: id -> (version, row or None for a tombstone)."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[int, tuple[int, np.ndarray | None]]] = {}
        self._meta: dict[str, object] = {}

    def _write(self, table: str, ids, rows, version: int) -> int:
        t = self._tables.setdefault(table, {})
        n = 0
        for i, id_ in enumerate(np.asarray(ids, np.int64).tolist()):
            old = t.get(id_)
            if old is None or old[0] < version:
                t[id_] = (version, None if rows is None else np.array(rows[i], np.float32))
                n += 1
        return n

    def write_rows(self, table, ids, values, version):
        return self._write(table, ids, np.asarray(values, np.float32), version)

    def write_tombstones(self, table, ids, version):
        return self._write(table, ids, None, version)

    def lookup(self, table, ids, dim):
        t = self._tables.get(table, {})
        out = np.zeros((len(ids), dim), np.float32)
        found = np.zeros(len(ids), bool)
        for i, id_ in enumerate(np.asarray(ids, np.int64).tolist()):
            entry = t.get(id_)
            if entry is not None and entry[1] is not None:
                out[i], found[i] = entry[1], True
        return out, found

    def row_version(self, table, id_):
        entry = self._tables.get(table, {}).get(int(id_))
        return None if entry is None else entry[0]

    def rows(self, table):
        for id_, (_, row) in sorted(self._tables.get(table, {}).items()):
            if row is not None:
                yield id_, row

    def set_meta(self, key, value):
        self._meta[key] = json.loads(json.dumps(value))

    def get_meta(self, key, default=None):
        return self._meta.get(key, default)

    def close(self):
        pass


class RocksRowStore:
    """rocksdict, raw bytes. Key ``table \\0 id(8 bytes big-endian)``, value
    ``version(8 bytes big-endian) + row (dim float32 little-endian)``; a tombstone is the
    version alone. Writes of one call go in one atomic WriteBatch."""

    def __init__(self, path: str | Path):
        from rocksdict import Options, Rdict

        try:
            self._db = Rdict(str(path), Options(raw_mode=True))
        except Exception as exc:  # rocksdict raises plain Exception on lock/IO errors
            raise SyncError(f"cannot open row store at {path}: {exc}; is another replica "
                            "using this store_dir?") from exc
        self.path = Path(path)

    @staticmethod
    def _keys(table: str, ids: np.ndarray) -> list[bytes]:
        prefix = table.encode() + b"\x00"
        raw = np.asarray(ids, np.int64).astype(">i8").tobytes()
        return [prefix + raw[i:i + 8] for i in range(0, len(raw), 8)]

    def _write(self, keys: list[bytes], vals: list[bytes], vb: bytes) -> int:
        from rocksdict import WriteBatch

        if not keys:
            return 0
        olds = self._db.get(keys)
        wb = WriteBatch(raw_mode=True)
        n = 0
        for k, v, old in zip(keys, vals, olds):
            if old is None or old[:8] < vb:
                wb.put(k, v)
                n += 1
        if n:
            self._db.write(wb)
        return n

    def write_rows(self, table, ids, values, version):
        vb = _vbytes(version)
        values = np.ascontiguousarray(values, dtype="<f4")
        blob = values.tobytes()
        width = values.shape[1] * 4 if values.ndim == 2 else 0
        vals = [vb + blob[i:i + width] for i in range(0, len(blob), width)] if width else \
            [vb] * len(ids)
        return self._write(self._keys(table, ids), vals, vb)

    def write_tombstones(self, table, ids, version):
        vb = _vbytes(version)
        return self._write(self._keys(table, ids), [vb] * len(ids), vb)

    def lookup(self, table, ids, dim):
        olds = self._db.get(self._keys(table, ids)) if len(ids) else []
        found = np.array([o is not None and len(o) > 8 for o in olds], dtype=bool)
        out = np.zeros((len(ids), dim), np.float32)
        if found.any():
            blob = b"".join(o[8:] for o, f in zip(olds, found) if f)
            out[found] = np.frombuffer(blob, "<f4").reshape(-1, dim)
        return out, found

    def row_version(self, table, id_):
        old = self._db.get(self._keys(table, np.array([id_]))[0])
        return None if old is None else int.from_bytes(old[:8], "big")

    def rows(self, table):
        prefix = table.encode() + b"\x00"
        for k, v in self._db.items(from_key=prefix):
            if not k.startswith(prefix):
                break
            if len(v) > 8:
                yield int.from_bytes(k[len(prefix):], "big", signed=True), \
                    np.frombuffer(v[8:], "<f4").copy()

    def set_meta(self, key, value):
        self._db[_META + key.encode()] = json.dumps(value).encode()

    def get_meta(self, key, default=None):
        raw = self._db.get(_META + key.encode())
        return default if raw is None else json.loads(raw)

    def close(self):
        self._db.close()
