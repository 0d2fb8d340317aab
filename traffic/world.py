"""The simulated product's world for the live traffic source (``traffic.live``): users and
items, the true click model the simulated users act on, and the features a request carries.
Engine-free and clock-free: time is passed in (``now_ms``), randomness comes from the
caller's ``numpy.random.Generator``, so a test or a benchmark can run hours in a second.

The true click probability of item ``i`` shown to user ``u`` at rank ``r``::

    logit = logit_base + item_bias[i] + affinity[age(u), category(i)]
            + personal_weight * user_vec[u] . item_vec[i] - position_effect * r

Built to be learnable within a 3-minute demo by the trainer's model (its slots are the
generator's ``SLOTS``): a strong item bias (the ``item_id`` slot) and user-group x category
affinities (the ``user_age`` and ``category`` slots, crossed by the interaction layer) carry
most of the signal; the personal term (``user_id`` x ``item_id``) is what a long run adds.
Preferences drift over (wall) time: each user's vector as in the generator, and the affinity
table as a slow random walk, so yesterday's model goes stale.

>>> cfg = WorldSettings()
>>> world = LiveWorld(cfg)
>>> rng = np.random.default_rng(0)
>>> u, items = world.sample_user(rng), world.candidates(rng, 20)
>>> world.click_matrix(u, items, ranks=3).shape   # (candidates, ranks)
(20, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas import Impression
from schemas.feature_ids import feature_id
from traffic.generator import FAR_FUTURE_MS, SLOTS

DENSE_POSITION = 2  # index of "position" in traffic.generator.DENSE


@dataclass(frozen=True)
class WorldSettings:
    """What the world is made of (``traffic.live.LiveTrafficConfig.world()`` fills it)."""

    seed: int = 11
    users: int = 2_000
    items: int = 150
    categories: int = 16
    age_groups: int = 8
    latent_dim: int = 8
    base_ctr: float = 0.06
    item_bias_std: float = 1.0
    affinity_std: float = 0.7
    affinity_rank: int = 1
    personal_weight: float = 0.4
    position_effect: float = 0.15
    drift_per_hour: float = 0.6
    like_given_click: float = 0.2
    conversion_given_click: float = 0.08


class LiveWorld:
    """Static parts (items, user attributes) come from ``seed``; the parts that drift
    (``user_vec``, ``affinity``) and when they last moved are the ``snapshot``."""

    def __init__(self, cfg: WorldSettings) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        d = cfg.latent_dim
        self.user_vec = rng.normal(0, 1 / math.sqrt(d), (cfg.users, d))
        self.user_seen_ms = np.zeros(cfg.users, dtype=np.int64)  # 0: not yet seen (no drift)
        self.user_age = rng.integers(0, cfg.age_groups, cfg.users)
        self.user_city = rng.integers(0, 50, cfg.users)
        self.user_activity = rng.pareto(1.5, cfg.users) + 1
        self.user_cdf = np.cumsum(self.user_activity / self.user_activity.sum())
        self.item_vec = rng.normal(0, 1 / math.sqrt(d), (cfg.items, d))
        self.item_cat = rng.integers(0, cfg.categories, cfg.items)
        self.item_price = rng.lognormal(3, 1, cfg.items)
        self.item_bias = rng.normal(0, cfg.item_bias_std, cfg.items)
        # low rank (age groups and categories each have a few latent tastes): what a
        # factorization machine picks up from a few hundred impressions per cell
        rank = cfg.affinity_rank
        self.affinity = (rng.normal(0, 1, (cfg.age_groups, rank)) @ rng.normal(0, 1, (rank, cfg.categories))
                         * cfg.affinity_std / math.sqrt(rank))
        self.affinity_seen_ms = 0
        self.logit_base = math.log(cfg.base_ctr / (1 - cfg.base_ctr))
        self.given_click = np.array([1.0, cfg.like_given_click, cfg.conversion_given_click])
        # feature ids that do not change: per user (user_id, user_age, user_city), per item
        # (item_id, category, price_bucket)
        self._user_ids = [(feature_id(0, u + 1), feature_id(3, int(self.user_age[u])),
                           feature_id(4, int(self.user_city[u]))) for u in range(cfg.users)]
        buckets = np.minimum(9, np.log1p(self.item_price)).astype(int)
        self._item_ids = [(feature_id(1, i + 1), feature_id(2, int(self.item_cat[i])),
                           feature_id(7, int(buckets[i]))) for i in range(cfg.items)]
        self._context_ids: dict[tuple[int, int], tuple[int, int]] = {}  # (device, hour) ids
        self._user_dense = np.log(self.user_activity).astype(float).tolist()
        self._item_dense = (self.item_price / 100.0).astype(float).tolist()

    # -- who asks, what could be shown ---------------------------------------------------
    def sample_user(self, rng: np.random.Generator) -> int:
        """A user, activity-weighted (a few heavy users, a long tail), as the generator does."""
        return min(int(np.searchsorted(self.user_cdf, rng.random())), self.cfg.users - 1)

    def candidates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` distinct items at random (the candidate generator)."""
        return rng.choice(self.cfg.items, size=min(n, self.cfg.items), replace=False)

    # -- the truth ---------------------------------------------------------------------
    def drift(self, rng: np.random.Generator, u: int, now_ms: int) -> None:
        """Move user ``u``'s preferences by the time since they were last seen, and the
        affinity table by the time since it last moved (each at most once per second)."""
        sd_h = self.cfg.drift_per_hour
        seen = int(self.user_seen_ms[u])
        if seen == 0:
            self.user_seen_ms[u] = now_ms
        elif now_ms - seen >= 1000:
            hours = (now_ms - seen) / 3_600_000
            d = self.cfg.latent_dim
            self.user_vec[u] += rng.normal(0, sd_h * math.sqrt(hours) / math.sqrt(d), d)
            self.user_seen_ms[u] = now_ms
        if self.affinity_seen_ms == 0:
            self.affinity_seen_ms = now_ms
        elif now_ms - self.affinity_seen_ms >= 1000:
            hours = (now_ms - self.affinity_seen_ms) / 3_600_000
            self.affinity += rng.normal(0, sd_h * self.cfg.affinity_std * math.sqrt(hours), self.affinity.shape)
            self.affinity_seen_ms = now_ms

    def click_logits(self, u: int, items: np.ndarray) -> np.ndarray:
        """(n,) true click logits of ``items`` for user ``u`` at rank 0."""
        personal = self.item_vec[items] @ self.user_vec[u]
        return (self.logit_base + self.item_bias[items] + self.affinity[self.user_age[u], self.item_cat[items]]
                + self.cfg.personal_weight * personal)

    def click_matrix(self, u: int, items: np.ndarray, ranks: int) -> np.ndarray:
        """(n, ranks) true click probability of each item if shown at each rank."""
        shift = self.cfg.position_effect * np.arange(ranks)
        return 1 / (1 + np.exp(-(self.click_logits(u, items)[:, None] - shift[None, :])))

    def head_probs(self, p_click: np.ndarray) -> np.ndarray:
        """(n, 3) true probabilities per action type (click, like, conversion)."""
        return p_click[:, None] * self.given_click[None, :]

    # -- what a request carries -----------------------------------------------------------
    def features(self, u: int, i: int, hour: int, device: int,
                 position: int) -> tuple[list[int], list[int], list[float]]:
        """(slots, ids, dense) of item ``i`` for user ``u``: the generator's base features
        (``SLOTS``, ``DENSE``), position = the rank it is shown at (0 when scoring)."""
        uid, age, city = self._user_ids[u]
        iid, cat, price = self._item_ids[i]
        context = self._context_ids.get((device, hour))
        if context is None:
            context = self._context_ids[(device, hour)] = (feature_id(5, device), feature_id(6, hour))
        ids = [uid, iid, cat, age, city, context[0], context[1], price]
        return list(range(len(SLOTS))), ids, [self._user_dense[u], self._item_dense[i], float(position)]

    def impression(self, request_id: str, u: int, i: int, now_ms: int, device: int, rank: int) -> Impression:
        hour = int((now_ms // 3_600_000) % 24)
        slots, ids, dense = self.features(u, i, hour, device, rank)
        return Impression(request_id=request_id, user_id=u + 1, item_id=i + 1, event_time_ms=now_ms,
                          slots=slots, ids=ids, dense=dense)

    # -- snapshot / restore ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"settings": self.cfg, "user_vec": self.user_vec.copy(), "user_seen_ms": self.user_seen_ms.copy(),
                "affinity": self.affinity.copy(), "affinity_seen_ms": self.affinity_seen_ms}

    def restore(self, state: dict[str, Any]) -> None:
        if state["settings"] != self.cfg:
            raise ValueError(f"the saved world was made with {state['settings']}, not {self.cfg}")
        self.user_vec = state["user_vec"].copy()
        self.user_seen_ms = state["user_seen_ms"].copy()
        self.affinity = state["affinity"].copy()
        self.affinity_seen_ms = int(state["affinity_seen_ms"])


def malformed_value(kind: str, imp: Impression, rng: np.random.Generator, codec: Any) -> bytes:
    """The bytes of a malformed impression of ``kind`` (``traffic.generator.MALFORMED_KINDS``,
    as the generator makes them) for a good one, ``imp``."""
    good = codec.encode(imp)
    bad = Impression(imp.request_id + "-bad", imp.user_id, imp.item_id, imp.event_time_ms, imp.slots, imp.ids,
                     imp.dense)
    if kind == "garbage":
        return bytes(rng.integers(0, 256, 24, dtype=np.uint8))
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "missing_request_id":
        bad.request_id = ""
    elif kind == "zero_timestamp":
        bad.event_time_ms = 0
    else:  # future_timestamp: year 2100, ahead of any processing clock
        bad.event_time_ms = FAR_FUTURE_MS
    return bytes(codec.encode(bad))
