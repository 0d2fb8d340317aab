"""Synthetic traffic: users and items with latent preferences that drift over event time,
impressions with sparse and dense features, actions (click, like, conversion) after
realistic lognormal delays, and configurable duplicates, late (out-of-order) arrivals and
malformed records. Engine-free and seeded: the same config gives the same byte stream.

>>> gen = TrafficGenerator(GeneratorConfig(seed=7, duration_s=5, start_ms=1_700_000_000_000))
>>> events = list(gen.events())   # in arrival order; ev.timestamp_ms is the event time
>>> len(events), events[0].topic, gen.stats["impressions"]   # stats: what was injected
(1059, 'impressions', 959)

A producer sends each event as
``producer.send(topic_of[ev.topic], key=ev.key, value=ev.value, timestamp_ms=ev.timestamp_ms)``.

Why drift: a model trained once goes stale as preferences move, which is what online
learning fixes; progressive AUC on this stream shows it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from schemas import Action, Impression, codec_for
from schemas.contracts import ACTION_TYPES
from schemas.feature_ids import feature_id
from streamtrain.config import check

SLOTS = ("user_id", "item_id", "category", "user_age", "user_city", "device", "hour", "price_bucket")
DENSE = ("user_activity", "item_price", "position")
FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01
MALFORMED_KINDS = ("garbage", "truncated", "missing_request_id", "zero_timestamp", "future_timestamp")
# the actions it emits are the declared types (schemas/contracts.py), in the declared order
CLICK, LIKE, CONVERSION = ACTION_TYPES


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 7
    users: int = 5_000
    items: int = 1_000
    categories: int = 40
    latent_dim: int = 8
    impressions_per_s: float = 200.0  # in event time
    duration_s: float = 60.0  # event-time span of impressions
    speedup: float = 0.0  # event seconds per wall second when producing; 0 = as fast as possible
    start_ms: int = 0  # event time of the start; 0 = derived from the clock (see TrafficGenerator)
    drift_per_hour: float = 0.6  # std of each user's preference random walk per event-time hour
    base_ctr: float = 0.05
    like_given_click: float = 0.2
    conversion_given_click: float = 0.08
    click_delay_median_s: float = 15.0
    like_delay_median_s: float = 60.0
    conversion_delay_median_s: float = 900.0
    delay_sigma: float = 1.3  # lognormal spread: most within minutes, a tail of hours
    max_delay_s: float = 4 * 3600.0  # the tail is cut here
    duplicate_rate: float = 0.01
    out_of_order_rate: float = 0.02
    out_of_order_max_s: float = 30.0
    malformed_rate: float = 0.002
    drain: bool = True  # after the last impression, still emit the actions already scheduled

    def __post_init__(self) -> None:
        for name in ("users", "items", "categories", "latent_dim"):
            check(getattr(self, name) >= 1, f"generator.{name}", getattr(self, name), ">= 1")
        check(self.impressions_per_s > 0, "generator.impressions_per_s", self.impressions_per_s, "> 0")
        check(self.duration_s > 0, "generator.duration_s", self.duration_s, "> 0")
        check(self.speedup >= 0, "generator.speedup", self.speedup, ">= 0 (0 = as fast as possible)")
        check(self.max_delay_s > 0, "generator.max_delay_s", self.max_delay_s, "> 0")
        for name in ("base_ctr", "like_given_click", "conversion_given_click", "duplicate_rate",
                     "out_of_order_rate", "malformed_rate"):
            v = getattr(self, name)
            check(0 <= v < 1, f"generator.{name}", v, "a probability in [0, 1)")


@dataclass(frozen=True, slots=True)
class Event:
    topic: str  # "impressions" or "actions" (the role; the CLI maps it to a topic name)
    key: bytes
    value: bytes
    timestamp_ms: int  # event time (for malformed records: the time it was sent)
    arrival_ms: int  # when it reaches Kafka in the simulation (>= event time)


class TrafficGenerator:
    """Without ``config.start_ms`` the start comes from ``now_ms``: flat out (speedup 0) the
    stream is history that ends now, late actions included (start = now - duration -
    max_delay), so no event lies in the future; paced, it starts now.

    The oracle: with ``record_oracle`` the generator keeps, per impression request id, the
    true probability of each action type (``ACTION_TYPES`` order) that it drew the labels
    from, in ``oracle`` (``true_probabilities`` reads it for a list of request ids). It is
    the ceiling progressive validation compares a model with; it stays on this side (no
    record carries it) and grows with the impressions, so it is off by default.

    >>> gen = TrafficGenerator(GeneratorConfig(seed=7, duration_s=1, start_ms=1), record_oracle=True)
    >>> _ = list(gen.events())
    >>> gen.true_probabilities(["g7-0"]).round(3)
    array([[0.009, 0.002, 0.001]])
    """

    def __init__(self, config: GeneratorConfig, now_ms: int = 0, record_oracle: bool = False):
        self.config = config
        history_ms = 0 if config.speedup > 0 else int((config.duration_s + config.max_delay_s) * 1000)
        self.start_ms = config.start_ms or (now_ms - history_ms if now_ms else 0)
        check(self.start_ms > 0, "generator.start_ms", self.start_ms, "> 0 (or pass now_ms)")
        rng = self.rng = np.random.default_rng(config.seed)
        d = config.latent_dim
        self.user_vec = rng.normal(0, 1 / math.sqrt(d), (config.users, d))
        self.user_seen_ms = np.full(config.users, self.start_ms, dtype=np.int64)
        self.user_age = rng.integers(0, 8, config.users)
        self.user_city = rng.integers(0, 50, config.users)
        self.user_activity = rng.pareto(1.5, config.users) + 1
        self.user_cdf = np.cumsum(self.user_activity / self.user_activity.sum())
        self.item_vec = rng.normal(0, 1 / math.sqrt(d), (config.items, d))
        self.item_cat = rng.integers(0, config.categories, config.items)
        self.item_price = rng.lognormal(3, 1, config.items)
        self.item_bias = rng.normal(0, 0.5, config.items)
        self.logit_base = math.log(config.base_ctr / (1 - config.base_ctr))
        self.stats: Counter[str] = Counter()
        self._imp_codec = codec_for(Impression)
        self._act_codec = codec_for(Action)
        self._heap: list[tuple[int, int, Event]] = []
        self._seq = 0
        self.oracle: dict[str, np.ndarray] | None = {} if record_oracle else None
        self._given_click = np.array([1.0, config.like_given_click, config.conversion_given_click])

    def true_probabilities(self, request_ids: list[str]) -> np.ndarray:
        """(N, len(ACTION_TYPES)) true probability of each action type per request id, as
        drawn (the eventual label, whatever its delay); needs ``record_oracle``."""
        if self.oracle is None:
            raise ValueError("the generator was built without record_oracle=True")
        return np.stack([self.oracle[r] for r in request_ids]) if request_ids else np.zeros((0, 3))

    # -- the stream --------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        cfg, rng = self.config, self.rng
        end_ms = self.start_ms + int(cfg.duration_s * 1000)
        t = float(self.start_ms)
        n = 0
        while True:
            t += rng.exponential(1000.0 / cfg.impressions_per_s)
            if t >= end_ms:
                break
            now = int(t)
            while self._heap and self._heap[0][0] <= now:
                yield heapq.heappop(self._heap)[2]
            self._impression(now, n)
            n += 1
        while self._heap:
            arrival, _, ev = heapq.heappop(self._heap)
            if cfg.drain or arrival < end_ms:
                yield ev
            else:
                self.stats[f"not_emitted_{ev.topic}"] += 1

    def _push(self, ev: Event) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ev.arrival_ms, self._seq, ev))

    def _send(self, topic: str, key: bytes, value: bytes, event_ms: int) -> None:
        """Schedule one valid record, maybe late, maybe twice."""
        cfg, rng = self.config, self.rng
        arrival = event_ms
        if rng.random() < cfg.out_of_order_rate:
            arrival += int(rng.uniform(1, cfg.out_of_order_max_s) * 1000)
            self.stats[f"out_of_order_{topic}"] += 1
        self._push(Event(topic, key, value, event_ms, arrival))
        if rng.random() < cfg.duplicate_rate:
            self._push(Event(topic, key, value, event_ms, arrival + int(rng.uniform(0, 5000))))
            self.stats[f"duplicate_{topic}"] += 1

    def _impression(self, now: int, n: int) -> None:
        cfg, rng = self.config, self.rng
        u = min(int(np.searchsorted(self.user_cdf, rng.random())), cfg.users - 1)
        i = int(rng.integers(cfg.items))
        self._drift(u, now)
        request_id = f"g{cfg.seed}-{n}"
        user_id, item_id = u + 1, i + 1
        hour = (now // 3_600_000) % 24
        price_bucket = int(min(9, math.log1p(self.item_price[i])))
        device = int(rng.integers(0, 3))
        raw = (user_id, item_id, int(self.item_cat[i]), int(self.user_age[u]), int(self.user_city[u]),
               device, int(hour), price_bucket)
        imp = Impression(
            request_id=request_id, user_id=user_id, item_id=item_id, event_time_ms=now,
            slots=list(range(len(SLOTS))), ids=[feature_id(s, v) for s, v in enumerate(raw)],
            dense=[float(math.log(self.user_activity[u])), float(self.item_price[i] / 100.0),
                   float(rng.integers(0, 10))],
        )
        key = request_id.encode()
        self._send("impressions", key, self._imp_codec.encode(imp), now)
        self.stats["impressions"] += 1
        score = self.logit_base + 3.0 * float(self.user_vec[u] @ self.item_vec[i]) + self.item_bias[i]
        p_click = 1 / (1 + math.exp(-score))
        if self.oracle is not None:
            self.oracle[request_id] = p_click * self._given_click
        if rng.random() < p_click:
            latest = now + int(cfg.max_delay_s * 1000)  # every label lands within max_delay_s
            click_ms = now + self._delay(cfg.click_delay_median_s)
            self._action(request_id, user_id, item_id, CLICK, click_ms)
            if rng.random() < cfg.like_given_click:
                like_ms = min(latest, click_ms + self._delay(cfg.like_delay_median_s))
                self._action(request_id, user_id, item_id, LIKE, like_ms)
            if rng.random() < cfg.conversion_given_click:
                conv_ms = min(latest, click_ms + self._delay(cfg.conversion_delay_median_s))
                self._action(request_id, user_id, item_id, CONVERSION, conv_ms)
        if rng.random() < cfg.malformed_rate:
            self._malformed(now, imp)

    def _action(self, request_id: str, user_id: int, item_id: int, kind: str, when: int) -> None:
        act = Action(request_id, user_id, item_id, kind, when)
        self._send("actions", request_id.encode(), self._act_codec.encode(act), when)
        self.stats["actions"] += 1
        self.stats[f"actions_{kind}"] += 1

    def _delay(self, median_s: float) -> int:
        delay = int(self.rng.lognormal(math.log(median_s * 1000), self.config.delay_sigma))
        return min(max(1, delay), int(self.config.max_delay_s * 1000))

    def _drift(self, u: int, now: int) -> None:
        hours = (now - self.user_seen_ms[u]) / 3_600_000
        if hours > 0:
            sd = self.config.drift_per_hour * math.sqrt(hours) / math.sqrt(self.config.latent_dim)
            self.user_vec[u] += self.rng.normal(0, sd, self.config.latent_dim)
            self.user_seen_ms[u] = now

    def _malformed(self, now: int, imp: Impression) -> None:
        kind = MALFORMED_KINDS[int(self.rng.integers(len(MALFORMED_KINDS)))]
        good = self._imp_codec.encode(imp)
        bad = Impression(imp.request_id + "-bad", imp.user_id, imp.item_id, now, imp.slots, imp.ids, imp.dense)
        if kind == "garbage":
            value = bytes(self.rng.integers(0, 256, 24, dtype=np.uint8))
        elif kind == "truncated":
            value = good[: len(good) // 2]
        elif kind == "missing_request_id":
            bad.request_id = ""
            value = self._imp_codec.encode(bad)
        elif kind == "zero_timestamp":
            bad.event_time_ms = 0
            value = self._imp_codec.encode(bad)
        else:  # future_timestamp: year 2100, ahead of any processing clock
            bad.event_time_ms = FAR_FUTURE_MS
            value = self._imp_codec.encode(bad)
        self._push(Event("impressions", b"malformed", value, now, now))
        self.stats["malformed"] += 1
        self.stats[f"malformed_{kind}"] += 1
