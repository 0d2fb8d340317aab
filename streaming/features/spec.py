"""The feature spec: every realtime feature is declared here, from a few settings, so adding
a window or an action type adds features without touching job code.

For each entity (``user``, ``item``) and each window ``w`` in ``windows_ms``:

    <entity>_imp_<w>        impressions of the entity in [t - w, t)
    <entity>_<action>_<w>   actions of each type in ``action_types`` in [t - w, t)
    <entity>_ctr_<w>        (n_ctr_action + prior * strength) / (n_imp + strength)

and for users the last ``last_n`` distinct items acted on strictly before ``t`` (newest
first; ties in time broken by the larger item id first). ``t`` is the impression's event
time: only events strictly before it count (point-in-time correct).

Attached to an impression (no schema change): ``dense`` gets the user values then the item
values, in ``names(entity)`` order (counts as log1p(count) when ``log1p_counts``), and the
last-N items become sparse ids ``feature_id(last_n_slot, item)`` in slot ``last_n_slot``.

>>> spec = FeatureSpec(windows_ms=(300_000, 3_600_000), action_types=("cart", "fav", "buy"),
...                    ctr_action="buy")
>>> spec.names("user")[:5], spec.names("user")[-1]
(['user_imp_5m', 'user_cart_5m', 'user_fav_5m', 'user_buy_5m', 'user_ctr_5m'], 'user_ctr_1h')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

from schemas.contracts import ACTION_TYPES
from streamtrain.config import check

Entity = Literal["user", "item"]
FeatureKind = Literal["count", "ctr"]
ENTITIES: tuple[Entity, ...] = get_args(Entity)
IMPRESSION = "imp"


@dataclass(frozen=True, slots=True)
class FeatureDef:
    name: str
    kind: FeatureKind
    event: str  # "imp" or an action type (for "ctr": the numerator's action type)
    window_ms: int


def window_label(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0 and ms // size < (24 if unit == "h" else 10**9):
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class FeatureSpec:
    """``[features]``: what the feature job computes and how it attaches it.

    dedup_ttl_ms: a second record with the same key (impression: request id + item; action:
        request id + item + type) less than this apart in event time is a duplicate.
    """

    windows_ms: tuple[int, ...] = (300_000, 3_600_000, 86_400_000)
    action_types: tuple[str, ...] = ACTION_TYPES  # the declared list (schemas/contracts.py)
    ctr_action: str = "click"
    ctr_prior: float = 0.05
    ctr_strength: float = 20.0
    last_n: int = 10
    last_n_actions: tuple[str, ...] = ()  # action types that count for last-N; () = all
    last_n_slot: int = 100
    log1p_counts: bool = True
    dedup_ttl_ms: int = 600_000

    def __post_init__(self) -> None:
        check(len(self.windows_ms) >= 1 and all(w > 0 for w in self.windows_ms),
              "features.windows_ms", self.windows_ms, "one or more positive window lengths (ms)")
        check(len(set(self.windows_ms)) == len(self.windows_ms), "features.windows_ms",
              self.windows_ms, "distinct windows")
        check(len(self.action_types) >= 1 and IMPRESSION not in self.action_types
              and len(set(self.action_types)) == len(self.action_types),
              "features.action_types", self.action_types, f"distinct action type names other than {IMPRESSION!r}")
        check(self.ctr_action in self.action_types, "features.ctr_action", self.ctr_action,
              f"one of features.action_types {self.action_types}")
        check(0 <= self.ctr_prior <= 1, "features.ctr_prior", self.ctr_prior, "in [0, 1]")
        check(self.ctr_strength > 0, "features.ctr_strength", self.ctr_strength, "> 0")
        check(self.last_n >= 0, "features.last_n", self.last_n, ">= 0")
        check(set(self.last_n_actions) <= set(self.action_types), "features.last_n_actions",
              self.last_n_actions, f"a subset of features.action_types {self.action_types}")
        check(self.last_n_slot >= 0, "features.last_n_slot", self.last_n_slot, ">= 0")
        check(self.dedup_ttl_ms > 0, "features.dedup_ttl_ms", self.dedup_ttl_ms, "> 0")

    @property
    def max_window_ms(self) -> int:
        return max(self.windows_ms)

    @property
    def events(self) -> tuple[str, ...]:
        return (IMPRESSION, *self.action_types)

    @property
    def acted_types(self) -> frozenset[str]:
        return frozenset(self.last_n_actions or self.action_types)

    def features(self, entity: Entity) -> tuple[FeatureDef, ...]:
        feats = self._features.get(entity)
        if feats is None:
            check(False, "entity", entity, f"one of {ENTITIES}")
            raise AssertionError  # unreachable: check raised
        return feats

    # built once per spec (the job reads them for every impression); cached in the instance
    # dict, not fields: equality, hashing, repr and the config loader see the settings only
    @cached_property
    def _features(self) -> dict[str, tuple[FeatureDef, ...]]:
        return {e: self._build_features(e) for e in ENTITIES}

    @cached_property
    def _log1p(self) -> dict[str, tuple[bool, ...]]:
        return {e: tuple(f.kind == "count" for f in feats) for e, feats in self._features.items()}

    def _build_features(self, entity: Entity) -> tuple[FeatureDef, ...]:
        out = []
        for w in self.windows_ms:
            label = window_label(w)
            out += [FeatureDef(f"{entity}_{ev}_{label}", "count", ev, w) for ev in self.events]
            out.append(FeatureDef(f"{entity}_ctr_{label}", "ctr", self.ctr_action, w))
        return tuple(out)

    def names(self, entity: Entity) -> list[str]:
        return [f.name for f in self.features(entity)]

    def dense_width(self) -> int:
        """How many dense values the job appends to every impression (user + item)."""
        return sum(len(self.features(e)) for e in ENTITIES)

    def attach_values(self, entity: Entity, values: list[float]) -> list[float]:
        """The values as appended to ``Impression.dense`` (counts log1p'd when configured)."""
        if not self.log1p_counts:
            return list(values)
        return [math.log1p(v) if log else v for log, v in zip(self._log1p[entity], values)]
