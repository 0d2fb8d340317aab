"""Version guarantees across the real broker: atomic versions while predicting, a publisher
dying mid-push, a restarted publisher recovering its version past a corrupt tail, reused
versions reported, and what a replica matches between dense pushes."""

import logging
import threading
import time

import numpy as np
import pytest

from schemas import SparseDelta, codec_for
from sync.config import ConsumerConfig, PublisherConfig, ReplicaConfig
from sync.consumer import DeltaConsumer
from sync.delta_builder import build_deltas
from sync.publisher import ModelPublisher
from sync.replica import ServingReplica
from sync.store import RocksRowStore
from tests.helpers.sync_updates import FakeTrainer, Update, update
from trainer.config import ModelConfig
from trainer.model import build_model

pytestmark = pytest.mark.integration
MODEL = ModelConfig(slots=(0, 1, 2, 3), dim=8, dense_dim=2, hidden=(16,), seed=3)
N_ROWS = 20_000  # ids 0..N_ROWS-1: ~27 messages per shard and version at 8 KiB a message


class StampSource:
    """A ``ModelSource`` whose every row holds ``stamp(value)``: the value set before a push
    reveals, from a prediction, which push's rows it was scored on."""

    def __init__(self) -> None:
        self.net = build_model(MODEL)
        self.value = 1

    @staticmethod
    def row(value: int) -> np.float32:
        return np.float32(0.01 * value)

    def _rows(self) -> list[Update]:
        ids = np.arange(N_ROWS, dtype=np.int64)
        return [Update("emb", ids, np.full((N_ROWS, MODEL.dim), self.row(self.value), np.float32))]

    def collect_updates(self):
        return self._rows()

    def full_dump(self):
        return self._rows()

    def dense_state_dict(self):
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def model_config(self):
        return MODEL.to_dict() | {"tables": {"emb": {"dim": MODEL.dim}}}


def _instances(n=16, per_slot=8, seed=0):
    """Requests whose ids are spread over every shard and every part of a version."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.choice(N_ROWS, size=per_slot * len(MODEL.slots), replace=False)
        out.append({"slots": [s for s in MODEL.slots for _ in range(per_slot)],
                    "ids": ids.tolist(), "dense": [0.5, -0.25]})
    return out


def _expected(replica, instances, value):
    """Predictions with every row == StampSource.row(value): what a request scored on exactly
    that push returns."""
    model = replica.model
    batch = model.batch(instances)
    row = StampSource.row(value)
    return model.score(batch, lambda t, ids, dim: (np.full((len(ids), dim), row, np.float32), np.ones(len(ids), bool)))


def _publisher(kafka, topics, source, tmp_path, producer=None, max_message_bytes=8192):
    cfg = PublisherConfig(model="ctr", sparse_interval_s=1, max_message_bytes=max_message_bytes,
                          dump_dir=str(tmp_path / "dumps"))
    return ModelPublisher(cfg, kafka, topics, source, producer=producer)


def _replica(kafka, topics, tmp_path, name, **kw):
    cfg = ReplicaConfig(model="ctr", dump_dir=str(tmp_path / "dumps"),
                        store_dir=str(tmp_path / name), port=0, poll_interval_ms=5, **kw)
    r = ServingReplica(cfg, kafka, topics)
    r.start()
    return r


class Predictor:
    """Threads predicting in a loop; every answer is kept as (thread, version, predictions)."""

    def __init__(self, replica, instances, threads=4):
        self.replica, self.instances = replica, instances
        self.answers: list[tuple[int, int, np.ndarray]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                         for k in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, k):
        while not self._stop.is_set():
            try:
                a = self.replica.predict(self.instances)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                return
            self.answers.append((k, a["version"], np.array(a["predictions"], np.float32)))

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)


def _check_answers(pred, replica, value_of):
    """Every answer equals the predictions of exactly the version it reports."""
    assert not pred.errors, pred.errors
    want = {v: _expected(replica, pred.instances, value) for v, value in value_of.items()}
    last: dict[int, int] = {}
    for k, version, got in pred.answers:
        assert version in want, f"answer reports version {version}, never complete"
        np.testing.assert_allclose(got, want[version], rtol=1e-6, atol=1e-7,
                                   err_msg=f"answer of version {version} was scored on other rows")
        assert version >= last.get(k, 0), "a thread saw the version go back"
        last[k] = version
    return {v for _, v, _ in pred.answers}


# -- 5: atomic versions ---------------------------------------------------------------------
def test_predictions_during_multi_part_pushes_are_each_scored_on_exactly_their_version(
        kafka_broker, topics, tmp_path, closing):
    source = StampSource()
    pub = closing(_publisher(kafka_broker, topics, source, tmp_path))
    value_of = {}
    pub.tick(now_s=0.0)  # dump + first full push, version 1
    value_of[pub.version] = source.value
    assert pub.last_push.messages > 4 * topics.model_deltas_partitions  # many parts per shard
    # a small max_poll_records: each version arrives over many polls
    replica = closing(_replica(kafka_broker, topics, tmp_path, "r", max_poll_records=7))
    assert replica.wait_caught_up(min_version=1)
    instances = _instances()
    pred = Predictor(replica, instances)
    try:
        for k in range(2, 8):
            source.value = k * 7  # every row of this push encodes it
            pub.push_sparse()
            value_of[pub.version] = source.value
            time.sleep(0.05)
        assert replica.wait_caught_up(min_version=pub.version)
        time.sleep(0.1)
    finally:
        pred.close()
    seen = _check_answers(pred, replica, value_of)
    assert len(seen) >= 3, f"predictions overlapped too few versions ({seen}) to test anything"
    final = replica.predict(instances)
    assert final["version"] == pub.version
    np.testing.assert_allclose(final["predictions"], _expected(replica, instances, source.value),
                               rtol=1e-6, atol=1e-7)
    m = replica.metrics()
    assert m["applied_version"] == pub.version and m["abandoned_versions"] == 0
    assert m["pending_versions"] == {} and m["incomplete_versions"] == []


class DyingProducer:
    """A producer that dies (like its trainer process) after ``die_after`` more sends: what
    it sent before reaches the broker, the rest of the push never does."""

    def __init__(self, real):
        self.real = real
        self.die_after: int | None = None

    def send(self, *a, **kw):
        if self.die_after is not None:
            if self.die_after == 0:
                self.real.flush()
                raise RuntimeError("trainer killed mid-push")
            self.die_after -= 1
        return self.real.send(*a, **kw)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_push_cut_short_by_a_dying_publisher_is_never_shown_and_is_reported(
        kafka_broker, topics, tmp_path, closing, producer):
    source = StampSource()
    dying = DyingProducer(producer)
    pub = _publisher(kafka_broker, topics, source, tmp_path, producer=dying)
    value_of = {}
    pub.tick(now_s=0.0)
    value_of[pub.version] = source.value
    replica = closing(_replica(kafka_broker, topics, tmp_path, "r", max_poll_records=7))
    source.value = 2
    pub.push_sparse()
    value_of[pub.version] = 2
    assert replica.wait_caught_up(min_version=2)
    instances = _instances(seed=1)
    pred = Predictor(replica, instances)
    try:
        per_shard = pub.last_push.messages // topics.model_deltas_partitions
        source.value = 3
        dying.die_after = per_shard + per_shard // 2  # shard 0 whole, shard 1 half, then death
        with pytest.raises(RuntimeError, match="killed"):
            pub.push_sparse()
        assert pub.version == 2
        assert replica.wait_caught_up(min_version=2)  # every message that made it is consumed
        m = replica.metrics()
        assert m["applied_version"] == 2 and replica.predict(instances)["version"] == 2
        assert list(m["pending_versions"]) == ["3"]  # staged, incomplete, not shown
        assert m["pending_versions"]["3"]["shards_done"] == [0]

        # the trainer restarts: it must not reuse version 3, and 3 is given up for good
        again = closing(_publisher(kafka_broker, topics, source, tmp_path))
        assert again.version == 3
        source.value = 4
        again.tick(now_s=100.0)  # dump + full push: version 4
        value_of[again.version] = 4
        assert again.version == 4
        assert replica.wait_caught_up(min_version=4)
        time.sleep(0.1)
    finally:
        pred.close()
    seen = _check_answers(pred, replica, value_of)
    assert 3 not in seen and {2, 4} <= seen
    m = replica.metrics()
    assert m["applied_version"] == 4 and m["abandoned_versions"] == 1
    assert m["incomplete_versions"] == [3] and m["pending_versions"] == {}
    assert m["duplicates"] == 0 and m["conflicting_duplicates"] == 0


# -- 6: version recovery past a corrupt tail; reused versions are reported --------------------
def test_restarted_publisher_recovers_its_version_past_garbage_and_other_models_deltas(
        kafka_broker, topics, tmp_path, closing, producer, caplog):
    trainer = FakeTrainer(dim=4)
    trainer.touch("user", range(200))
    cfg = dict(model="m", sparse_interval_s=1, dump_dir=str(tmp_path / "dumps"))
    pub = ModelPublisher(PublisherConfig(**cfg), kafka_broker, topics, trainer)
    pub.tick(now_s=0.0)  # dump at version 1
    for k in range(3):
        trainer.touch("user", range(k * 10, k * 10 + 30))
        pub.tick(now_s=1.0 + k)
    assert pub.version == 4
    pub.close()
    c = closing(DeltaConsumer(ConsumerConfig(model="m", dump_dir=str(tmp_path / "dumps")),
                              kafka_broker, topics, RocksRowStore(tmp_path / "rows")))
    closing(c.store)
    c.bootstrap()
    assert c.poll_until_caught_up() and c.applier.version == 4

    # the tail of every partition: garbage, another model's delta, a truncated delta of ours
    codec = codec_for(SparseDelta)
    n = topics.model_deltas_partitions
    ours = codec.encode(build_deltas("m", 9, [update("user", [1])], n, "fp32", 900_000, 0)[0][1])
    for p in range(n):
        other = build_deltas("other", 77, [update("user", range(50), seed=p)], n, "fp32",
                             900_000, 0)
        producer.send(topics.model_deltas, b"\xc3\x01not avro", partition=p)
        producer.send(topics.model_deltas, codec.encode(other[p][1]), partition=p)
        producer.send(topics.model_deltas, ours[:len(ours) // 2], partition=p)
    producer.flush()

    with caplog.at_level(logging.WARNING, logger="sync.publisher"):
        again = closing(ModelPublisher(PublisherConfig(**cfg), kafka_broker, topics, trainer))
    assert again.version == 4, "the restarted publisher would reuse versions"
    assert any("skipped" in r.getMessage() for r in caplog.records)
    for k in range(3):
        trainer.touch("user", range(100 + k, 160 + k))
        trainer.evict("user", [k])
        again.tick(now_s=100.0 + k)
    assert again.version == 7
    assert c.poll_until_caught_up()
    assert c.applier.version == 7, "the replica dropped the restarted publisher's versions"
    s = c.applier.stats
    assert s.duplicates == 0 and s.conflicting_duplicates == 0 and s.gaps == 0
    for table, rows in trainer.tables.items():
        got = dict(c.store.rows(table))
        assert sorted(got) == sorted(rows)
        for i, row in rows.items():
            np.testing.assert_array_equal(got[i], row)


def test_replica_counts_and_logs_a_reused_version_whose_content_differs(
        kafka_broker, topics, tmp_path, closing, producer, caplog):
    source = StampSource()
    pub = closing(_publisher(kafka_broker, topics, source, tmp_path, max_message_bytes=900_000))
    pub.tick(now_s=0.0)
    replica = closing(_replica(kafka_broker, topics, tmp_path, "r"))
    source.value = 2
    pub.push_sparse()
    assert replica.wait_caught_up(min_version=2)
    n = topics.model_deltas_partitions
    codec = codec_for(SparseDelta)
    ids = np.arange(N_ROWS, dtype=np.int64)
    same = build_deltas("ctr", 2, source.collect_updates(), n, "fp32", 900_000, 0)
    reused = build_deltas("ctr", 2, [Update("emb", ids, np.full((N_ROWS, MODEL.dim), 9.0,
                                                                np.float32))],
                          n, "fp32", 900_000, 0)
    with caplog.at_level(logging.WARNING, logger="sync.applier"):
        for shard, d in same + reused:  # a harmless re-send, then a reused version number
            producer.send(topics.model_deltas, codec.encode(d), partition=shard)
        producer.flush()
        assert replica.wait_caught_up(min_version=2)
    m = replica.metrics()
    assert m["duplicates"] == len(same) + len(reused)
    assert m["conflicting_duplicates"] == len(reused)
    assert sum("reused this version" in r.getMessage() for r in caplog.records) == n
    instances = _instances(seed=2)
    a = replica.predict(instances)
    assert a["version"] == 2  # still the first version 2's rows
    np.testing.assert_allclose(a["predictions"], _expected(replica, instances, 2), rtol=1e-6)


# -- 7: what a replica matches between dense pushes -----------------------------------------
def sample_instances(samples):
    return [{"slots": s.slots, "ids": s.ids, "dense": s.dense} for s in samples]


def test_between_dense_pushes_replica_rows_equal_the_trainers_and_predictions_use_the_last_dense(
        kafka_broker, topics, tmp_path, closing):
    import torch

    from trainer import trainer as trainer_mod
    from trainer.batch import BatchBuilder
    from trainer.config import TableConfig, TrainerConfig
    from trainer.scoring import score_batch
    from trainer.synthetic import SyntheticStream

    trainer = trainer_mod.Trainer(MODEL, TableConfig(dim=8, expiry_ms=15_000),
                                  TrainerConfig(batch_size=128, device="cpu",
                                                expire_every_batches=3))
    stream = SyntheticStream(num_slots=4, dense_dim=2, users=400, items=150, vocab=2000, seed=1)
    builder = BatchBuilder(MODEL)
    pub = closing(ModelPublisher(PublisherConfig(model="ctr", sparse_interval_s=1,
                                                 dump_dir=str(tmp_path / "dumps")),
                                 kafka_broker, topics, trainer))
    trainer.train_batch(builder.build(stream.take(128)))
    pub.tick(now_s=0.0)  # the only dense publish before the checks: version 1
    dense_v1 = {k: v.clone() for k, v in trainer.dense_state_dict().items()}
    replica = closing(_replica(kafka_broker, topics, tmp_path, "r"))
    for k in range(4):  # sparse pushes only
        for _ in range(2):
            trainer.train_batch(builder.build(stream.take(128)))
        pub.tick(now_s=k + 1.0)
    assert pub.version == 5
    assert replica.wait_caught_up(min_version=5)

    # sparse rows: exactly the trainer's, as of the reported version
    live = trainer.full_dump()[0]
    held = dict(replica.store.rows("emb"))
    assert sorted(held) == sorted(live.ids.tolist())
    np.testing.assert_array_equal(np.stack([held[i] for i in live.ids.tolist()]), live.values)

    # predictions: the trainer's rows through the dense weights of dense_version (1), not the
    # trainer's current dense weights
    probe = stream.take(64)
    answer = replica.predict(sample_instances(probe))
    assert answer["version"] == 5 and answer["dense_version"] == 1
    old_net = build_model(MODEL)
    old_net.load_state_dict(dense_v1)
    old_net.eval()
    batch = builder.build(probe)
    with torch.no_grad():
        want_old_dense = score_batch(old_net, batch, trainer.lookup)
    got = np.array(answer["predictions"], np.float32)
    np.testing.assert_array_equal(got, want_old_dense)
    assert not np.allclose(got, trainer.predict(batch), atol=1e-6), \
        "the dense weights changed since version 1, so predictions must differ"

    # after a dense push: the trainer's own predictions
    pub.publish_dense()
    assert replica.wait_caught_up(min_version=pub.version)
    deadline = time.monotonic() + 10
    while replica.model.version != pub.version and time.monotonic() < deadline:
        time.sleep(0.02)
    answer = replica.predict(sample_instances(probe))
    assert answer["version"] == answer["dense_version"] == pub.version == 6
    np.testing.assert_array_equal(np.array(answer["predictions"], np.float32),
                                  trainer.predict(batch))
