"""The reference serving replica: the consumer library + a rocksdict store + the trainer's
network, answering predictions with the model version they were made with.

    replica = ServingReplica(ReplicaConfig(model="ctr", dump_dir=...), kafka, topics)
    replica.start()                       # bootstrap, then apply deltas in a thread
    replica.predict([{"slots": [0, 1], "ids": [11, 42], "dense": []}])
    # {"model": "ctr", "version": 17, "dense_version": 12, "heads": ["click"],
    #  "predictions": [[0.031]]}

Every answer is scored on exactly one sparse version (``version``: all its parts on all
the replica's shards applied, nothing newer) and one dense version (``dense_version``):
versions switch atomically (``sync.view``) and scoring never waits for an apply.

Requests carry what a Sample carries at serving time (slots, ids, dense); the network is
rebuilt from the ``model_config`` shipped with the dense weights
(``trainer.model.build_model``) and scored with the trainer's own
``trainer.scoring.score_batch``, rows looked up in the store (an unknown id reads zeros, or
for a slot of ``model.field_mean_slots`` the slot's mean row, which the trainer publishes
like any row: as in the trainer).

An instance with ``user_id``/``item_id`` and the base features is first
completed with the feature job's realtime values as of now (``sync.request_features``,
``complete(instance, as_of_ms)``). A caught-up replica holds exactly the trainer's rows; its predictions are the
trainer's own only when ``dense_version == version`` (right after a dense push): between
dense pushes they use the dense weights of the last one (docs/sync.md).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from schemas import Sample
from streaming.features.spec import FeatureSpec
from streamtrain.clock import now_ms
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from streamtrain.paths import STATE_DIR
from sync.config import ReplicaConfig
from sync.consumer import DeltaConsumer
from sync.errors import SyncError
from sync.freshness import FreshnessTracker
from sync.health import ReplicaState, readiness
from sync.request_features import RequestFeatures
from sync.store import RocksRowStore
from trainer.batch import Batch, BatchBuilder
from trainer.model import build_model, model_config_from_dict
from trainer.scoring import TABLE_NAME, score_batch

# lookup(table, ids, dim) -> ((n, dim) float32 rows, zeros for ids the store does not hold;
# (n,) bool found): an id not found reads zeros or its field's default row (trainer.scoring)
TableLookup = Callable[[str, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

log = logging.getLogger(__name__)


class BadRequest(SyncError):
    """A predict request that cannot be scored (the HTTP layer answers 400)."""


class ServingModel:
    """The network of one dense version plus how to turn requests into its inputs."""

    def __init__(self, version: int, model_config: dict[str, Any], state_dict: dict[str, Any]) -> None:
        self.version = version
        self.config = model_config
        self.model_cfg = model_config_from_dict(model_config)
        self.net = build_model(self.model_cfg)
        self.net.load_state_dict(state_dict)
        self.net.eval()
        self.builder = BatchBuilder(self.model_cfg)
        tables = model_config.get("tables", {TABLE_NAME: {"dim": self.model_cfg.dim}})
        self.table, meta = next(iter(tables.items()))
        self.dim = int(meta["dim"])

    def batch(self, instances: list[dict[str, Any]]) -> Batch:
        samples = []
        for i, inst in enumerate(instances):
            try:
                s = Sample(request_id=str(inst.get("request_id", i)), user_id=0, item_id=0,
                           event_time_ms=0, emit_time_ms=0, slots=[int(x) for x in inst["slots"]],
                           ids=[int(x) for x in inst["ids"]],
                           dense=[float(x) for x in inst.get("dense", [])])
            except (KeyError, TypeError, ValueError) as exc:
                raise BadRequest(f"instance {i}: needs slots, ids (and dense): {exc}") from exc
            problem = self.builder.problem(s)
            if problem:
                raise BadRequest(f"instance {i}: {problem}")
            samples.append(s)
        return self.builder.build(samples)

    def score(self, batch: Batch, lookup: TableLookup) -> np.ndarray:
        """(B, H) probabilities; ``lookup(table, ids, dim)`` gives (n, dim) rows and (n,) found."""
        return score_batch(self.net, batch, lambda ids: lookup(self.table, ids, self.dim))


class ServingReplica:
    def __init__(self, config: ReplicaConfig, kafka: KafkaConfig, topics: TopicsConfig,
                 spec: FeatureSpec | None = None) -> None:
        """``spec``: the feature job's ``[features]`` (default: its defaults), used when
        ``config.request_features``."""
        self.config = config
        store_dir = config.store_dir or tempfile.mkdtemp(prefix="replica-", dir=_replicas_dir())
        self.store = RocksRowStore(Path(store_dir) / "rows")
        self.started_ms = now_ms()
        # freshness of the versions published from now on (sync.freshness)
        self.freshness = FreshnessTracker(config.model, self.started_ms, config.freshness_keep,
                                          config.freshness_log)
        self.consumer = DeltaConsumer(config.consumer(), kafka, topics, self.store,
                                      on_dense=self._on_dense, on_traces=self.freshness.observe)
        self.features = RequestFeatures(spec or FeatureSpec(), config, kafka, topics,
                                        Path(store_dir) / "features") if config.request_features else None
        self.model: ServingModel | None = None
        self.lag_records = -1
        self.lag_measured_at = 0.0  # monotonic time the lag_records measurement began
        self._rates: deque[tuple[float, int]] = deque(maxlen=64)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.apply_errors = 0  # failed rounds of the apply loop (readiness, /metrics)
        self.last_apply_error_at: float | None = None  # monotonic
        self.last_apply_error = ""

    def _on_dense(self, version: int, model_config: dict[str, Any], state_dict: dict[str, Any]) -> None:
        self.model = ServingModel(version, model_config, state_dict)  # one reference swap
        log.info("serving dense_version=%d", version)

    def start(self) -> None:
        if self.features is not None:
            self.features.start()
        self.consumer.bootstrap()
        self._thread = threading.Thread(target=self._loop, name="replica-apply", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_lag = 0.0
        while not self._stop.is_set():
            try:
                self.consumer.poll(timeout_ms=self.config.poll_interval_ms)
                now = time.monotonic()
                if now - last_lag >= 0.5:
                    # stamped with the time the measurement began: it saw every record sent before
                    lag = self.consumer.lag_records()
                    self.lag_records, last_lag = lag, now
                    self.lag_measured_at = now
                    self._rates.append((now, self.consumer.applier.stats.rows_applied))
            except Exception as exc:  # keep serving the last good state; /ready and logs show it
                self.apply_errors += 1
                self.last_apply_error_at, self.last_apply_error = time.monotonic(), repr(exc)
                log.exception("replica apply loop failed; retrying")
                self._stop.wait(1.0)

    def wait_caught_up(self, timeout_s: float = 30.0, min_version: int = 0) -> bool:
        """Block until the apply thread reports no lag, measured after this call began (an
        older measurement may predate what was just published), ``version >= min_version``,
        and, with request-time features, their history's lag is measured and within the
        readiness bound (what ``/ready`` asks)."""
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            fresh = self.lag_measured_at > start
            features = self.features is None or \
                0 <= self.features.lag_records <= self.config.ready_max_features_lag_records
            if fresh and self.lag_records == 0 and (self.consumer.applier.version or 0) >= min_version \
                    and features:
                return True
            self._stop.wait(0.05)
        return False

    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        if not isinstance(instances, list) or not instances:
            raise BadRequest("expected a non-empty list of instances")
        if len(instances) > self.config.max_batch:
            raise BadRequest(f"{len(instances)} instances > serve.max_batch={self.config.max_batch}")
        model = self.model  # one dense version for the whole request
        if model is None:
            raise SyncError("no dense weights yet: the replica has not bootstrapped")
        if self.features is not None:  # request-time features, as of now (sync.request_features)
            t = now_ms()
            instances = [self.features.complete(inst, t, model.model_cfg.dense_dim) for inst in instances]
        batch = model.batch(instances)
        # one sparse version for the whole request: the snapshot is pinned, and applying
        # newer versions goes on meanwhile without waiting for us (or us for it)
        with self.consumer.snapshot() as snap:
            probs = model.score(batch, snap.lookup)
        return {"model": self.config.model, "version": snap.version,
                "dense_version": model.version, "heads": list(model.model_cfg.heads),
                "predictions": probs.tolist()}

    def complete(self, instance: dict[str, Any], as_of_ms: int) -> dict[str, Any]:
        """``instance`` with its request-time features as of ``as_of_ms`` (what ``predict``
        scores at now); unchanged when the rule of ``sync.request_features`` leaves it so."""
        model = self.model
        if model is None:
            raise SyncError("no dense weights yet: the replica has not bootstrapped")
        if self.features is None:
            return instance
        return self.features.complete(instance, as_of_ms, model.model_cfg.dense_dim)

    def health(self) -> dict[str, Any]:
        """Liveness: the apply thread runs (whether to take traffic is ``readiness``)."""
        ok = self._thread is not None and self._thread.is_alive()
        return {"status": "ok" if ok else "down", "model": self.config.model,
                "version": self.consumer.applier.version}

    def state(self) -> ReplicaState:
        """What readiness is judged on (``sync.health``), now."""
        now = time.monotonic()
        created = self.consumer.applier.created_ms
        err_at = self.last_apply_error_at
        return ReplicaState(
            bootstrapped=self.model is not None, version=self.consumer.applier.version,
            lag_records=self.lag_records,
            lag_age_s=now - self.lag_measured_at if self.lag_measured_at else None,
            version_age_s=(now_ms() - created) / 1000 if created else None,
            last_apply_error_age_s=None if err_at is None else now - err_at,
            last_apply_error=self.last_apply_error,
            features_lag_records=None if self.features is None else self.features.lag_records)

    def readiness(self) -> dict[str, Any]:
        """``{"ready", "reasons", ...}``: the ``/ready`` answer (``sync.health.readiness``)."""
        st = self.state()
        reasons = readiness(st, self.config)
        return {"ready": not reasons, "reasons": reasons, "version": st.version,
                "lag_records": st.lag_records,
                "version_age_s": None if st.version_age_s is None else round(st.version_age_s, 3)}

    def metrics(self) -> dict[str, Any]:
        a = self.consumer.applier
        rate = 0.0
        if len(self._rates) >= 2:
            (t0, r0), (t1, r1) = self._rates[max(0, len(self._rates) - 20)], self._rates[-1]
            rate = (r1 - r0) / max(t1 - t0, 1e-9)
        now = now_ms()
        return {
            "model": self.config.model, "applied_version": a.version,
            "dense_version": self.model.version if self.model else None,
            "lag_records": self.lag_records,
            "version_age_ms": now - a.created_ms if a.created_ms else None,
            "rows_applied_per_s": round(rate, 1), "rows_applied": a.stats.rows_applied,
            "rows_skipped": a.stats.rows_skipped, "tombstones_applied": a.stats.tombstones_applied,
            "duplicates": a.stats.duplicates,
            "conflicting_duplicates": a.stats.conflicting_duplicates,
            "stale_messages": a.stats.stale_messages,
            "gaps": a.stats.gaps, "missing_versions": a.missing,
            "versions_committed": a.stats.versions_committed,
            "abandoned_versions": a.stats.abandoned_versions,
            "incomplete_versions": a.incomplete,
            "pending_versions": {str(v): p for v, p in a.pending().items()},
            "dead_letters": self.consumer.stats.dead_letters, "apply_errors": self.apply_errors,
            "rows_bootstrapped": self.consumer.stats.rows_bootstrapped,
            "shards": self.consumer.shards, "uptime_ms": now - self.started_ms,
            "freshness": self.freshness.summary(),
        } | (self.features.stats() if self.features is not None else {})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.consumer.close()
        self.store.close()
        self.freshness.close()
        if self.features is not None:
            self.features.close()


def _replicas_dir() -> str:
    path = STATE_DIR / "replicas"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
