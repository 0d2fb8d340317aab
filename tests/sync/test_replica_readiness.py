"""A real replica's readiness (sync.health via ServingReplica.readiness): ready once caught
up, not ready while its apply loop fails, ready again once the error is older than the window."""

import time

import pytest

from sync.config import PublisherConfig, ReplicaConfig
from sync.publisher import ModelPublisher
from sync.replica import ServingReplica
from trainer import trainer as trainer_mod
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.synthetic import SyntheticStream

pytestmark = pytest.mark.integration
MODEL = ModelConfig(slots=(0, 1, 2, 3), dim=8, dense_dim=2, hidden=(16,), seed=3)


def _until(cond, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_replica_is_not_ready_while_applying_fails(kafka_broker, topics, tmp_path, closing):
    trainer = trainer_mod.Trainer(MODEL, TableConfig(dim=8), TrainerConfig(batch_size=128, device="cpu"))
    stream = SyntheticStream(num_slots=4, dense_dim=2, seed=1)
    pub = closing(ModelPublisher(PublisherConfig(model="ctr", dump_dir=str(tmp_path / "dumps")),
                                 kafka_broker, topics, trainer))
    trainer.train_batch(BatchBuilder(MODEL).build(stream.take(128)))
    pub.tick(now_s=0.0)
    replica = closing(ServingReplica(ReplicaConfig(model="ctr", dump_dir=str(tmp_path / "dumps"),
                                                   store_dir=str(tmp_path / "r"), poll_interval_ms=20,
                                                   ready_error_window_s=2.0), kafka_broker, topics))
    assert replica.readiness()["reasons"] == [  # before start()
        "not bootstrapped: no dense weights yet (waiting for a dump or model-dense)", "lag not measured yet",
        "request features: lag not measured yet"]
    replica.start()
    assert _until(lambda: replica.readiness()["ready"]), replica.readiness()

    real_poll, failures = replica.consumer.poll, []

    def failing_poll(**kw):
        if len(failures) < 1:
            failures.append(1)
            raise OSError("disk full")
        return real_poll(**kw)

    replica.consumer.poll = failing_poll
    assert _until(lambda: replica.apply_errors == 1)
    r = replica.readiness()
    assert not r["ready"] and any("apply failed" in x and "disk full" in x for x in r["reasons"]), r
    assert replica.metrics()["apply_errors"] == 1 and replica.health()["status"] == "ok"  # alive
    assert _until(lambda: replica.readiness()["ready"], timeout_s=30), replica.readiness()
