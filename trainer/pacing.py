"""Negative pacing: train a label-sorted stream as if its labels came mixed.

A joiner that emits early (``joiner.policy=early``) releases a positive seconds after its
impression and the negatives only when their window closes, and a Flink operator closes
windows as its watermark moves: in bursts (a live run: ~2000 negatives at once every 2 to
10 s, positives trickling in between). Cut by time (``trainer.max_wait_ms``), such a stream
gives batches of only positives and batches of only negatives; each one moves the dense
net a full Adam step its way. Replayed from live runs' ``samples`` topics (batches cut every
200 ms as the trainer cuts them; ``python -m bench.pacing_replay``), the click AUC of the
predictions as served (each sample scored by the model as it was 2 s before its impression)
went from 0.665 to 0.679 on one run and from 0.577 to 0.659 on one whose trainer fell
behind (bench/results/pacing_replay*.json). The trainer's own progressive AUC overstates
the gain (0.63 -> 0.73): a held negative is scored after the model trained on newer
positives.

``NegativePacer`` wraps a batch source. Samples with a label (positives, corrections) pass
at once, so freshness is untouched. Unlabelled samples (negatives) are held and released
with the labelled ones in the stream's own proportion (negatives per labelled sample, a
decayed count over about ``pacing_samples`` samples), newest first, and unconditionally
(oldest first) once held for ``pacing_max_hold_ms`` or when more than ``pacing_max_held``
wait. Until
``PACE_AFTER_LABELLED`` labelled samples were seen, everything passes (no proportion yet).

Checkpoints: every batch out carries the positions of all input consumed, and the trainer's
checkpoint stores the held negatives (``snapshot()``) beside them; a restart hands them to
the next pacer (``held``), so every sample is trained once; a clean stop trains what is
held (``drain()``) before its last checkpoint. Releasing the held negatives as
one batch before each checkpoint instead cost 0.02 AUC on the same replay (a negative-only
batch every 100 steps).

    source = NegativePacer(KafkaSampleSource(...), trainer_cfg)
    batch = source.next_batch(timeout_s=0.5)    # labelled rows + their share of negatives
    state = source.snapshot()                   # into the checkpoint, beside the positions
    rest = source.drain()                       # at a clean stop: train what is held
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from trainer.batch import Batch, concat, take
from trainer.config import TrainerConfig

PACE_AFTER_LABELLED = 100


class _Source(Protocol):
    def next_batch(self, timeout_s: float = ...) -> Batch | None: ...

    def close(self) -> None: ...


class NegativePacer:
    """Wraps a batch source (Kafka or any ``next_batch``/``close`` source); see the module doc.
    ``held``: a checkpoint's ``snapshot()`` (negatives consumed before it, not yet trained)."""

    def __init__(self, inner: _Source, cfg: TrainerConfig, held: list[Batch] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.clock = inner, clock
        self.max_hold_s = cfg.pacing_max_hold_ms / 1000 if cfg.pacing else 0.0  # off: release at once
        self.max_held = cfg.pacing_max_held
        self.decay = 1.0 - 1.0 / cfg.pacing_samples
        self.labelled_seen = self.unlabelled_seen = 0.0  # decayed counts
        self.held: deque[tuple[float, Batch]] = deque()  # (held since, negatives), oldest first
        for b in held or []:
            self.held.append((clock(), b))
        self.n_held = sum(len(b) for _, b in self.held)

    @property
    def exhausted(self) -> bool:
        return bool(getattr(self.inner, "exhausted", False)) and not self.held

    def next_batch(self, timeout_s: float = 1.0) -> Batch | None:
        """Labelled samples of the next input batch with their share of the held negatives,
        or overdue negatives alone; the positions of everything consumed (an empty batch
        when all of an input batch is held). None when no input came and nothing is due."""
        batch = self.inner.next_batch(timeout_s=timeout_s)
        if batch is None:
            done = bool(getattr(self.inner, "exhausted", False))  # a finite source's end: release all
            return self._release(self.n_held if done else 0, [], None)  # None: nothing came, nothing due
        labelled = batch.labelled if batch.labelled is not None else batch.labels.any(1)
        pos_rows, neg_rows = np.flatnonzero(labelled), np.flatnonzero(~labelled)
        n_pos, n_neg = len(pos_rows), len(neg_rows)
        # the proportion from batches before this one (a burst must not set its own quota)
        ratio = self.unlabelled_seen / self.labelled_seen if self.labelled_seen else 0.0
        d = self.decay ** len(batch)
        self.labelled_seen, self.unlabelled_seen = self.labelled_seen * d + n_pos, self.unlabelled_seen * d + n_neg
        if self.labelled_seen < PACE_AFTER_LABELLED and not self.held:
            return batch  # no proportion to pace by yet
        parts = [take(batch, pos_rows)] if n_pos else []
        if n_neg:
            self.held.append((self.clock(), take(batch, neg_rows)))
            self.n_held += n_neg
        out = self._release(int(round(n_pos * ratio)), parts, batch)
        assert out is not None  # with ``consumed`` there is always a batch (its positions)
        return out

    def drain(self) -> Batch | None:
        """Everything held, now (the trainer trains it when it stops cleanly)."""
        return self._release(self.n_held, [], None)

    def snapshot(self) -> list[Batch]:
        """The negatives held (consumed, not trained): a checkpoint stores them with the
        positions, and the next pacer starts with them."""
        return [b for _, b in self.held]

    def close(self) -> None:
        self.inner.close()

    def _release(self, quota: int, parts: list[Batch], consumed: Batch | None) -> Batch | None:
        """``parts`` plus the negatives due, with the positions of ``consumed``; None when
        there is nothing to hand on (no rows, no input consumed)."""
        now = self.clock()
        # overdue, or too many held: the oldest first, whole input batches
        while self.held and (now - self.held[0][0] >= self.max_hold_s or self.n_held > self.max_held):
            neg = self.held.popleft()[1]
            parts.append(neg)
            self.n_held -= len(neg)
            quota -= len(neg)
        # the quota: the newest first, the negatives closest in time to the labelled samples
        # they go with (a replay: AUC as served 0.681 newest first, 0.677 oldest first)
        while self.held and quota > 0:
            since, neg = self.held[-1]
            n = len(neg)
            if quota < n:
                self.held[-1] = (since, take(neg, np.arange(n - quota)))
                neg, n = take(neg, np.arange(n - quota, n)), quota
            else:
                self.held.pop()
            parts.append(neg)
            self.n_held -= n
            quota -= n
        if parts:
            out = concat(parts)
        elif consumed is not None:  # everything held: positions only, in the input's shapes
            out = take(consumed, np.zeros(0, np.int64))
        else:
            return None
        if consumed is not None:
            out.positions, out.unknown_labels = dict(consumed.positions), dict(consumed.unknown_labels)
            out.dropped_ids = consumed.dropped_ids
        return out

