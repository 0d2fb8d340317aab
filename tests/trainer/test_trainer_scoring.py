"""trainer.scoring: the one id -> row -> score path of the trainer and serving replicas."""

import numpy as np
import torch

from tests.helpers.trainer_models import SLOTS, dict_lookup, sample, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.model import build_model
from trainer.scoring import default_ids, default_row_id, distinct_ids, one_id_per_field, pool, pool_rows, score_batch
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
    lookup = dict_lookup(rows, 8)
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
    asked = np.concatenate([np.unique(batch.ids), default_ids(m)])
    held = asked[trainer.table.rows_for(asked).numpy() > 0]
    rows = {i: trainer.table.lookup(np.array([i]))[0] for i in held.tolist()}
    assert len(held) < len(asked)  # some of the batch's ids are new
    got = score_batch(trainer.model, batch, dict_lookup(rows, 8))
    np.testing.assert_array_equal(got, trainer.predict(batch))
    unknown = score_batch(trainer.model, batch, dict_lookup({}, 8))
    assert unknown.shape == (64, 1) and not np.allclose(unknown, got)


def test_scoring_an_unknown_id_reads_its_slots_mean_row_or_zeros():
    """An id without a row of a slot in ``field_mean_slots`` scores as if it held the slot's
    mean row (the row of ``default_row_id(slot)``), slot by slot; of any other slot (all of
    them by default) as a zero row."""
    d0, d1 = np.full(8, 0.7, np.float32), np.full(8, -0.3, np.float32)
    rows = {default_row_id(0): d0, default_row_id(1): d1, 5: np.full(8, 0.1, np.float32),
            50: d0, 51: d1, 52: np.zeros(8, np.float32)}
    for mean_slots, same_as in (((0, 1), (50, 51)), ((1,), (52, 51)), ((), (52, 52))):
        m = small_model(field_mean_slots=mean_slots)
        net = build_model(m)
        unknown = BatchBuilder(m).build([sample(0, ids=(98, 99, 5), slots=(0, 1, 2))])
        known = BatchBuilder(m).build([sample(1, ids=(*same_as, 5), slots=(0, 1, 2))])
        np.testing.assert_array_equal(score_batch(net, unknown, dict_lookup(rows, 8)),
                                      score_batch(net, known, dict_lookup(rows, 8)))


def test_trainer_keeps_each_fields_default_row_at_the_mean_of_its_rows_and_starts_new_rows_there():
    """Every slot in ``field_mean_slots``, with ``field_mean_samples=1`` (gain ~1): a slot's
    mean row is the mean of its distinct rows after the last step (one step: no warm-up
    pieces); a new id reads it and its row starts there."""
    m = small_model(field_mean_slots=tuple(range(SLOTS)))
    trainer = Trainer(m, small_table(init_std=0.0), small_trainer(field_mean_samples=1, warmup_step_samples=0))
    first = BatchBuilder(m).build(SyntheticStream(num_slots=SLOTS, seed=4).take(256))
    trainer.train_batch(first)
    defaults = trainer.table.lookup(default_ids(m))  # (F, D)
    for f in range(SLOTS):
        field_ids = np.unique(first.ids[first.fields == f])
        np.testing.assert_allclose(defaults[f], trainer.table.lookup(field_ids).mean(0), rtol=1e-4, atol=1e-6)
    assert np.abs(defaults).max() > 1e-3  # they moved away from zero
    # a new id in field 3 reads that field's default row; the step scores it exactly as
    # predict did (its row starts there), not as a zero row would
    fresh = BatchBuilder(m).build([sample(0, ids=(123_456_789,), slots=(3,))])
    before = trainer.predict(fresh)
    from_zero = score_batch(trainer.model, fresh, dict_lookup({123_456_789: np.zeros(8, np.float32)}, 8))
    assert not np.allclose(before, from_zero, atol=1e-4)
    np.testing.assert_allclose(trainer.train_batch(fresh), before, rtol=1e-6)
    assert trainer.table.num_live == len(np.unique(first.ids)) + SLOTS + 1


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
