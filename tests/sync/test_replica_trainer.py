"""The real trainer -> publisher -> broker -> serving replica (over HTTP too)."""

import json
import urllib.request

import numpy as np
import pytest

from sync.app import make_app
from sync.config import PublisherConfig, ReplicaConfig
from sync.publisher import ModelPublisher
from sync.replica import ServingReplica
from sync.server import ReplicaServer
from trainer import trainer as trainer_mod
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.scoring import default_ids
from trainer.synthetic import SyntheticStream

pytestmark = pytest.mark.integration
# unknown ids of slots 1 and 3 read the slot's mean row: the replica must get those rows from the trainer
MODEL = ModelConfig(slots=(0, 1, 2, 3), dim=8, dense_dim=2, hidden=(16,), seed=3, field_mean_slots=(1, 3))


def _instances(samples):
    return [{"slots": s.slots, "ids": s.ids, "dense": s.dense} for s in samples]


def _replica(kafka, topics, tmp_path, name):
    cfg = ReplicaConfig(model="ctr", dump_dir=str(tmp_path / "dumps"),
                        store_dir=str(tmp_path / name), port=0, poll_interval_ms=20)
    r = ServingReplica(cfg, kafka, topics)
    r.start()
    return r


def _http(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_replica_predicts_like_the_trainer_once_caught_up(kafka_broker, topics, tmp_path, dtype):
    trainer = trainer_mod.Trainer(MODEL, TableConfig(dim=8, expiry_ms=15_000),
                                  TrainerConfig(batch_size=128, device="cpu", expire_every_batches=3))
    stream = SyntheticStream(num_slots=4, dense_dim=2, users=400, items=150, vocab=2000, seed=1)
    builder = BatchBuilder(MODEL)
    pub = ModelPublisher(PublisherConfig(model="ctr", sparse_interval_s=1, dtype=dtype,
                                         dump_dir=str(tmp_path / "dumps")), kafka_broker, topics, trainer)
    trainer.train_batch(builder.build(stream.take(128)))
    pub.tick(now_s=0.0)  # first dump
    first = _replica(kafka_broker, topics, tmp_path, "r1")
    tombstones = 0
    for k in range(8):
        for _ in range(2):
            trainer.train_batch(builder.build(stream.take(128)))
        tombstones += pub.tick(now_s=k + 1.0).tombstones
        if k == 4:
            first.close()  # killed mid-stream
    assert tombstones > 0, "expiry should have evicted some ids"
    replica = _replica(kafka_broker, topics, tmp_path, "r2")  # bootstraps from the first dump
    assert replica.consumer.stats.rows_bootstrapped > 0 and replica.model.version == 1
    pub.publish_dense()  # the dense weights the trainer has now, via model-dense
    assert replica.wait_caught_up(min_version=pub.version)
    assert replica.model.version == pub.version

    # every live trainer row is on the replica, evicted ids are gone
    live = trainer.full_dump()[0]
    held = dict(replica.store.rows("emb"))
    assert sorted(held) == sorted(live.ids.tolist())
    got = np.stack([held[i] for i in live.ids.tolist()])
    if dtype == "fp32":
        np.testing.assert_array_equal(got, live.values)
    else:
        np.testing.assert_allclose(got, live.values, rtol=1e-3, atol=1e-4)

    # same predictions, through HTTP, with the version in the answer; the probe has ids
    # neither holds: they read their field's default row, published like any row
    assert set(default_ids(MODEL).tolist()) <= set(held)
    probe = stream.take(64)
    assert not {i for s in probe for i in s.ids} <= set(held)
    want = trainer.predict(builder.build(probe))
    server = ReplicaServer(make_app(replica), "127.0.0.1", 0)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        answer = _http(f"{base}/predict", {"instances": _instances(probe)})
        health, metrics = _http(f"{base}/health"), _http(f"{base}/status")
        ready = _http(f"{base}/ready")
    finally:
        server.close()
    got_p = np.array(answer["predictions"], np.float32)
    if dtype == "fp32":
        np.testing.assert_array_equal(got_p, want)
    else:
        np.testing.assert_allclose(got_p, want, atol=2e-3)
    assert answer["version"] == pub.version and answer["dense_version"] == pub.version
    assert health == {"status": "ok", "model": "ctr", "version": pub.version}
    assert metrics["applied_version"] == pub.version and metrics["lag_records"] == 0
    assert metrics["gaps"] == 0 and metrics["dead_letters"] == 0 and metrics["apply_errors"] == 0
    assert ready["ready"] and ready["version"] == pub.version, ready
    replica.close()
    pub.close()
