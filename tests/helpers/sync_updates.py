"""Test helpers for sync: a stand-in for trainer.updates.TableUpdate and a tiny fake trainer
(a ``sync.source.ModelSource``, used where the real trainer is not needed, e.g. publisher
tests)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Update:
    table: str
    ids: np.ndarray
    values: np.ndarray
    evicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def update(table: str, ids: Iterable[int], dim: int = 4, seed: int = 0,
           evicted: Iterable[int] = ()) -> Update:
    rng = np.random.default_rng(seed)
    arr = np.asarray(ids, np.int64)
    return Update(table, arr, rng.standard_normal((len(arr), dim)).astype(np.float32),
                  np.asarray(evicted, np.int64))


class FakeTrainer:
    """Holds tables of rows; ``touch`` changes rows, ``evict`` drops them; satisfies
    ``sync.source.ModelSource`` (the publisher-facing half of the trainer)."""

    def __init__(self, dim: int = 4, seed: int = 0) -> None:
        self.dim = dim
        self.rng = np.random.default_rng(seed)
        self.tables: dict[str, dict[int, np.ndarray]] = {}
        self._touched: dict[str, set[int]] = {}
        self._evicted: dict[str, set[int]] = {}

    def touch(self, table: str, ids: Iterable[int]) -> None:
        t = self.tables.setdefault(table, {})
        for i in np.asarray(ids, np.int64).tolist():
            t[i] = self.rng.standard_normal(self.dim).astype(np.float32)
            self._touched.setdefault(table, set()).add(i)
            self._evicted.get(table, set()).discard(i)

    def evict(self, table: str, ids: Iterable[int]) -> None:
        for i in np.asarray(ids, np.int64).tolist():
            if self.tables.get(table, {}).pop(i, None) is not None:
                self._evicted.setdefault(table, set()).add(i)
                self._touched.get(table, set()).discard(i)

    def _update(self, table: str, ids: Iterable[int], evicted: Iterable[int]) -> Update:
        arr = np.array(sorted(ids), np.int64)
        vals = np.stack([self.tables[table][i] for i in arr.tolist()]) if len(arr) else \
            np.zeros((0, self.dim), np.float32)
        return Update(table, arr, vals, np.array(sorted(evicted), np.int64))

    def collect_updates(self) -> list[Update]:
        out = [self._update(t, self._touched.get(t, ()), self._evicted.get(t, ()))
               for t in self.tables]
        self._touched, self._evicted = {}, {}
        return out

    def full_dump(self) -> list[Update]:
        return [self._update(t, rows.keys(), ()) for t, rows in self.tables.items()]

    def dense_state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}

    def model_config(self) -> dict[str, Any]:
        return {"kind": "fake", "dim": self.dim}
