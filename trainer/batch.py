"""Typed training batches built in bulk from Sample records.

Layout of a batch of B samples holding N sparse ids in all (sample-major)::

    ids       (N,)    int64    feature ids                    ┐ ids of sample b are
    fields    (N,)    int64    field of each id (ModelConfig) ├ ids[offsets[b]:offsets[b+1]]
    offsets   (B+1,)  int64    CSR offsets per sample         ┘ (a field may hold 0..k ids)
    dense     (B, Dd) float32  dense features
    labels    (B, H)  float32  1 where the head's action type is among label_types
    weights   (B,)    float32  Sample.weight
    sample_rate (B,)  float32  negative down-sampling keep rate (schemas/contracts.py)
    labelled  (B,)    bool     the sample carries any label_types (model head or not): what
                               down-sampling kept for sure (schemas/contracts.py)
    flags     (B,)    int32    FLAG_EARLY | FLAG_LATE_CORRECTION | FLAG_ACTION_STALL
    event_time_ms (B,) int64
    emit_time_ms (B,) int64   when the joiner emitted the sample (its clock: the watermark)
    action_rows (A,)  int64   sample of each action (one per label_types entry with its delay)
    action_ms   (A,)  int64   when that action was produced: event_time_ms + label_delays_ms[i]
                              (live traffic stamps event time with the wall clock); A = 0 for
                              a batch of negatives. Read by trainer.freshness (traces).
    positions {partition: next offset} once this batch is consumed (Kafka sources only)
    unknown_labels {action type: samples} of label types that are no model head (they
              label nothing: for the heads such a sample is a negative)

    builder = BatchBuilder(ModelConfig(slots=(0, 1, 2)))
    batch = builder.build(samples)
    batch = builder.build_columns(cols, keep)   # the same from a fetch decoded in columns
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from schemas import Sample
from trainer.columnar import Columns
from trainer.config import ModelConfig

# beyond these a single sample overflows float32 in the loss and its gradients (inf, then
# NaN weights for good): such a sample is dead-lettered, not trained on
MAX_ABS_DENSE = 1e9
MAX_WEIGHT = 1e6


@dataclass
class Batch:
    ids: np.ndarray
    fields: np.ndarray
    offsets: np.ndarray
    dense: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    sample_rate: np.ndarray
    flags: np.ndarray
    event_time_ms: np.ndarray
    request_ids: list[str] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    dropped_ids: int = 0  # ids of slots that are not model fields
    unknown_labels: dict[str, int] = field(default_factory=dict)
    labelled: np.ndarray | None = None  # None: labels.any(1) (no label outside the heads)
    emit_time_ms: np.ndarray | None = None  # None: not known (batches not built from Samples)
    action_rows: np.ndarray | None = None  # None: no actions known (no freshness traces)
    action_ms: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def sample_index(self) -> np.ndarray:
        """(N,) the sample each id belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))


class BatchBuilder:
    """Turns Sample records into a Batch; checks each sample first (``problem``)."""

    def __init__(self, model: ModelConfig):
        self.model = model
        self._slots = np.asarray(sorted(model.slots), dtype=np.int64)
        order = {s: i for i, s in enumerate(model.slots)}
        self._slot_field = np.asarray([order[s] for s in self._slots], dtype=np.int64)
        self._heads = {h: i for i, h in enumerate(model.heads)}

    def problem(self, s: Sample) -> str | None:
        """Why a decoded sample cannot be trained on, or None. Such samples are dead-lettered."""
        if len(s.slots) != len(s.ids):
            return f"slots ({len(s.slots)}) and ids ({len(s.ids)}) differ in length"
        if len(s.dense) != self.model.dense_dim:
            return f"dense has {len(s.dense)} values, the model expects {self.model.dense_dim}"
        if not all(math.isfinite(x) and abs(x) <= MAX_ABS_DENSE for x in s.dense):
            return f"dense holds NaN, infinity or a value beyond +-{MAX_ABS_DENSE:g}"
        if not (math.isfinite(s.weight) and 0.0 <= s.weight <= MAX_WEIGHT):
            return f"weight {s.weight} is not a finite value in [0, {MAX_WEIGHT:g}]"
        if not (0.0 < s.sample_rate <= 1.0):
            return f"sample_rate {s.sample_rate} is outside (0, 1]"
        return None

    def build(self, samples: list[Sample], positions: dict[int, int] | None = None) -> Batch:
        b = len(samples)
        lengths = np.fromiter((len(s.ids) for s in samples), dtype=np.int64, count=b)
        total = int(lengths.sum())
        raw_ids = np.fromiter((i for s in samples for i in s.ids), dtype=np.int64, count=total)
        raw_slots = np.fromiter((x for s in samples for x in s.slots), dtype=np.int64, count=total)
        pos = np.searchsorted(self._slots, raw_slots).clip(0, len(self._slots) - 1)
        keep = self._slots[pos] == raw_slots
        sample_of = np.repeat(np.arange(b, dtype=np.int64), lengths)[keep]
        offsets = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(np.bincount(sample_of, minlength=b), out=offsets[1:])
        labels = np.zeros((b, len(self._heads)), dtype=np.float32)
        unknown: dict[str, int] = {}
        act_rows: list[int] = []  # positives only: a batch of negatives adds nothing here
        act_delays: list[int] = []
        for r, s in enumerate(samples):
            for t in set(s.label_types):
                h = self._heads.get(t)
                if h is not None:
                    labels[r, h] = 1.0
                else:
                    unknown[t] = unknown.get(t, 0) + 1
            if s.label_delays_ms and len(s.label_delays_ms) == len(s.label_types):
                act_rows.extend([r] * len(s.label_delays_ms))
                act_delays.extend(s.label_delays_ms)
        event_ms = np.fromiter((s.event_time_ms for s in samples), dtype=np.int64, count=b)
        action_rows = np.asarray(act_rows, dtype=np.int64)
        dd = self.model.dense_dim
        dense = np.asarray([s.dense for s in samples], dtype=np.float32).reshape(b, dd)
        return Batch(
            ids=raw_ids[keep],
            fields=self._slot_field[pos[keep]],
            offsets=offsets,
            dense=dense,
            labels=labels,
            weights=np.fromiter((s.weight for s in samples), dtype=np.float32, count=b),
            sample_rate=np.fromiter((s.sample_rate for s in samples), dtype=np.float32, count=b),
            flags=np.fromiter((s.flags for s in samples), dtype=np.int32, count=b),
            event_time_ms=event_ms,
            emit_time_ms=np.fromiter((s.emit_time_ms for s in samples), dtype=np.int64, count=b),
            action_rows=action_rows,
            action_ms=event_ms[action_rows] + np.asarray(act_delays, dtype=np.int64),
            request_ids=[s.request_id for s in samples],
            positions=dict(positions or {}),
            dropped_ids=int(total - keep.sum()),
            unknown_labels=unknown,
            labelled=np.fromiter((bool(s.label_types) for s in samples), dtype=bool, count=b),
        )

    # -- from columns (trainer.columnar: a whole fetch decoded at once) -------------------
    def problems(self, cols: Columns) -> np.ndarray:
        """(n,) bool: the samples ``problem`` rejects, checked on all columns at once (ask
        ``problem`` of those few for the reason)."""
        slot_len, id_len = cols.arrays["slots"][0], cols.arrays["ids"][0]
        dense_len, dense = cols.arrays["dense"]
        bad = (slot_len != id_len) | (dense_len != self.model.dense_dim)
        d = dense.astype(np.float64)
        bad_value = ~(np.isfinite(d) & (np.abs(d) <= MAX_ABS_DENSE))
        owner = np.repeat(np.arange(cols.n, dtype=np.int64), dense_len)
        bad |= np.bincount(owner[bad_value], minlength=cols.n) > 0
        w = cols.scalars["weight"].astype(np.float64)
        bad |= ~(np.isfinite(w) & (w >= 0.0) & (w <= MAX_WEIGHT))
        r = cols.scalars["sample_rate"].astype(np.float64)
        return bad | ~((r > 0.0) & (r <= 1.0))

    def build_columns(self, cols: Columns, keep: np.ndarray,
                      positions: dict[int, int] | None = None) -> Batch:
        """The Batch ``build`` makes of the samples ``keep`` (n,) selects, in order; they
        passed ``problems``."""
        id_len, id_flat = cols.arrays["ids"]
        slot_len, slot_flat = cols.arrays["slots"]
        dense_len, dense_flat = cols.arrays["dense"]
        lengths = id_len[keep]
        b, total = len(lengths), int(lengths.sum())
        raw_ids = id_flat[np.repeat(keep, id_len)]
        raw_slots = slot_flat[np.repeat(keep, slot_len)].astype(np.int64)
        pos = np.searchsorted(self._slots, raw_slots).clip(0, len(self._slots) - 1)
        kept = self._slots[pos] == raw_slots
        sample_of = np.repeat(np.arange(b, dtype=np.int64), lengths)[kept]
        offsets = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(np.bincount(sample_of, minlength=b), out=offsets[1:])
        labels, unknown, action_rows, delays = self._labels_of(cols, keep)
        event_ms = cols.scalars["event_time_ms"][keep]
        dd = self.model.dense_dim
        rids = cols.strings["request_id"]
        return Batch(
            ids=raw_ids[kept],
            fields=self._slot_field[pos[kept]],
            offsets=offsets,
            dense=dense_flat[np.repeat(keep, dense_len)].astype(np.float32).reshape(b, dd),
            labels=labels,
            weights=cols.scalars["weight"][keep].astype(np.float32),
            sample_rate=cols.scalars["sample_rate"][keep].astype(np.float32),
            flags=cols.scalars["flags"][keep].astype(np.int32),
            event_time_ms=event_ms,
            emit_time_ms=cols.scalars["emit_time_ms"][keep],
            action_rows=action_rows,
            action_ms=event_ms[action_rows] + delays,
            request_ids=[rids[i] for i in np.flatnonzero(keep).tolist()],
            positions=dict(positions or {}),
            dropped_ids=int(total - kept.sum()),
            unknown_labels=unknown,
            labelled=cols.string_arrays["label_types"][0][keep] > 0,
        )

    def _labels_of(self, cols: Columns, keep: np.ndarray
                   ) -> tuple[np.ndarray, dict[str, int], np.ndarray, np.ndarray]:
        """(labels (B, H), unknown label types, action_rows, their delays), as ``build``:
        a loop over the positives only."""
        count, types = cols.string_arrays["label_types"]
        delay_len, delay_flat = cols.arrays["label_delays_ms"]
        first, dfirst = np.cumsum(count) - count, np.cumsum(delay_len) - delay_len
        row_of = np.cumsum(keep) - 1
        labels = np.zeros((int(keep.sum()), len(self._heads)), dtype=np.float32)
        unknown: dict[str, int] = {}
        act_rows: list[int] = []
        act_delays: list[np.ndarray] = []
        for i in np.flatnonzero(keep & (count > 0)).tolist():
            r, c = int(row_of[i]), int(count[i])
            for t in set(types[first[i]:first[i] + c]):
                h = self._heads.get(t)
                if h is not None:
                    labels[r, h] = 1.0
                else:
                    unknown[t] = unknown.get(t, 0) + 1
            if delay_len[i] == c:
                act_rows.extend([r] * c)
                act_delays.append(delay_flat[dfirst[i]:dfirst[i] + c])
        delays = np.concatenate(act_delays) if act_delays else np.zeros(0, dtype=np.int64)
        return labels, unknown, np.asarray(act_rows, dtype=np.int64), delays.astype(np.int64)


def take(batch: Batch, rows: np.ndarray) -> Batch:
    """The samples ``rows`` (sorted indices) of ``batch``; no positions (the caller decides)."""
    starts, ends = batch.offsets[rows], batch.offsets[rows + 1]
    lengths = ends - starts
    id_rows = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    action_rows = action_ms = None
    if batch.action_rows is not None and batch.action_ms is not None:
        new_index = np.full(len(batch), -1, np.int64)
        new_index[rows] = np.arange(len(rows))
        keep = new_index[batch.action_rows] >= 0
        action_rows, action_ms = new_index[batch.action_rows[keep]], batch.action_ms[keep]
    return Batch(ids=batch.ids[id_rows], fields=batch.fields[id_rows], offsets=offsets, dense=batch.dense[rows],
                 labels=batch.labels[rows], weights=batch.weights[rows], sample_rate=batch.sample_rate[rows],
                 flags=batch.flags[rows], event_time_ms=batch.event_time_ms[rows],
                 request_ids=[batch.request_ids[r] for r in rows] if batch.request_ids else [],
                 labelled=None if batch.labelled is None else batch.labelled[rows],
                 emit_time_ms=None if batch.emit_time_ms is None else batch.emit_time_ms[rows],
                 action_rows=action_rows, action_ms=action_ms)


def concat(batches: list[Batch]) -> Batch:
    """One batch of ``batches`` in order; positions, dropped ids and unknown labels are the
    caller's (they describe consumption, not rows)."""
    if len(batches) == 1:
        return batches[0]
    sizes = [len(b) for b in batches]
    base = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    id_base = np.cumsum([0] + [int(b.offsets[-1]) for b in batches[:-1]])
    offsets = np.concatenate([[0]] + [b.offsets[1:] + ib for b, ib in zip(batches, id_base)]).astype(np.int64)

    def opt(get: Callable[[Batch], np.ndarray | None]) -> np.ndarray | None:
        parts = [get(b) for b in batches]
        return None if any(p is None for p in parts) else np.concatenate(parts)  # type: ignore[arg-type]

    traced = all(b.action_rows is not None and b.action_ms is not None for b in batches)
    return Batch(ids=np.concatenate([b.ids for b in batches]), fields=np.concatenate([b.fields for b in batches]),
                 offsets=offsets, dense=np.concatenate([b.dense for b in batches]),
                 labels=np.concatenate([b.labels for b in batches]),
                 weights=np.concatenate([b.weights for b in batches]),
                 sample_rate=np.concatenate([b.sample_rate for b in batches]),
                 flags=np.concatenate([b.flags for b in batches]),
                 event_time_ms=np.concatenate([b.event_time_ms for b in batches]),
                 request_ids=[r for b in batches for r in b.request_ids]
                 if all(len(b.request_ids) == len(b) for b in batches) else [],
                 labelled=opt(lambda b: b.labelled if b.labelled is not None else b.labels.any(1)),
                 emit_time_ms=opt(lambda b: b.emit_time_ms),
                 action_rows=np.concatenate([b.action_rows + o for b, o in zip(batches, base)])
                 if traced else None,
                 action_ms=np.concatenate([b.action_ms for b in batches]) if traced else None)
