"""trainer.scoring: the one id -> row -> score path of the trainer and serving replicas."""

import numpy as np
import torch

from tests.helpers.trainer_models import SLOTS, sample, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.model import build_model
from trainer.scoring import distinct_ids, one_id_per_field, pool, pool_rows, score_batch
from trainer.source import ListSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer


def test_scoring_pool_sums_rows_per_sample_and_field_and_leaves_empty_fields_zero():
    values = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]])  # (N=3, D=2)
    emb = pool(values, np.array([0, 0, 1]), np.array([1, 1, 0]), batch_size=2, num_fields=2)
    assert emb.shape == (2, 2, 2)
    assert emb.tolist() == [[[0, 0], [3, 0]], [[0, 5], [0, 0]]]


def test_scoring_mean_pool_averages_a_fields_rows_and_leaves_single_ids_and_empty_fields_alone():
    values = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]])  # (N=3, D=2)
    emb = pool(values, np.array([0, 0, 1]), np.array([1, 1, 0]), batch_size=2, num_fields=2, mean=True)
    assert emb.tolist() == [[[0, 0], [1.5, 0]], [[0, 5], [0, 0]]]


def test_scoring_a_multi_id_field_scores_as_the_mean_of_its_rows_by_default_and_as_the_sum_when_asked():
    """Trainer and replica share ``score_batch``: a sample whose field holds rows a and b scores
    like one holding the single row (a + b) / 2 (mean, the default) or a + b (``pooling=sum``)."""
    rows = {1: np.full(8, 0.2, np.float32), 2: np.full(8, 0.6, np.float32), 3: np.full(8, 0.4, np.float32),
            4: np.full(8, 0.8, np.float32), 5: np.full(8, -0.1, np.float32)}
    lookup = lambda ids: np.stack([rows[i] for i in ids.tolist()])  # noqa: E731
    for pooling, combined in (("mean", 3), ("sum", 4)):
        m = small_model(pooling=pooling)
        net = build_model(m)
        two = BatchBuilder(m).build([sample(0, ids=(1, 2, 5), slots=(0, 0, 1))])
        one = BatchBuilder(m).build([sample(1, ids=(combined, 5), slots=(0, 1))])
        np.testing.assert_allclose(score_batch(net, two, lookup), score_batch(net, one, lookup), rtol=1e-5)


def test_scoring_training_pools_a_multi_id_field_as_serving_does():
    """The progressive scores of a training step (before its update) are ``predict``'s, for
    samples whose field holds several ids, under either pooling."""
    for pooling in ("mean", "sum"):
        m = small_model(pooling=pooling)
        trainer = Trainer(m, small_table(), small_trainer())
        batch = BatchBuilder(m).build([sample(i, ids=(10 + i % 3, 20 + i % 5, 30 + i % 7, 40), slots=(0, 0, 0, 1))
                                       for i in range(64)])
        trainer.train_batch(batch)  # rows exist now
        before = trainer.predict(batch)
        np.testing.assert_allclose(trainer.train_batch(batch), before, rtol=1e-5, atol=1e-7)


def test_scoring_distinct_ids_recover_the_batch_ids():
    batch = BatchBuilder(small_model()).build([sample(0, ids=(7, 9), slots=(0, 1)),
                                               sample(1, ids=(9, 7, 9), slots=(0, 1, 2))])
    ids = distinct_ids(batch)
    assert ids.uniq.tolist() == [7, 9] and ids.counts().tolist() == [2, 3]
    np.testing.assert_array_equal(ids.uniq[ids.codes], batch.ids)


def test_scoring_build_model_from_config_or_its_json_is_the_same_network():
    cfg = small_model(seed=5)
    a, b = build_model(cfg), build_model(cfg.to_dict() | {"tables": {"emb": {"dim": 8}}})
    assert a.cfg == b.cfg
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_scoring_trainer_predict_is_score_batch_with_its_table():
    m = small_model()
    trainer = Trainer(m, small_table(), small_trainer())
    stream = SyntheticStream(num_slots=SLOTS, seed=4)
    trainer.run(ListSource(stream.take(512), m, 256))
    batch = BatchBuilder(m).build(stream.take(64))
    rows = {i: trainer.table.lookup(np.array([i]))[0] for i in np.unique(batch.ids).tolist()}
    got = score_batch(trainer.model, batch, lambda ids: np.stack([rows[i] for i in ids.tolist()]))
    np.testing.assert_array_equal(got, trainer.predict(batch))
    unknown = score_batch(trainer.model, batch, lambda ids: np.zeros((len(ids), 8), np.float32))
    assert unknown.shape == (64, 1) and not np.allclose(unknown, got)


def test_scoring_one_id_per_field_in_order_skips_pooling_with_the_same_embeddings():
    build = BatchBuilder(small_model(slots=(0, 1, 2))).build
    rows = torch.randn(10, 8)  # (U, D): more than any batch below has distinct ids
    cases = {  # batch, and whether every sample holds one id per field in field order
        "one id per field": (build([sample(i, ids=(i, i + 1, i + 2), slots=(0, 1, 2)) for i in range(4)]), True),
        "fields out of order": (build([sample(0, ids=(1, 2, 3), slots=(1, 0, 2))]), False),
        "a field missing": (build([sample(0, ids=(1, 2), slots=(0, 2)),
                                   sample(1, ids=(1, 2, 3, 4), slots=(0, 1, 2, 2))]), False),
        "a field with two ids": (build([sample(0, ids=(1, 2, 3, 4), slots=(0, 0, 1, 2))]), False),
    }
    for name, (batch, expected) in cases.items():
        assert one_id_per_field(batch, 3) is expected, name
        ids = distinct_ids(batch)
        per_id = rows[torch.from_numpy(ids.codes)]
        for mean in (False, True):
            pooled = pool(per_id, batch.sample_index, batch.fields, len(batch), 3, mean=mean)
            assert torch.equal(pool_rows(batch, ids, rows, 3, mean), pooled), (name, mean)
