"""Full dumps: everything a new replica needs to start, in one directory per version.

    <dump_dir>/<model>/v000000000042/
        manifest.json        version, created_ms, tables {name: {file, dim, rows}},
                             deltas_topic + deltas_offsets {partition: next offset},
                             dense_topic + dense_offset, num_shards
        table-0.ids.npy      (n,) int64     ┐ one pair per table, all live rows
        table-0.values.npy   (n, dim) fp32  ┘
        dense.pt             the model-dense payload (torch.save of model_config + state dict)
        COMPLETE             written last: a dump without it is ignored

The dump is written under a temporary name and renamed, then COMPLETE is written, so a
reader never sees half a dump. ``deltas_offsets`` are the ``model-deltas`` end offsets
right after the push of ``version``: replaying from there yields versions > ``version``.

    info = write_dump(dump_dir, "ctr", 42, updates, dense_payload, offsets, ...)
    dump = latest_dump(dump_dir, "ctr")      # Dump or None
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from sync.delta_builder import TableRows
from sync.errors import DumpError

log = logging.getLogger(__name__)
MARKER = "COMPLETE"


@dataclass
class Dump:
    path: Path
    model: str
    version: int
    created_ms: int
    tables: dict[str, dict]
    deltas_topic: str
    deltas_offsets: dict[int, int]
    dense_topic: str
    dense_offset: int
    num_shards: int
    extra: dict = field(default_factory=dict)

    def table_rows(self, table: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n,), values (n, dim) float32) of one table."""
        meta = self.tables[table]
        mode: Literal["r"] | None = "r" if mmap else None
        try:
            return (np.load(self.path / f"{meta['file']}.ids.npy", mmap_mode=mode),
                    np.load(self.path / f"{meta['file']}.values.npy", mmap_mode=mode))
        except (OSError, ValueError) as exc:
            raise DumpError(f"dump {self.path} table {table}: {exc}") from exc

    def dense_payload(self) -> bytes:
        return (self.path / "dense.pt").read_bytes()


def model_dir(dump_dir: str | Path, model: str) -> Path:
    return Path(dump_dir) / model


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def write_dump(dump_dir: str | Path, model: str, version: int, created_ms: int,
               updates: Sequence[TableRows],
               dense_payload: bytes, deltas_topic: str, deltas_offsets: dict[int, int],
               dense_topic: str, dense_offset: int, num_shards: int, keep: int = 2) -> Dump:
    """Write one complete dump; older complete dumps beyond ``keep`` are removed."""
    root = model_dir(dump_dir, model)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"v{version:012d}"
    tmp = root / f".tmp-v{version:012d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tables = {}
    for i, upd in enumerate(updates):
        ids = np.asarray(upd.ids, np.int64)
        values = np.asarray(upd.values, np.float32)
        if values.ndim != 2:  # (n, dim) by the protocol; a flat array is reshaped (empty: dim 0)
            values = values.reshape(len(ids), -1) if len(ids) else values.reshape(0, 0)
        np.save(tmp / f"table-{i}.ids.npy", ids)
        np.save(tmp / f"table-{i}.values.npy", values)
        tables[upd.table] = {"file": f"table-{i}", "dim": int(values.shape[1]), "rows": len(ids)}
    (tmp / "dense.pt").write_bytes(dense_payload)
    manifest = {"format": 1, "model": model, "version": version, "created_ms": created_ms,
                "tables": tables, "deltas_topic": deltas_topic,
                "deltas_offsets": {str(p): o for p, o in deltas_offsets.items()},
                "dense_topic": dense_topic, "dense_offset": dense_offset,
                "num_shards": num_shards}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for f in tmp.iterdir():
        _fsync_file(f)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    (final / MARKER).write_text(str(version))
    _fsync_file(final / MARKER)
    log.info("dump model=%s version=%d tables=%s path=%s", model, version,
             {t: m["rows"] for t, m in tables.items()}, final)
    prune(dump_dir, model, keep)
    return read_dump(final)


def read_dump(path: Path) -> Dump:
    if not (path / MARKER).exists():
        raise DumpError(f"dump {path} has no {MARKER} marker: it is incomplete")
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise DumpError(f"dump {path}: unreadable manifest ({exc})") from exc
    return Dump(path=path, model=m["model"], version=int(m["version"]),
                created_ms=int(m["created_ms"]), tables=m["tables"],
                deltas_topic=m["deltas_topic"],
                deltas_offsets={int(p): int(o) for p, o in m["deltas_offsets"].items()},
                dense_topic=m["dense_topic"], dense_offset=int(m["dense_offset"]),
                num_shards=int(m["num_shards"]))


def complete_dumps(dump_dir: str | Path, model: str) -> list[Path]:
    root = model_dir(dump_dir, model)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("v*") if (p / MARKER).exists())


def latest_dump(dump_dir: str | Path, model: str) -> Dump | None:
    """The newest complete dump of ``model``, or None."""
    paths = complete_dumps(dump_dir, model)
    return read_dump(paths[-1]) if paths else None


def prune(dump_dir: str | Path, model: str, keep: int) -> None:
    for old in complete_dumps(dump_dir, model)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
