"""A replica without Kafka for the HTTP app's tests: the real ``ServingModel`` (network of
the trainer's model contract) over a real ``VersionedView``; versions are committed by the
test, readiness inputs are set by the test. Satisfies ``sync.app.Replica``."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from sync.config import ReplicaConfig
from sync.errors import SyncError
from sync.health import ReplicaState, readiness
from sync.replica import ServingModel
from sync.store import MemoryRowStore, RowStore
from sync.view import TableOverlay, VersionedView
from trainer.config import ModelConfig
from trainer.model import build_model

MODEL = ModelConfig(slots=(0, 1, 2, 3), dim=8, dense_dim=2, hidden=(16,), seed=3)


def serving_model(version: int = 1, cfg: ModelConfig = MODEL) -> ServingModel:
    net = build_model(cfg)
    return ServingModel(version, cfg.to_dict() | {"tables": {"emb": {"dim": cfg.dim}}}, net.state_dict())


def instance(seed: int = 0, cfg: ModelConfig = MODEL) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {"slots": list(cfg.slots), "ids": rng.integers(0, 50, len(cfg.slots)).tolist(),
            "dense": rng.standard_normal(cfg.dense_dim).round(3).tolist()}


class BlockingStore(MemoryRowStore):
    """A store whose writes wait until ``release`` is set (a slow RocksDB flush)."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.release = threading.Event()

    def write_rows(self, table: str, ids: np.ndarray, rows: np.ndarray, version: int) -> int:
        self.writing.set()
        assert self.release.wait(30), "test never released the store"
        return super().write_rows(table, ids, rows, version)


class OfflineReplica:
    def __init__(self, config: ReplicaConfig | None = None, store: RowStore | None = None,
                 bootstrapped: bool = True) -> None:
        self.config = config or ReplicaConfig(model="ctr", port=0, max_batch=64)
        self.view = VersionedView(store or MemoryRowStore())
        self.model: ServingModel | None = serving_model() if bootstrapped else None
        self.state = ReplicaState(bootstrapped=bootstrapped, version=None, lag_records=0, lag_age_s=0.1,
                                  version_age_s=1.0, last_apply_error_age_s=None, last_apply_error="")
        self.alive = True
        self.gate: threading.Event | None = None  # predict waits on it when a request asks
        self.in_predict = threading.Event()

    def commit(self, version: int, ids: list[int], seed: int = 0) -> None:
        rows = np.random.default_rng(seed).standard_normal((len(ids), MODEL.dim)).astype(np.float32)
        tables = {"emb": TableOverlay.build(np.asarray(ids, np.int64), rows, np.zeros(0, np.int64))}
        self.view.commit(version, tables, version, created_ms=version)

    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        model = self.model
        if model is None:
            raise SyncError("no dense weights yet")
        batch = model.batch(instances)
        if any(inst.get("request_id") == "slow" for inst in instances) and self.gate is not None:
            self.in_predict.set()
            assert self.gate.wait(30), "test never opened the gate"
        with self.view.snapshot() as snap:
            probs = model.score(batch, snap.lookup)
        return {"model": self.config.model, "version": snap.version, "dense_version": model.version,
                "heads": list(model.model_cfg.heads), "predictions": probs.tolist()}

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.alive else "down", "model": self.config.model,
                "version": self.view.version}

    def readiness(self) -> dict[str, Any]:
        reasons = readiness(self.state, self.config)
        return {"ready": not reasons, "reasons": reasons, "version": self.view.version,
                "lag_records": self.state.lag_records, "version_age_s": self.state.version_age_s}

    def metrics(self) -> dict[str, Any]:
        return {"model": self.config.model, "applied_version": self.view.version,
                "dense_version": self.model.version if self.model else None,
                "lag_records": self.state.lag_records, "version_age_ms": 1000,
                "rows_applied_per_s": 0.0, "rows_applied": 0, "apply_errors": 0}


def reference_scores(replica: OfflineReplica, instances: list[dict[str, Any]]) -> np.ndarray:
    """What the model gives for ``instances`` on the replica's current version (no HTTP)."""
    assert replica.model is not None
    with torch.no_grad(), replica.view.snapshot() as snap:
        return replica.model.score(replica.model.batch(instances),
                                   snap.lookup)
