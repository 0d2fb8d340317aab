"""The live traffic source, the "simulated product": simulated users send requests in wall
clock time, a serving replica ranks each request's candidates, the top ones are shown
(``impressions``), and the users act on them with their true, drifting preferences after
realistic delays (``actions``). The loop closes through the trainer: better models show
better items, which the policy accounting measures against a random and an oracle choice.

    streamtrain live-traffic --set live_traffic.replica_urls=http://localhost:8600 \\
        --set live_traffic.metrics_port=9500 [--set live_traffic.duration_s=180]

This module is the logic, with time passed in and records handed to a ``Sink`` (tests run
hours in a second): ``new_request`` -> ``score`` (a worker thread: the replica call) ->
``show`` (impressions now, actions scheduled) and ``fire_due`` (actions whose time came).
``traffic.live_run`` paces it against the wall clock, talks to Kafka and saves the state.

>>> cfg = LiveTrafficConfig(impressions_per_s=30, duplicate_rate=0, malformed_rate=0)
>>> sink = ListSink()
>>> src = LiveTraffic(cfg, sink, scorer=None)
>>> src.step(1_700_000_000_000)        # no replica: the random policy, counted as fallback
>>> [topic for topic, *_ in sink.records], src.stats["fallback_no_replica"]
(['impressions', 'impressions', 'impressions'], 1)
"""

from __future__ import annotations

import heapq
import math
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from schemas import Action, Impression, codec_for
from schemas.contracts import ACTION_TYPES
from streamtrain.config import check
from traffic.generator import MALFORMED_KINDS
from traffic.live_metrics import LiveMetrics
from traffic.policy import expected_clicks, random_k, top_k
from traffic.scorer import Answer, Scorer, ScoringError
from traffic.world import LiveWorld, WorldSettings, malformed_value
from trainer.metrics import ProgressiveValidator

CLICK, LIKE, CONVERSION = ACTION_TYPES
STATE_FORMAT = 1
# the click head of the served model and of the oracle, judged on the served impressions
SERVED_HEADS = ("model", "oracle")


@dataclass(frozen=True)
class LiveTrafficConfig:
    """The live traffic source (section ``[live_traffic]``). The world's defaults make it
    learnable by the default model within 3 minutes at 300 impressions/s
    (``bench/live_world.py``)."""

    seed: int = 11
    users: int = 2_000
    items: int = 150
    categories: int = 16
    latent_dim: int = 8
    base_ctr: float = 0.06           # click probability at logit 0 of the world's terms
    item_bias_std: float = 1.0       # spread of the items' own appeal (logit)
    affinity_std: float = 0.7        # spread of age-group x category affinities (logit)
    affinity_rank: int = 1           # rank of that table (latent tastes per group / category)
    personal_weight: float = 0.4     # weight of the user x item latent term
    position_effect: float = 0.15    # logit lost per rank down the shown list
    drift_per_hour: float = 0.6      # std of the preference random walks per wall hour
    impressions_per_s: float = 300.0  # shown impressions per wall second
    candidates: int = 20             # items scored per request
    shown: int = 3                   # items shown per request (the impressions)
    explore_rate: float = 0.05       # share of requests shown at random on purpose
    replica_urls: str = ""           # comma-separated; several: round robin; "" = random policy
    request_timeout_s: float = 0.5
    scoring_threads: int = 4         # predict calls in flight at once
    duration_s: float = 0.0          # 0 = forever
    like_given_click: float = 0.2
    conversion_given_click: float = 0.08
    click_delay_median_s: float = 3.0
    like_delay_median_s: float = 20.0  # after the click
    conversion_delay_median_s: float = 600.0  # after the click
    delay_sigma: float = 1.0         # lognormal spread of every delay
    max_delay_s: float = 7200.0      # no action later than this after its impression
    duplicate_rate: float = 0.01
    malformed_rate: float = 0.002
    window: int = 20_000             # impressions in the sliding windows of the metrics
    metrics_port: int = 0            # Prometheus /metrics; 0 = off
    metrics_host: str = "0.0.0.0"
    state_dir: str = ""              # where the world state is kept between runs; "" = <state>/live-traffic
    checkpoint_every_s: float = 60.0  # also save the state this often (a crash loses at most this)

    def __post_init__(self) -> None:
        for name in ("users", "items", "categories", "latent_dim", "affinity_rank", "candidates", "shown",
                     "scoring_threads"):
            check(getattr(self, name) >= 1, f"live_traffic.{name}", getattr(self, name), ">= 1")
        check(self.shown <= self.candidates <= self.items, "live_traffic.candidates", self.candidates,
              f"between shown ({self.shown}) and items ({self.items})")
        for name in ("base_ctr", "like_given_click", "conversion_given_click", "duplicate_rate",
                     "malformed_rate", "explore_rate"):
            v = getattr(self, name)
            check(0 <= v < 1, f"live_traffic.{name}", v, "a probability in [0, 1)")
        check(self.base_ctr > 0, "live_traffic.base_ctr", self.base_ctr, "in (0, 1)")
        for name in ("impressions_per_s", "request_timeout_s", "click_delay_median_s", "like_delay_median_s",
                     "conversion_delay_median_s", "delay_sigma", "max_delay_s", "checkpoint_every_s"):
            check(getattr(self, name) > 0, f"live_traffic.{name}", getattr(self, name), "> 0")
        for name in ("item_bias_std", "affinity_std", "personal_weight", "position_effect", "drift_per_hour",
                     "duration_s"):
            check(getattr(self, name) >= 0, f"live_traffic.{name}", getattr(self, name), ">= 0")
        check(self.window >= 100, "live_traffic.window", self.window, ">= 100")
        check(0 <= self.metrics_port <= 65535, "live_traffic.metrics_port", self.metrics_port, "0..65535 (0 = off)")

    def urls(self) -> list[str]:
        return [u.strip() for u in self.replica_urls.split(",") if u.strip()]

    def world(self) -> WorldSettings:
        return WorldSettings(seed=self.seed, users=self.users, items=self.items, categories=self.categories,
                             latent_dim=self.latent_dim, base_ctr=self.base_ctr,
                             item_bias_std=self.item_bias_std, affinity_std=self.affinity_std,
                             affinity_rank=self.affinity_rank, personal_weight=self.personal_weight,
                             position_effect=self.position_effect, drift_per_hour=self.drift_per_hour,
                             like_given_click=self.like_given_click,
                             conversion_given_click=self.conversion_given_click)


def action_delay_ms(rng: np.random.Generator, median_s: float, cfg: LiveTrafficConfig) -> int:
    """A simulated user's delay before an action: lognormal around ``median_s`` with
    ``cfg.delay_sigma``, at least 1 ms and at most ``cfg.max_delay_s``."""
    delay = int(rng.lognormal(math.log(median_s * 1000), cfg.delay_sigma))
    return min(max(1, delay), int(cfg.max_delay_s * 1000))


class Sink(Protocol):
    """Where records go: ``topic`` is the role (``impressions`` | ``actions``)."""

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None: ...


class ListSink:
    """Records kept in a list (tests, doctests)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes, int]] = []

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.records.append((topic, key, value, timestamp_ms))


@dataclass
class Request:
    """One user request: who, which candidates, and how it is to be ranked."""

    n: int
    user: int
    items: np.ndarray  # (C,) item indices
    device: int
    truth: np.ndarray  # (C, shown) true click probabilities at each rank, when asked
    policy: str  # served | explore | fallback
    reason: str = ""  # why fallback
    instances: list[dict[str, Any]] = field(default_factory=list)  # what the replica scores
    served: np.ndarray | None = None  # (C,) the replica's click probabilities, when it answered


@dataclass(frozen=True)
class Pending:
    """A record waiting for its time: an action (stamped with the time it is sent) or the
    bytes of a duplicate."""

    topic: str
    key: bytes
    action: Action | None = None
    value: bytes = b""


class LiveTraffic:
    def __init__(self, cfg: LiveTrafficConfig, sink: Sink, scorer: Scorer | None,
                 metrics: LiveMetrics | None = None) -> None:
        self.cfg, self.sink, self.scorer = cfg, sink, scorer
        self.metrics = metrics or LiveMetrics(cfg.window)
        self.metrics.target.set(cfg.impressions_per_s)
        self.world = LiveWorld(cfg.world())
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.run_id = f"lt{cfg.seed}-{secrets.token_hex(3)}"  # request ids stay unique across fresh starts
        self.n = 0
        self.stats: Counter[str] = Counter()
        self.heap: list[tuple[int, int, Pending]] = []
        self._seq = 0
        self.oracle = ProgressiveValidator(ACTION_TYPES, window=cfg.window, history_points=10)
        self._oracle_rows: list[tuple[np.ndarray, np.ndarray]] = []
        # the served model judged on what it served, beside the oracle on the same impressions:
        # out of sample by construction (scored before the impression existed)
        self.served_quality = ProgressiveValidator(SERVED_HEADS, window=cfg.window, history_points=10)
        self._served_rows: list[tuple[float, float, bool]] = []
        self._imp_codec, self._act_codec = codec_for(Impression), codec_for(Action)

    # -- a request ------------------------------------------------------------------------
    def new_request(self, now_ms: int) -> Request:
        cfg, w, rng = self.cfg, self.world, self.rng
        u = w.sample_user(rng)
        w.drift(rng, u, now_ms)
        items = w.candidates(rng, cfg.candidates)
        device = int(rng.integers(0, 3))
        req = Request(self.n, u, items, device, w.click_matrix(u, items, cfg.shown), "served")
        self.n += 1
        if rng.random() < cfg.explore_rate:
            req.policy = "explore"
        elif self.scorer is None:
            req.policy, req.reason = "fallback", "no_replica"
        else:
            hour = int((now_ms // 3_600_000) % 24)
            for i in items:  # scored at position 0 (position debiasing)
                slots, ids, dense = w.features(u, int(i), hour, device, 0)
                req.instances.append({"user_id": u + 1, "item_id": int(i) + 1, "slots": slots, "ids": ids,
                                      "dense": dense})
        return req

    def score(self, req: Request) -> Answer | ScoringError:
        """Ask the replica (thread-safe: touches no world state); the error is returned."""
        assert self.scorer is not None and req.instances
        started = time.perf_counter()
        try:
            return self.scorer.score(req.instances)
        except ScoringError as exc:
            self.metrics.replica_errors.labels(exc.replica or "-", exc.reason).inc()
            return exc
        finally:
            self.metrics.latency.observe(time.perf_counter() - started)

    def step(self, now_ms: int) -> None:
        """One request, scored in this thread, shown now; then the actions that are due."""
        req = self.new_request(now_ms)
        self.show(req, self.score(req) if req.policy == "served" else None, now_ms)
        self.fire_due(now_ms)

    def show(self, req: Request, outcome: Answer | ScoringError | None, now_ms: int) -> list[int]:
        """Choose what is shown, send the impressions, draw and schedule the actions, and
        account for the policies. Returns the shown candidates (indices into ``req.items``)."""
        cfg, rng = self.cfg, self.rng
        if isinstance(outcome, Answer):
            req.served = np.asarray(outcome.click, np.float64)
            order = top_k(req.served, cfg.shown)
            self.metrics.version.set(-1 if outcome.version is None else outcome.version)
            self.metrics.dense_version.set(-1 if outcome.dense_version is None else outcome.dense_version)
        else:
            if isinstance(outcome, ScoringError):
                req.policy, req.reason = "fallback", outcome.reason
            order = random_k(rng, len(req.items), cfg.shown)
        if req.policy == "fallback":
            self.metrics.fallbacks.labels(req.reason).inc()
            self.stats[f"fallback_{req.reason}"] += 1
        self.metrics.requests.labels(req.policy).inc()
        self.stats[f"requests_{req.policy}"] += 1
        clicks = sum(self._impression(req, int(c), rank, now_ms) for rank, c in enumerate(order))
        self.metrics.shown(req.policy, expected_clicks(req.truth, order), len(order), clicks)
        return [int(c) for c in order]

    def _impression(self, req: Request, c: int, rank: int, now_ms: int) -> bool:
        cfg, rng, w = self.cfg, self.rng, self.world
        item = int(req.items[c])
        request_id = f"{self.run_id}-{req.n}-{rank}"
        imp = w.impression(request_id, req.user, item, now_ms, req.device, rank)
        value = self._imp_codec.encode(imp)
        self._send("impressions", request_id.encode(), value, now_ms, "valid")
        self.stats["impressions"] += 1
        if rng.random() < cfg.duplicate_rate:
            self._push(now_ms + int(rng.uniform(0, 5000)), Pending("impressions", request_id.encode(), value=value))
        if rng.random() < cfg.malformed_rate:
            kind = MALFORMED_KINDS[int(rng.integers(len(MALFORMED_KINDS)))]
            self._send("impressions", b"malformed", malformed_value(kind, imp, rng, self._imp_codec), now_ms,
                       "malformed")
            self.stats[f"malformed_{kind}"] += 1
        probs = w.head_probs(np.array([req.truth[c, rank]]))[0]  # (3,) click, like, conversion
        clicked = rng.random() < probs[0]
        liked = clicked and rng.random() < cfg.like_given_click
        converted = clicked and rng.random() < cfg.conversion_given_click
        self._oracle_rows.append((probs, np.array([clicked, liked, converted], np.float64)))
        if req.served is not None and req.policy == "served":
            self._served_rows.append((float(req.served[c]), float(probs[0]), bool(clicked)))
        if clicked:
            latest = now_ms + int(cfg.max_delay_s * 1000)
            click_ms = min(latest, now_ms + self._delay(cfg.click_delay_median_s))
            for kind, ok, at in ((CLICK, True, click_ms),
                                 (LIKE, liked, click_ms + self._delay(cfg.like_delay_median_s)),
                                 (CONVERSION, converted, click_ms + self._delay(cfg.conversion_delay_median_s))):
                if ok:
                    act = Action(request_id, req.user + 1, item + 1, kind, 0)
                    self._push(min(latest, at), Pending("actions", request_id.encode(), action=act))
        return bool(clicked)

    def _delay(self, median_s: float) -> int:
        return action_delay_ms(self.rng, median_s, self.cfg)

    # -- pending records ------------------------------------------------------------------
    def _push(self, due_ms: int, pending: Pending) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (due_ms, self._seq, pending))

    def next_due_ms(self) -> int | None:
        return self.heap[0][0] if self.heap else None

    def fire_due(self, now_ms: int) -> int:
        """Send every pending record whose time came, stamped ``now_ms``; how many."""
        sent = 0
        while self.heap and self.heap[0][0] <= now_ms:
            _, _, p = heapq.heappop(self.heap)
            sent += 1
            if p.action is None:
                self._send(p.topic, p.key, p.value, now_ms, "duplicate")
                continue
            p.action.event_time_ms = now_ms  # event time = the time it happens = sent
            value = self._act_codec.encode(p.action)
            self._send("actions", p.key, value, now_ms, "valid")
            self.metrics.actions.labels(p.action.action_type).inc()
            self.stats[f"actions_{p.action.action_type}"] += 1
            if self.rng.random() < self.cfg.duplicate_rate:
                self._push(now_ms + int(self.rng.uniform(0, 5000)), Pending("actions", p.key, value=value))
        self.metrics.pending.set(len(self.heap))
        return sent

    def _send(self, topic: str, key: bytes, value: bytes, now_ms: int, kind: str) -> None:
        self.sink.send(topic, key, value, now_ms)
        self.metrics.produced.labels(topic, kind).inc()
        self.stats[f"produced_{topic}_{kind}"] += 1

    # -- the oracle's progressive quality -------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Fold the shown impressions into the oracle's validator; its report (also read
        by the metrics)."""
        if self._oracle_rows:
            p = np.stack([r[0] for r in self._oracle_rows])
            y = np.stack([r[1] for r in self._oracle_rows])
            self.oracle.update(p, y, np.ones_like(y))
            self._oracle_rows = []
        self.metrics.oracle_report = self.oracle.report()
        if self._served_rows:
            rows = np.asarray(self._served_rows, np.float64)  # (n, 3): model p, oracle p, clicked
            y = np.repeat(rows[:, 2:3], 2, axis=1)
            self.served_quality.update(rows[:, :2], y, np.ones_like(y))
            self._served_rows = []
        self.metrics.served_report = self.served_quality.report()
        return self.metrics.oracle_report

    # -- snapshot / restore ----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        self.report()
        return {"format": STATE_FORMAT, "world": self.world.snapshot(), "rng": self.rng.bit_generator.state,
                "run_id": self.run_id, "n": self.n, "seq": self._seq, "heap": list(self.heap),
                "stats": dict(self.stats), "oracle": self.oracle.state(),
                "served_quality": self.served_quality.state()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state format {state.get('format')!r}, expected {STATE_FORMAT}")
        self.world.restore(state["world"])
        self.rng.bit_generator.state = state["rng"]
        self.run_id, self.n, self._seq = state["run_id"], int(state["n"]), int(state["seq"])
        self.heap = list(state["heap"])
        heapq.heapify(self.heap)
        self.stats = Counter(state["stats"])
        self.oracle.load_state(state["oracle"])
        if "served_quality" in state:  # absent in a state saved before it was kept
            self.served_quality.load_state(state["served_quality"])
        self.metrics.pending.set(len(self.heap))
