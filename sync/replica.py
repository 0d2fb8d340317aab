"""The reference serving replica: the consumer library + a rocksdict store + the trainer's
network, answering predictions with the model version they were made with.

    replica = ServingReplica(ReplicaConfig(model="ctr", dump_dir=...), kafka, topics)
    replica.start()                       # bootstrap, then apply deltas in a thread
    replica.predict([{"slots": [0, 1], "ids": [11, 42], "dense": []}])
    # {"model": "ctr", "version": 17, "dense_version": 12, "heads": ["click"],
    #  "predictions": [[0.031]]}

Requests carry what a Sample carries at serving time (slots, ids, dense); the network is
rebuilt from the ``model_config`` shipped with the dense weights (``trainer.model``), ids
are looked up in the store (unknown ids read zeros, as in the trainer) and sum-pooled per
field, so a caught-up replica returns exactly the trainer's own predictions.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from schemas import Sample
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from streamtrain.paths import STATE_DIR
from sync.config import ReplicaConfig
from sync.consumer import DeltaConsumer
from sync.errors import SyncError
from sync.store import RocksRowStore

log = logging.getLogger(__name__)


class BadRequest(SyncError):
    """A predict request that cannot be scored (the HTTP layer answers 400)."""


class ServingModel:
    """The network of one dense version plus how to turn requests into its inputs."""

    def __init__(self, version: int, model_config: dict, state_dict: dict):
        from trainer.batch import BatchBuilder
        from trainer.config import ModelConfig
        from trainer.model import build_model

        self.version = version
        self.config = model_config
        self.net = build_model(model_config)
        self.net.load_state_dict(state_dict)
        self.net.eval()
        known = set(ModelConfig.__dataclass_fields__)
        self.model_cfg = ModelConfig.from_dict({k: v for k, v in model_config.items() if k in known})
        self.builder = BatchBuilder(self.model_cfg)
        self.table, meta = next(iter(model_config.get("tables", {"emb": {"dim": self.model_cfg.dim}}).items()))
        self.dim = int(meta["dim"])

    def batch(self, instances: list[dict]):
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

    def score(self, batch, lookup) -> np.ndarray:
        """(B, H) probabilities; ``lookup(table, ids, dim)`` gives (n, dim) rows."""
        from trainer.model import pool

        codes, uniq = pd.factorize(batch.ids)
        rows = torch.from_numpy(lookup(self.table, np.asarray(uniq, np.int64), self.dim))  # (U, D)
        per_id = rows.index_select(0, torch.from_numpy(np.asarray(codes, np.int64)))  # (N, D)
        emb = pool(per_id, batch.sample_index, batch.fields, len(batch),
                   len(self.model_cfg.slots))  # (B, F, D)
        return self.net.score(emb, torch.from_numpy(batch.dense)).numpy()


class ServingReplica:
    def __init__(self, config: ReplicaConfig, kafka: KafkaConfig, topics: TopicsConfig):
        self.config = config
        store_dir = config.store_dir or tempfile.mkdtemp(prefix="replica-", dir=_replicas_dir())
        self.store = RocksRowStore(Path(store_dir) / "rows")
        self.consumer = DeltaConsumer(config.consumer(), kafka, topics, self.store,
                                      on_dense=self._on_dense)
        self.model: ServingModel | None = None
        self.lag_records = -1
        self.lag_measured_at = 0.0  # monotonic time the lag_records measurement began
        self._rates: deque[tuple[float, int]] = deque(maxlen=64)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_ms = int(time.time() * 1000)

    def _on_dense(self, version: int, model_config: dict, state_dict: dict) -> None:
        self.model = ServingModel(version, model_config, state_dict)  # swapped under consumer.lock
        log.info("serving dense_version=%d", version)

    def start(self) -> None:
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
            except Exception:  # keep serving the last good state; the error is visible in logs
                log.exception("replica apply loop failed; retrying")
                self._stop.wait(1.0)

    def wait_caught_up(self, timeout_s: float = 30.0, min_version: int = 0) -> bool:
        """Block until the apply thread reports no lag, measured after this call began (an
        older measurement may predate what was just published), and ``version >= min_version``."""
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            fresh = self.lag_measured_at > start
            if fresh and self.lag_records == 0 and (self.consumer.applier.version or 0) >= min_version:
                return True
            self._stop.wait(0.05)
        return False

    def predict(self, instances: list[dict]) -> dict:
        if not isinstance(instances, list) or not instances:
            raise BadRequest("expected a non-empty list of instances")
        if len(instances) > self.config.max_batch:
            raise BadRequest(f"{len(instances)} instances > serve.max_batch={self.config.max_batch}")
        with self.consumer.lock:
            model = self.model
            if model is None:
                raise SyncError("no dense weights yet: the replica has not bootstrapped")
            batch = model.batch(instances)
            probs = model.score(batch, lambda t, ids, dim: self.store.lookup(t, ids, dim)[0])
            version = self.consumer.applier.version
        return {"model": self.config.model, "version": version, "dense_version": model.version,
                "heads": list(model.model_cfg.heads), "predictions": probs.tolist()}

    def health(self) -> dict:
        ok = self.model is not None and self._thread is not None and self._thread.is_alive()
        return {"status": "ok" if ok else "starting", "model": self.config.model,
                "version": self.consumer.applier.version}

    def metrics(self) -> dict:
        a = self.consumer.applier
        rate = 0.0
        if len(self._rates) >= 2:
            (t0, r0), (t1, r1) = self._rates[max(0, len(self._rates) - 20)], self._rates[-1]
            rate = (r1 - r0) / max(t1 - t0, 1e-9)
        now = int(time.time() * 1000)
        return {
            "model": self.config.model, "applied_version": a.version,
            "dense_version": self.model.version if self.model else None,
            "lag_records": self.lag_records,
            "version_age_ms": now - a.created_ms if a.created_ms else None,
            "rows_applied_per_s": round(rate, 1), "rows_applied": a.stats.rows_applied,
            "rows_skipped": a.stats.rows_skipped, "tombstones_applied": a.stats.tombstones_applied,
            "duplicates": a.stats.duplicates, "stale_messages": a.stats.stale_messages,
            "gaps": a.stats.gaps, "missing_versions": a.missing,
            "dead_letters": self.consumer.stats.dead_letters,
            "rows_bootstrapped": self.consumer.stats.rows_bootstrapped,
            "shards": self.consumer.shards, "uptime_ms": now - self.started_ms,
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.consumer.close()
        self.store.close()


def _replicas_dir() -> str:
    path = STATE_DIR / "replicas"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
