"""What the trainer hands to sync/: per table, the rows changed since the last collect.

An id appears in at most one of ``ids`` / ``evicted`` of one update: an id evicted and
re-admitted between two collects is reported with its new value only. A consumer applies
``evicted`` (delete) and ``ids``/``values`` (upsert) in either order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TableUpdate:
    table: str            # embedding table name
    ids: np.ndarray       # (n,) int64 — rows touched since the last collect
    values: np.ndarray    # (n, dim) float32 — their current values
    evicted: np.ndarray   # (m,) int64 — ids expired/evicted since the last collect
