"""Collisionless dynamic embedding tables (the Monolith idea).

Any 64-bit id gets its own row: no hash size, no collisions; memory grows with live ids.

- *Admission*: an id is tracked from its first sighting but gets a trainable row only once
  it was seen ``admit_count`` times (and then with probability ``admit_prob`` per sighting,
  from a seeded generator). Until then it reads the default row (zeros) and gets no update.
- *Expiry*: ``expire(now_ms)`` drops ids not seen for ``expiry_ms`` of event time; their rows
  go to a free list and are reused by the next admissions.
- *Row 0* is the zero row: always zero, never updated, the handle of ids without a row
  (``trainer.scoring``: they read their field's default row, or zeros).
- *Put rows*: ``put(ids, values)`` writes rows the trainer computes itself (each field's
  default row): admitted at once, never trained, published like the others.
- *Sparse optimizer*: row-wise Adagrad (one accumulator per row) or Adagrad, applied only
  to the rows of the batch.
- *Sync hooks*: rows touched (admitted or updated) and ids evicted since the last
  ``collect_updates()``.

One interface, ``EmbeddingTable``; ``CpuEmbeddingTable`` keeps rows in host memory,
``CudaEmbeddingTable`` keeps rows and optimizer state on the GPU and the id index on the
CPU (the index is a hash lookup that pandas does at ~11M ids/s; the rows are the bandwidth).

    table = CpuEmbeddingTable("emb", TableConfig(dim=16, admit_count=2))
    rows = table.rows_for(ids, now_ms=t, train=True)   # (n,) long, 0 = default
    emb = table.gather(rows)                           # (n, D)
    table.apply_gradients(rows, grad)                  # rows distinct
"""

from __future__ import annotations

import abc
import logging

import numpy as np
import torch

from trainer.config import TableConfig
from trainer.errors import TrainerError
from trainer.id_index import IdIndex
from trainer.updates import TableUpdate

log = logging.getLogger(__name__)


class EmbeddingTable(abc.ABC):
    """What the trainer needs from a table. ``rows`` are opaque handles valid until the
    next ``rows_for(train=True)`` / ``expire`` / ``restore``."""

    name: str
    dim: int
    device: torch.device
    track_admitted: bool

    @abc.abstractmethod
    def rows_for(self, ids: np.ndarray, now_ms: int | None = None, train: bool = False,
                 counts: np.ndarray | None = None) -> torch.Tensor:
        """(n,) rows of ``ids`` on the table's device. train=True counts sightings (``counts``
        of each id when given, ids then distinct; else one per occurrence) and admits."""

    @abc.abstractmethod
    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, D) values of ``rows``."""

    @abc.abstractmethod
    def apply_gradients(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """One sparse optimizer step on distinct ``rows`` with (n, D) ``grads``."""

    @abc.abstractmethod
    def put(self, ids: np.ndarray, values: torch.Tensor, now_ms: int) -> None:
        """Write (n, D) ``values`` as the rows of distinct ``ids`` (admitting them at once),
        seen at ``now_ms``; they are published with the next ``collect_updates``."""

    @abc.abstractmethod
    def take_admitted(self) -> torch.Tensor:
        """Rows admitted (by ``rows_for(train=True)``) since the last call, while
        ``track_admitted`` is set; then resets."""

    @abc.abstractmethod
    def add_to_rows(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Add (n, D) ``values`` to distinct live ``rows`` (a new row's starting point)."""

    @abc.abstractmethod
    def expire(self, now_ms: int) -> np.ndarray:
        """Drop ids unseen for expiry_ms before ``now_ms``; returns the evicted (admitted) ids."""

    @abc.abstractmethod
    def collect_updates(self) -> TableUpdate: ...

    @abc.abstractmethod
    def full_dump(self) -> TableUpdate: ...

    @abc.abstractmethod
    def snapshot(self) -> dict: ...

    @property
    @abc.abstractmethod
    def num_live(self) -> int:
        """Ids that own a row."""

    @abc.abstractmethod
    def restore(self, state: dict) -> None: ...

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """(n, D) float32 values of ``ids`` (zeros for unknown ones); no side effects."""
        rows = self.rows_for(np.asarray(ids, dtype=np.int64), train=False)
        return self.gather(rows).detach().cpu().numpy()


class DynamicEmbeddingTable(EmbeddingTable):
    def __init__(self, name: str, config: TableConfig, device: str | torch.device = "cpu"):
        self.name = name
        self.config = config
        self.dim = config.dim
        self.device = torch.device(device)
        self._rowwise = config.optimizer == "rowwise_adagrad"
        self._gen = torch.Generator().manual_seed(config.seed)
        self._rng = np.random.default_rng(config.seed)
        self.track_admitted = False  # keep the rows admitted for ``take_admitted`` (the trainer sets it)
        self._reset(config.initial_capacity)

    # -- storage ---------------------------------------------------------------------
    def _reset(self, capacity: int) -> None:
        self.index = IdIndex()
        d, dev = self.dim, self.device
        self.weights = torch.zeros(capacity, d, device=dev)  # (R, D); row 0 = default
        shape = (capacity,) if self._rowwise else (capacity, d)
        self.accum = torch.full(shape, self.config.initial_accumulator, device=dev)
        self.touched = torch.zeros(capacity, dtype=torch.bool, device=dev)
        self.row_id = np.full(capacity, -1, np.int64)  # row -> id (meaningless on free rows)
        self._high = 1  # rows [1, _high) were handed out at least once
        self._free = np.zeros(0, np.int64)
        self._evicted: list[np.ndarray] = []
        self._admitted: list[np.ndarray] = []

    def _grow(self, needed: int) -> None:
        cap = self.weights.shape[0]
        if needed <= cap:
            return
        new_cap = cap
        while new_cap < needed:
            new_cap *= 2
        w = torch.zeros(new_cap, self.dim, device=self.device)
        w[:cap] = self.weights
        a = torch.full((new_cap,) + tuple(self.accum.shape[1:]), self.config.initial_accumulator,
                       device=self.device)
        a[:cap] = self.accum
        t = torch.zeros(new_cap, dtype=torch.bool, device=self.device)
        t[:cap] = self.touched
        rid = np.full(new_cap, -1, np.int64)
        rid[:cap] = self.row_id
        self.weights, self.accum, self.touched, self.row_id = w, a, t, rid

    def _to_device(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rows).to(self.device)

    def _allocate(self, n: int) -> np.ndarray:
        take = min(n, len(self._free))
        rows = self._free[len(self._free) - take:][::-1].copy()
        self._free = self._free[: len(self._free) - take]
        fresh = np.arange(self._high, self._high + n - take, dtype=np.int64)
        self._high += n - take
        self._grow(self._high)
        return np.concatenate([rows, fresh])

    # -- the interface ---------------------------------------------------------------
    def rows_for(self, ids: np.ndarray, now_ms: int | None = None, train: bool = False,
                 counts: np.ndarray | None = None) -> torch.Tensor:
        ids = np.asarray(ids, dtype=np.int64)
        entries = self.index.find(ids)
        if train:
            entries = self._observe(ids, entries, now_ms, counts)
        rows = np.where(entries >= 0, self.index.row[np.maximum(entries, 0)], 0)
        return self._to_device(np.maximum(rows, 0))

    def _observe(self, ids: np.ndarray, entries: np.ndarray, now_ms: int | None,
                 counts: np.ndarray | None) -> np.ndarray:
        """Count sightings, stamp event time, admit eligible ids; returns updated entries."""
        missing = entries < 0
        if missing.any():
            new_ids, inverse = np.unique(ids[missing], return_inverse=True)  # sorted: deterministic
            entries = entries.copy()
            entries[missing] = self.index.insert(new_ids)[inverse]
        ix = self.index
        if counts is None:
            uniq, counts = np.unique(entries, return_counts=True)
        else:
            uniq = entries
        ix.count[uniq] += counts
        if now_ms is not None:
            ix.last_seen[uniq] = np.maximum(ix.last_seen[uniq], now_ms)
        wait = uniq[ix.row[uniq] < 0]
        eligible = wait[ix.count[wait] >= self.config.admit_count]
        if self.config.admit_prob < 1.0 and len(eligible):
            eligible = eligible[self._rng.random(len(eligible)) < self.config.admit_prob]
        if len(eligible):
            self._admit(eligible)
        return entries

    def _admit(self, entries: np.ndarray) -> None:
        rows = self._allocate(len(entries))
        self.index.row[entries] = rows
        self.row_id[rows] = self.index.ids[entries]
        init = torch.randn(len(rows), self.dim, generator=self._gen) * self.config.init_std
        r = self._to_device(rows)
        self.weights[r] = init.to(self.device)
        self.accum[r] = self.config.initial_accumulator
        self.touched[r] = True
        if self.track_admitted:
            self._admitted.append(rows)

    def take_admitted(self) -> torch.Tensor:
        rows = np.concatenate(self._admitted) if self._admitted else np.zeros(0, np.int64)
        self._admitted = []
        return self._to_device(rows)

    @torch.no_grad()
    def add_to_rows(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        self.weights.index_add_(0, rows, values.to(self.weights.dtype))

    @torch.no_grad()
    def put(self, ids: np.ndarray, values: torch.Tensor, now_ms: int) -> None:
        ids = np.asarray(ids, np.int64)
        entries = self.index.find(ids)
        if (entries < 0).any():
            entries = entries.copy()
            entries[entries < 0] = self.index.insert(ids[entries < 0])
        ix = self.index
        ix.count[entries] = np.maximum(ix.count[entries], self.config.admit_count)
        ix.last_seen[entries] = np.maximum(ix.last_seen[entries], now_ms)
        new = entries[ix.row[entries] < 0]
        if len(new):
            tracking, self.track_admitted = self.track_admitted, False  # not a trained id's row
            self._admit(new)
            self.track_admitted = tracking
        r = self._to_device(ix.row[entries])
        self.weights[r] = values.to(self.device, self.weights.dtype)
        self.touched[r] = True

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        return self.weights.index_select(0, rows)

    @torch.no_grad()
    def apply_gradients(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        live = rows > 0
        rows, grads = rows[live], grads[live]
        if self._rowwise:
            acc = self.accum.index_select(0, rows) + grads.pow(2).mean(dim=1)
            self.accum.index_copy_(0, rows, acc)
            step = grads / (acc.sqrt().unsqueeze(1) + self.config.eps)
        else:
            acc = self.accum.index_select(0, rows) + grads.pow(2)
            self.accum.index_copy_(0, rows, acc)
            step = grads / (acc.sqrt() + self.config.eps)
        self.weights.index_add_(0, rows, step, alpha=-self.config.lr)
        self.touched[rows] = True

    def expire(self, now_ms: int) -> np.ndarray:
        if self.config.expiry_ms <= 0 or len(self.index) == 0:
            return np.zeros(0, np.int64)
        ix = self.index
        dead = ix.last_seen[: ix.size] < now_ms - self.config.expiry_ms
        if not dead.any():
            return np.zeros(0, np.int64)
        dead_rows = ix.row[: ix.size][dead]
        dead_rows = dead_rows[dead_rows > 0]
        evicted = self.row_id[dead_rows].copy()
        if len(dead_rows):
            r = self._to_device(dead_rows)
            self.weights[r] = 0.0
            self.accum[r] = self.config.initial_accumulator
            self.touched[r] = False
            self.row_id[dead_rows] = -1
            self._free = np.concatenate([self._free, np.sort(dead_rows)[::-1]])
            self._evicted.append(evicted)
        ix.compact(~dead)
        log.debug("table=%s expired=%d evicted=%d live=%d", self.name, int(dead.sum()),
                  len(evicted), self.num_live)
        return evicted

    def collect_updates(self) -> TableUpdate:
        rows = torch.nonzero(self.touched).flatten()
        self.touched.zero_()
        values = self.weights.index_select(0, rows).cpu().numpy()
        rows_np = rows.cpu().numpy()
        ids = self.row_id[rows_np]
        evicted = np.concatenate(self._evicted) if self._evicted else np.zeros(0, np.int64)
        self._evicted = []
        if len(evicted):  # setdiff1d sorts ids even when nothing was evicted
            evicted = np.setdiff1d(evicted, ids)
        return TableUpdate(self.name, ids.astype(np.int64), values.astype(np.float32), evicted)

    def full_dump(self) -> TableUpdate:
        # live rows = handed out and not freed (ids are signed: row_id cannot tell, -1 is an id too)
        rows = np.setdiff1d(np.arange(1, self._high, dtype=np.int64), self._free)
        values = self.weights.index_select(0, self._to_device(rows)).cpu().numpy()
        return TableUpdate(self.name, self.row_id[rows].copy(), values, np.zeros(0, np.int64))

    @property
    def num_live(self) -> int:
        """Ids that own a row."""
        return int(self._high - 1 - len(self._free))

    @property
    def num_tracked(self) -> int:
        """Ids tracked: live ones plus those waiting for admission."""
        return len(self.index)

    def memory_bytes(self) -> int:
        """Bytes held by the index, the rows and their optimizer state (capacity included)."""
        t = self.weights.nbytes + self.accum.nbytes + self.touched.nbytes
        return int(t + self.row_id.nbytes + self.index.nbytes() + self._free.nbytes)

    def snapshot(self) -> dict:
        """Live state only: tracked entries, the rows of admitted ones (values + optimizer
        state) in entry order, and the generators, so a restore continues identically."""
        cols = self.index.columns()
        admitted = cols["row"] >= 0
        rows = self._to_device(cols["row"][admitted])
        return {
            "name": self.name, "dim": self.dim, "optimizer": self.config.optimizer,
            "entries": cols, "values": self.weights.index_select(0, rows).cpu(),
            "accum": self.accum.index_select(0, rows).cpu(),
            "touched": self.touched.index_select(0, rows).cpu(),
            "evicted": np.concatenate(self._evicted) if self._evicted else np.zeros(0, np.int64),
            "torch_rng": self._gen.get_state(), "np_rng": self._rng.bit_generator.state,
        }

    def restore(self, state: dict) -> None:
        if state["dim"] != self.dim or state["optimizer"] != self.config.optimizer:
            raise TrainerError(
                f"table {self.name}: snapshot has dim={state['dim']} optimizer={state['optimizer']}, "
                f"config has dim={self.dim} optimizer={self.config.optimizer}; restore with the "
                "config the checkpoint was written with")
        cols = {k: np.asarray(v).copy() for k, v in state["entries"].items()}
        admitted = cols["row"] >= 0
        n = int(admitted.sum())
        self._reset(max(self.config.initial_capacity, n + 1))
        rows = np.arange(1, n + 1, dtype=np.int64)
        cols["row"][admitted] = rows
        self.index.load(cols)
        self._high = n + 1
        self.row_id[rows] = cols["ids"][admitted]
        r = self._to_device(rows)
        self.weights[r] = state["values"].to(self.device)
        self.accum[r] = state["accum"].to(self.device)
        self.touched[r] = state["touched"].to(self.device)
        self._evicted = [np.asarray(state["evicted"], np.int64)] if len(state["evicted"]) else []
        self._gen.set_state(state["torch_rng"])
        self._rng.bit_generator.state = state["np_rng"]


class CpuEmbeddingTable(DynamicEmbeddingTable):
    """Rows in host memory."""

    def __init__(self, name: str, config: TableConfig):
        super().__init__(name, config, "cpu")


class CudaEmbeddingTable(DynamicEmbeddingTable):
    """Rows and optimizer state on the GPU; the id index on the CPU. Row handles are copied
    to the GPU through a pinned buffer without blocking."""

    def __init__(self, name: str, config: TableConfig, device: str = "cuda"):
        if not torch.cuda.is_available():
            raise TrainerError("CudaEmbeddingTable needs CUDA; use CpuEmbeddingTable (device=cpu)")
        super().__init__(name, config, device)

    def _to_device(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rows).pin_memory().to(self.device, non_blocking=True)


def make_table(name: str, config: TableConfig, device: torch.device) -> DynamicEmbeddingTable:
    if device.type == "cuda":
        return CudaEmbeddingTable(name, config, str(device))
    return CpuEmbeddingTable(name, config)
