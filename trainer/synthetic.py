"""A small seeded stream of Sample records with learnable structure, for tests, benchmarks
and runs without the traffic generator: users and items with latent vectors (users drift
slowly), Zipf-distributed context features in the other slots, labels drawn from a
logistic model of all of them. Ids are global: ``packed_feature_id(slot, value)`` =
``(slot << 48) | value``, a readable packing for synthetic data only; real producers hash
(slot, value) with ``schemas.feature_ids.feature_id``. The trainer treats both as opaque keys.

>>> samples = SyntheticStream(num_slots=26, seed=1).take(3)
>>> len(samples), len(samples[0].ids)
(3, 26)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from schemas import Sample

SLOT_SHIFT = 48


def packed_feature_id(slot: int | np.ndarray, value: int | np.ndarray) -> Any:
    """``(slot << 48) | value`` as int64 (synthetic ids; not ``schemas.feature_ids.feature_id``)."""
    return (np.int64(slot) << SLOT_SHIFT) | np.int64(value)


class SyntheticStream:
    def __init__(self, num_slots: int = 26, users: int = 1000, items: int = 500,
                 vocab: int = 500, dense_dim: int = 0, heads: tuple[str, ...] = ("click",),
                 seed: int = 0, start_ms: int = 1_700_000_000_000, step_ms: int = 100,
                 drift: float = 0.002, base_logit: float = -1.5) -> None:
        assert num_slots >= 2
        self.rng = np.random.default_rng(seed)
        self.num_slots, self.vocab, self.dense_dim, self.heads = num_slots, vocab, dense_dim, heads
        k = 8
        self.user_vec = self.rng.normal(0, 0.7, (users, k))
        self.item_vec = self.rng.normal(0, 0.7, (items, k))
        self.user_bias = self.rng.normal(0, 0.6, users)
        self.item_bias = self.rng.normal(0, 0.6, items)
        self.ctx_effect = self.rng.normal(0, 1.0, (num_slots, vocab))
        self.dense_w = self.rng.normal(0, 0.5, dense_dim)
        self.head_bias = np.linspace(0, -1.5, len(heads)) + base_logit
        self.time_ms, self.step_ms, self.drift, self.n = start_ms, step_ms, drift, 0
        zipf = 1.0 / np.arange(1, vocab + 1) ** 1.1
        self.ctx_p = zipf / zipf.sum()

    def take(self, n: int) -> list[Sample]:
        r = self.rng
        u = r.integers(0, len(self.user_vec), n)
        it = r.integers(0, len(self.item_vec), n)
        ctx = r.choice(self.vocab, size=(n, self.num_slots - 2), p=self.ctx_p)
        dense = r.normal(0, 1, (n, self.dense_dim)).astype(np.float32)
        slots_ix = np.arange(2, self.num_slots)
        logit = (self.user_vec[u] * self.item_vec[it]).sum(1) + self.user_bias[u] + self.item_bias[it] \
            + self.ctx_effect[slots_ix, ctx].sum(1) / np.sqrt(self.num_slots - 2) + dense @ self.dense_w
        self.last_logit = logit  # the true logit of the last take(), for oracle metrics
        labels = r.random((n, len(self.heads))) < 1 / (1 + np.exp(-(logit[:, None] + self.head_bias)))
        self.user_vec += r.normal(0, self.drift, self.user_vec.shape)
        ids = np.concatenate([packed_feature_id(0, u)[:, None], packed_feature_id(1, it)[:, None],
                              packed_feature_id(slots_ix[None, :], ctx)], axis=1)
        slots = list(range(self.num_slots))
        out = []
        for i in range(n):
            t = self.time_ms + i * self.step_ms
            out.append(Sample(
                request_id=f"r{self.n + i}", user_id=int(u[i]), item_id=int(it[i]),
                event_time_ms=t, emit_time_ms=t, slots=slots, ids=ids[i].tolist(),
                dense=dense[i].tolist(), label_types=[h for h, y in zip(self.heads, labels[i]) if y],
                label_delays_ms=[1000 for y in labels[i] if y]))
        self.time_ms += n * self.step_ms
        self.n += n
        return out
