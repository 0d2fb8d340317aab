"""trainer.scoring: the one id -> row -> score path of the trainer and serving replicas."""

import numpy as np
import torch

from tests.helpers.trainer_models import SLOTS, sample, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.model import build_model
from trainer.scoring import distinct_ids, pool, score_batch
from trainer.source import ListSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer


def test_scoring_pool_sums_rows_per_sample_and_field_and_leaves_empty_fields_zero():
    values = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]])  # (N=3, D=2)
    emb = pool(values, np.array([0, 0, 1]), np.array([1, 1, 0]), batch_size=2, num_fields=2)
    assert emb.shape == (2, 2, 2)
    assert emb.tolist() == [[[0, 0], [3, 0]], [[0, 5], [0, 0]]]


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
