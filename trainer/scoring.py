"""How a batch is scored: the id -> row -> prediction contract shared by the trainer and
every serving replica (``sync.replica``). Written once, here.

A batch (``trainer.batch``) holds B samples with N sparse ids in all; the model
(``trainer.model``) has F fields (one per entry of ``ModelConfig.slots``, in that order),
embedding dimension D, Dd dense features and H heads::

    batch.ids (N,) ──distinct_ids──▶ ids.uniq  (U,)  distinct ids, first-seen order
                                    ids.codes (N,)  batch.ids[k] == ids.uniq[ids.codes[k]]
    lookup(ids.uniq + K default ids) ──▶ rows (U, D), found (U,), defaults (F, D)
    rows[ids.codes] ──────────────▶ per_id    (N, D)   an id not found reads zeros, or its
                                                       field's mean row (``field_mean_slots``)
    pool by (batch.sample_index, batch.fields), mean or sum (``ModelConfig.pooling``)
                    ──────────────▶ emb       (B, F, D)  zeros for a field without ids
    model.score(emb, batch.dense (B, Dd)) ──▶ probs (B, H)

Id -> row mapping: there is ONE embedding table, ``TABLE_NAME`` (``"emb"``), of dimension
``ModelConfig.dim``, keyed by the sample's 64-bit feature ids as they are (the row of
``ids[k]`` is ``emb[ids[k]]``). Ids of slots that are not model fields were already dropped
by ``BatchBuilder``. An id the table does not hold (unseen, not yet admitted, evicted)
reads zeros, or for a slot of ``ModelConfig.field_mean_slots`` (K of them) the slot's mean
row: the row of ``default_row_id(slot)`` in the same table, a running mean of the slot's
rows that the trainer keeps and publishes like any row (zeros while it has none). The
trainer looks rows up in its ``EmbeddingTable``, a replica in its row store; given the same
rows and dense weights both get the same probabilities.

    probs = score_batch(model, batch, lookup)   # lookup: (U,) int64 -> ((U, D) rows, (U,) found)

Training uses the same steps (``distinct_ids``, the default rows, ``pool_rows``) on rows it
can take gradients of, then the model's logits instead of ``score``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from schemas.feature_ids import feature_id
from trainer.batch import Batch
from trainer.config import ModelConfig
from trainer.model import CTRModel

TABLE_NAME = "emb"

Rows = torch.Tensor | np.ndarray
RowLookup = Callable[[np.ndarray], tuple[Rows, Rows]]
"""(U,) distinct int64 ids -> ((U, D) float32 rows, zeros for ids it does not hold; (U,) bool
found)."""

DEFAULT_ROW_VALUE = "\x00unknown"  # hashed with the slot: no raw feature value is this string


def default_row_id(slot: int) -> int:
    """The id of the row that ids of ``slot`` without a row of their own read.

    >>> default_row_id(3) == feature_id(3, DEFAULT_ROW_VALUE) != default_row_id(4)
    True
    """
    return feature_id(slot, DEFAULT_ROW_VALUE)


@functools.cache
def _mean_rows(slots: tuple[int, ...], mean_slots: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(K,) fields and (K,) mean-row ids, read-only: worked out once per model, not per batch."""
    fields = np.array([f for f, s in enumerate(slots) if s in mean_slots], np.int64)
    ids = np.array([default_row_id(slots[f]) for f in fields], np.int64)
    fields.setflags(write=False)
    ids.setflags(write=False)
    return fields, ids


def default_fields(cfg: ModelConfig) -> np.ndarray:
    """(K,) int64 fields (positions in ``cfg.slots``) of ``cfg.field_mean_slots``, in field order."""
    return _mean_rows(cfg.slots, cfg.field_mean_slots)[0]


def default_ids(cfg: ModelConfig) -> np.ndarray:
    """(K,) int64 mean-row ids of ``default_fields(cfg)``, in the same order."""
    return _mean_rows(cfg.slots, cfg.field_mean_slots)[1]


def field_defaults(cfg: ModelConfig, rows: torch.Tensor) -> torch.Tensor:
    """(F, D) default row of every field from the (K, D) rows of ``default_ids(cfg)``:
    zeros for a field that reads zeros."""
    out = torch.zeros(len(cfg.slots), rows.shape[1], dtype=rows.dtype, device=rows.device)
    out[torch.tensor(default_fields(cfg), device=rows.device)] = rows
    return out




@dataclass(frozen=True)
class BatchIds:
    """The distinct ids of a batch and, for every id of the batch, which one it is."""

    uniq: np.ndarray   # (U,) int64, first-seen order
    codes: np.ndarray  # (N,) int64, batch.ids == uniq[codes]

    def counts(self) -> np.ndarray:
        """(U,) occurrences of each distinct id in the batch."""
        return np.bincount(self.codes, minlength=len(self.uniq))


def distinct_ids(batch: Batch) -> BatchIds:
    codes, uniq = pd.factorize(batch.ids)
    return BatchIds(uniq=np.asarray(uniq, dtype=np.int64), codes=np.asarray(codes, dtype=np.int64))


def pool(values: torch.Tensor, sample_index: np.ndarray | torch.Tensor,
         fields: np.ndarray | torch.Tensor, batch_size: int, num_fields: int, mean: bool = False) -> torch.Tensor:
    """Sum-pool (``mean``: average) per (sample, field): values (N, D) of the ids in a batch
    -> (B, F, D); a field without ids is zeros either way."""
    dev = values.device
    si = torch.as_tensor(sample_index, device=dev)
    fi = torch.as_tensor(fields, device=dev)
    cell = si * num_fields + fi
    out = torch.zeros(batch_size * num_fields, values.shape[1], device=dev, dtype=values.dtype)
    out.index_add_(0, cell, values)
    if mean:
        counts = torch.bincount(cell, minlength=batch_size * num_fields).clamp_(min=1)
        out = out / counts.to(values.dtype).unsqueeze(1)
    return out.view(batch_size, num_fields, values.shape[1])


def one_id_per_field(batch: Batch, num_fields: int) -> bool:
    """Every sample holds exactly one id per field, in field order (N = B * F): pooling is
    then the identity, sum and mean alike."""
    b, f = len(batch), num_fields
    if len(batch.ids) != b * f or not (np.diff(batch.offsets) == f).all():
        return False
    return bool((batch.fields.reshape(b, f) == np.arange(f)).all())


def pool_rows(batch: Batch, ids: BatchIds, rows: torch.Tensor, num_fields: int, mean: bool = False,
              found: torch.Tensor | None = None, defaults: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled field embeddings (B, F, D) from the rows (U, D) of ``ids.uniq``; with ``found``
    (U,) bool and ``defaults`` (F, D), an id not found reads its field's default row."""
    codes = torch.from_numpy(ids.codes).to(rows.device)
    per_id = rows.index_select(0, codes)  # (N, D)
    if found is not None and defaults is not None and not bool(found.all()):
        unknown = ~found.index_select(0, codes)  # (N,)
        fallback = defaults.index_select(0, torch.from_numpy(batch.fields).to(rows.device))  # (N, D)
        per_id = torch.where(unknown.unsqueeze(1), fallback, per_id)
    if one_id_per_field(batch, num_fields):
        # nothing to pool: the index_add_ below and its backward were ~15% of a CPU step at
        # B=4096 with 26 one-id fields (bench/trainer_bench.py); the same values exactly
        return per_id.view(len(batch), num_fields, rows.shape[1])
    return pool(per_id, batch.sample_index, batch.fields, len(batch), num_fields, mean)  # (B, F, D)


@torch.no_grad()
def score_batch(model: CTRModel, batch: Batch, lookup: RowLookup) -> np.ndarray:
    """(B, H) float32 probabilities of ``batch``; rows come from ``lookup`` (see the module
    docstring). Reads only: no counting, admission or training."""
    device = next(model.parameters()).device
    ids = distinct_ids(batch)
    u = len(ids.uniq)
    with_defaults = bool(model.cfg.field_mean_slots)
    asked = np.concatenate([ids.uniq, default_ids(model.cfg)]) if with_defaults else ids.uniq
    got_rows, got_found = lookup(asked)
    rows = torch.as_tensor(got_rows, dtype=torch.float32, device=device)  # (U [+ K], D)
    found = torch.as_tensor(got_found, dtype=torch.bool, device=device)  # (U [+ K],)
    defaults = field_defaults(model.cfg, rows[u:]) if with_defaults else None  # (F, D), zeros where none
    emb = pool_rows(batch, ids, rows[:u], len(model.cfg.slots), model.cfg.pooling == "mean",
                    found[:u], defaults)  # (B, F, D)
    dense = torch.from_numpy(batch.dense).to(device)  # (B, Dd)
    return model.score(emb, dense).cpu().numpy()  # (B, H)
