"""Freshness through the broker: positives whose action times are known go to the samples
topic, the trainer reads and trains on them, the publisher pushes a version carrying their
traces in a header, a replica applies it and observes each trace's stages."""

import json
import time

import pytest

from streamtrain.clock import now_ms
from sync.config import PublisherConfig, ReplicaConfig
from sync.freshness import STAGES
from sync.publisher import ModelPublisher
from sync.replica import ServingReplica
from tests.helpers.trainer_models import produce_samples, sample, small_model, small_table, small_trainer
from trainer.stream import KafkaSampleSource
from trainer.trainer import Trainer

pytestmark = pytest.mark.integration
PARTS = [s for s in STAGES if s != "end_to_end"]


def _samples(n: int, t0: int) -> tuple[list, set[int]]:
    """``n`` samples of impressions at ``t0 - 5 s``, every other one a click 1 s (+ 10 ms * i)
    later, emitted by the 'joiner' at ``t0 - 2 s``; and the clicks' action times."""
    out, actions = [], set()
    for i in range(n):
        click = i % 2 == 0
        s = sample(i, ids=(i, 1000 + i), labels=("click",) if click else (),
                   label_delays_ms=[1000 + 10 * i] if click else [])
        s.event_time_ms, s.emit_time_ms = t0 - 5000, t0 - 2000
        if click:
            actions.add(t0 - 4000 + 10 * i)
        out.append(s)
    return out, actions


def _until(check, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_replica_observes_the_freshness_of_actions_it_answers_with(kafka_broker, topics, tmp_path,
                                                                    closing):
    model, cfg = small_model(), small_trainer(batch_size=64, max_wait_ms=50)
    trainer = Trainer(model, small_table(), cfg)
    pub = closing(ModelPublisher(PublisherConfig(model="ctr", dump_dir=str(tmp_path / "dumps")),
                                 kafka_broker, topics, trainer, traces=trainer.traces))
    pub.tick()  # the dump a replica bootstraps from (nothing trained: no traces)
    log = tmp_path / "freshness.jsonl"
    replica = closing(ServingReplica(ReplicaConfig(
        model="ctr", dump_dir=str(tmp_path / "dumps"), store_dir=str(tmp_path / "replica"),
        port=0, poll_interval_ms=20, freshness_log=str(log)), kafka_broker, topics))
    replica.start()

    samples, actions = _samples(64, now_ms())
    produce_samples(kafka_broker, topics.samples, samples)
    source = closing(KafkaSampleSource(kafka_broker, topics, model, cfg))
    trained = 0
    deadline = time.monotonic() + 60
    while trained < len(samples) and time.monotonic() < deadline:
        batch = source.next_batch(timeout_s=0.5)
        if batch is not None:
            trainer.train_batch(batch)
            trained += len(batch)
    assert trained == len(samples)
    version = pub.push_sparse().version  # the first version trained on the samples

    assert _until(lambda: replica.freshness.versions >= 1), replica.metrics()
    assert replica.freshness.last_version == version
    assert replica.consumer.applier.version >= version
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert {r["version"] for r in rows} == {version}
    assert {r["action_ms"] for r in rows} == actions  # 32 clicks, under the 64 kept per version
    assert all(r["actions"] == len(actions) for r in rows)
    for r in rows:
        assert r["end_to_end_s"] > 0 and r["applied_ms"] >= r["published_ms"] >= r["trained_ms"]
        assert r["join_wait_s"] == (r["emit_ms"] - r["action_ms"]) / 1000 > 0
        assert sum(r[f"{s}_s"] for s in PARTS) == pytest.approx(r["end_to_end_s"], abs=1e-6)
        assert r["end_to_end_s"] == pytest.approx((r["applied_ms"] - r["action_ms"]) / 1000)
    status = replica.metrics()["freshness"]
    assert status["traces"] == len(actions) and status["p50_s"] > 0 and status["p99_s"] > 0
