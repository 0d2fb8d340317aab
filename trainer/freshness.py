"""Freshness traces, trainer side: for a uniform sample of the actions the trainer learns
from, when each action was produced, when the joiner emitted the sample carrying it, and
when the training step that consumed that sample finished.

Each action of a batch (``Batch.action_rows`` / ``Batch.action_ms``: one per entry of a
sample's ``label_types``, produced at ``event_time_ms + label_delays_ms[i]``) is a trace
row ``(action_ms, emit_ms, trained_ms)``. Between two pushes at most ``capacity`` rows are
kept, a uniform sample of all the actions trained on meanwhile (Vitter's algorithm R,
vectorised per batch: a batch of negatives costs one length check). The publisher takes
them at each push and ships them with that version (``sync.freshness``: the Kafka header
``streamtrain-trace``); a serving replica finishes each trace when it first answers with
that version.

>>> from streamtrain.clock import FixedClock
>>> traces = ActionTraces(capacity=2, clock=FixedClock(5_000))
>>> traces.add(np.array([1_000, 1_100, 1_200]), np.array([2_000, 2_000, 2_100]))
>>> rows, actions = traces.take()          # (n, 3) int64: action_ms, emit_ms, trained_ms
>>> rows.shape, actions, int(rows[0, 2])
((2, 3), 3, 5000)
>>> traces.take()[1]                       # taken: the next version starts empty
0
"""

from __future__ import annotations

import numpy as np

from streamtrain.clock import WALL, Clock
from trainer.batch import Batch

MAX_CAPACITY = 1024  # traces per version: ~40 bytes each in the header, next to <= 900 kB of rows


class ActionTraces:
    """The reservoir of one version's traces; ``capacity`` 0 turns tracing off. Not
    thread-safe: ``observe`` and ``take`` run on the training loop's thread."""

    def __init__(self, capacity: int = 64, clock: Clock = WALL, seed: int = 0) -> None:
        if not 0 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity={capacity}: 0..{MAX_CAPACITY} traces per version")
        self.capacity = capacity
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._rows = np.zeros((capacity, 3), np.int64)
        self._filled = 0
        self.seen = 0  # actions trained on since the last take

    def observe(self, batch: Batch, trained_ms: int | None = None) -> None:
        """The actions of ``batch``, whose training step finished at ``trained_ms`` (now)."""
        rows = batch.action_rows
        if rows is None or not len(rows) or not self.capacity or batch.action_ms is None:
            return
        emit = batch.emit_time_ms[rows] if batch.emit_time_ms is not None \
            else batch.event_time_ms[rows]
        self.add(batch.action_ms, emit, trained_ms)

    def add(self, action_ms: np.ndarray, emit_ms: np.ndarray, trained_ms: int | None = None) -> None:
        """Offer (k,) actions produced at ``action_ms``, emitted in samples at ``emit_ms``,
        trained at ``trained_ms`` (now) to the reservoir."""
        k = len(action_ms)
        if not k or not self.capacity:
            return
        new = np.empty((k, 3), np.int64)  # (k, 3)
        new[:, 0], new[:, 1] = action_ms, emit_ms
        new[:, 2] = self.clock.now_ms() if trained_ms is None else trained_ms
        m = min(self.capacity - self._filled, k)  # free slots take the first ones as they come
        self._rows[self._filled:self._filled + m] = new[:m]
        self._filled += m
        rest = new[m:]
        if len(rest):
            index = self.seen + m + np.arange(len(rest))  # 0-based position in the stream
            slot = self._rng.integers(0, index + 1)  # algorithm R: kept iff slot < capacity
            keep = slot < self.capacity
            slot, rest = slot[keep], rest[keep]
            if len(slot):  # later items overwrite earlier ones drawn for the same slot
                uniq, first = np.unique(slot[::-1], return_index=True)
                self._rows[uniq] = rest[len(slot) - 1 - first]
        self.seen += k

    def take(self) -> tuple[np.ndarray, int]:
        """``(rows, actions)``: the (n, 3) int64 traces ``action_ms, emit_ms, trained_ms``
        kept since the last take (n <= capacity) and how many actions they sample; resets."""
        rows, seen = self._rows[:self._filled].copy(), self.seen
        self._filled = self.seen = 0
        return rows, seen
