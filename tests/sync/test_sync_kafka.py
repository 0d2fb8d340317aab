"""Publisher -> real broker -> consumer library, with a stand-in trainer (FakeTrainer)."""

import numpy as np
import pytest

from schemas import DeadLetter, SparseDelta, codec_for
from streamtrain.kafka_io import read_all
from sync.config import ConsumerConfig, PublisherConfig
from sync.consumer import DeltaConsumer
from sync.delta_builder import build_deltas
from sync.publisher import ModelPublisher
from sync.store import MemoryRowStore, RocksRowStore
from tests.helpers.sync_updates import FakeTrainer, update

pytestmark = pytest.mark.integration


def _publisher(kafka, topics, trainer, tmp_path, **kw):
    cfg = PublisherConfig(model="m", sparse_interval_s=1, dump_dir=str(tmp_path / "dumps"), **kw)
    return ModelPublisher(cfg, kafka, topics, trainer)


def _consumer(kafka, topics, tmp_path, store=None, **kw):
    cfg = ConsumerConfig(model="m", dump_dir=str(tmp_path / "dumps"), **kw)
    c = DeltaConsumer(cfg, kafka, topics, store if store is not None else MemoryRowStore())
    c.bootstrap()
    return c


def _assert_same_rows(store, trainer, exact=True):
    for table, rows in trainer.tables.items():
        got = dict(store.rows(table))
        assert sorted(got) == sorted(rows), f"table {table}: ids differ"
        for i, row in rows.items():
            if exact:
                np.testing.assert_array_equal(got[i], row)
            else:
                np.testing.assert_allclose(got[i], row, rtol=1e-3, atol=1e-3)


def _train_a_while(trainer, pub, pushes, t0=1000.0, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(pushes):
        trainer.touch("user", rng.integers(0, 500, 60))
        trainer.touch("item", rng.integers(0, 200, 30))
        live = list(trainer.tables["user"])
        trainer.evict("user", rng.choice(live, 5, replace=False))
        pub.tick(now_s=t0 + k * 1.0)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_sync_replica_rows_equal_trainer_after_several_intervals(kafka_broker, topics, tmp_path, dtype):
    trainer = FakeTrainer(dim=8)
    trainer.touch("user", range(100))
    pub = _publisher(kafka_broker, topics, trainer, tmp_path, dtype=dtype)
    pub.tick(now_s=999.0)  # dump_on_start: the replica's bootstrap point
    replica = _consumer(kafka_broker, topics, tmp_path, RocksRowStore(tmp_path / "rows"))
    _train_a_while(trainer, pub, pushes=5)
    assert pub.version == 6
    assert replica.poll_until_caught_up()
    _assert_same_rows(replica.store, trainer, exact=dtype == "fp32")
    assert replica.applier.version == 6 and replica.applier.stats.gaps == 0
    assert replica.applier.stats.tombstones_applied > 0
    replica.close()
    pub.close()


def test_sync_new_replica_bootstrap_and_replay_yields_the_same_state(kafka_broker, topics, tmp_path):
    trainer = FakeTrainer(dim=4)
    trainer.touch("user", range(50))
    pub = _publisher(kafka_broker, topics, trainer, tmp_path)
    pub.tick(now_s=0.0)
    first = _consumer(kafka_broker, topics, tmp_path)
    _train_a_while(trainer, pub, pushes=3, t0=1.0)
    first.poll_until_caught_up()
    first.close()  # killed mid-stream
    pub.publish_dense()  # a newer dump, then more deltas after it
    _train_a_while(trainer, pub, pushes=3, t0=10.0, seed=1)
    second = _consumer(kafka_broker, topics, tmp_path)
    assert second.applier.version == 5  # from the dump ...
    assert second.poll_until_caught_up()
    assert second.applier.version == pub.version == 8  # ... plus replay
    _assert_same_rows(second.store, trainer)
    second.close()
    pub.close()


def test_sync_shard_subset_holds_only_its_ids(kafka_broker, topics, tmp_path):
    trainer = FakeTrainer(dim=4)
    trainer.touch("user", range(400))
    pub = _publisher(kafka_broker, topics, trainer, tmp_path)
    pub.tick(now_s=0.0)
    _train_a_while(trainer, pub, pushes=2, t0=1.0)
    c = _consumer(kafka_broker, topics, tmp_path, shards=(1,))
    assert c.poll_until_caught_up()
    from sync.sharding import shard_of
    held = np.array([i for i, _ in c.store.rows("user")])
    want = np.array(sorted(i for i in trainer.tables["user"]
                           if shard_of(np.array([i]), pub.num_shards)[0] == 1))
    np.testing.assert_array_equal(np.sort(held), want)
    assert c.applier.version == pub.version
    c.close()
    pub.close()


def test_sync_duplicates_stale_and_corrupt_messages_are_handled(kafka_broker, topics, tmp_path, producer):
    codec = codec_for(SparseDelta)
    v1 = build_deltas("m", 1, [update("t", [1, 2], dim=2, seed=1)], 1, "fp32", 900_000, 1)[0][1]
    v2 = build_deltas("m", 2, [update("t", [1, 2], dim=2, seed=2)], 1, "fp32", 900_000, 2)[0][1]
    v5 = build_deltas("m", 5, [update("t", [3], dim=2, seed=5)], 1, "fp32", 900_000, 5)[0][1]
    bad_shape = build_deltas("m", 6, [update("t", [4], dim=2)], 1, "fp32", 900_000, 6)[0][1]
    bad_shape.values = bad_shape.values[:3]
    stream = [codec.encode(v2), codec.encode(v2), codec.encode(v1), b"\xc3\x01garbage",
              codec.encode(v5), codec.encode(bad_shape)]
    for raw in stream:
        producer.send(topics.model_deltas, raw, partition=0)
    producer.flush()
    gaps = []
    cfg = ConsumerConfig(model="m", dump_dir=str(tmp_path / "none"), require_dump=False,
                         shards=(0,))
    c = DeltaConsumer(cfg, kafka_broker, topics, MemoryRowStore(),
                      on_gap=lambda s, lost: gaps.append((s, lost)))
    c.bootstrap()
    # every message says num_shards=1 and shard 0, so the others partitions stay empty
    assert c.poll_until_caught_up()
    rows, found = c.store.lookup("t", np.array([1, 2, 3, 4]), 2)
    np.testing.assert_array_equal(rows[:2], update("t", [1, 2], dim=2, seed=2).values)
    assert found.tolist() == [True, True, True, False]
    s = c.applier.stats
    assert s.duplicates == 1 and s.late_messages == 1 and s.rows_skipped == 2
    assert gaps == [(0, [3, 4])] and s.gaps == 1
    assert c.stats.dead_letters == 2
    c.close()
    dead = [codec_for(DeadLetter).decode(r.value) for r in read_all(kafka_broker, topics.dead_letter, expected=2)]
    assert sorted(d.offset for d in dead) == [3, 5]
    assert any("undecodable" in d.reason for d in dead) and any("values hold" in d.reason for d in dead)


def test_sync_restarted_publisher_continues_the_version_sequence(kafka_broker, topics, tmp_path):
    trainer = FakeTrainer(dim=4)
    trainer.touch("user", range(20))
    pub = _publisher(kafka_broker, topics, trainer, tmp_path, dump_on_start=False)
    for k in range(3):
        trainer.touch("user", [k])
        pub.tick(now_s=float(k))
    pub.close()
    again = _publisher(kafka_broker, topics, trainer, tmp_path, dump_on_start=False)
    assert again.version == 3
    trainer.touch("user", [7])
    assert again.push_sparse().version == 4
    c = _consumer(kafka_broker, topics, tmp_path, require_dump=False)
    assert c.poll_until_caught_up()
    assert c.applier.version == 4 and c.applier.stats.gaps == 0
    _assert_same_rows(c.store, trainer)
    c.close()
    again.close()


def test_sync_corrupt_dense_chunk_goes_to_dead_letter(kafka_broker, topics, tmp_path, producer):
    import torch

    from schemas import DenseSnapshot
    from sync.dense import chunk_dense, encode_dense

    good = chunk_dense("m", 2, 0, encode_dense({"w": torch.ones(4)}, {"k": 1}), 1 << 20)
    bad = chunk_dense("m", 3, 0, encode_dense({"w": torch.zeros(4)}, {"k": 1}), 1 << 20)
    bad[0].sha256 = "0" * 64
    codec = codec_for(DenseSnapshot)
    for msg in (codec.encode(good[0]), b"junk", codec.encode(bad[0])):
        producer.send(topics.model_dense, msg, partition=0)
    producer.flush()
    seen = []
    cfg = ConsumerConfig(model="m", dump_dir=str(tmp_path / "none"), require_dump=False)
    c = DeltaConsumer(cfg, kafka_broker, topics, MemoryRowStore(),
                      on_dense=lambda v, model_cfg, sd: seen.append((v, model_cfg)))
    c.bootstrap()
    assert c.poll_until_caught_up()
    assert seen == [(2, {"k": 1})] and c.stats.dead_letters == 2
    c.close()
