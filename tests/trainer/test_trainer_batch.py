import numpy as np

from tests.helpers.trainer_models import sample
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig


def test_batch_layout_groups_ids_per_sample_with_fields():
    builder = BatchBuilder(ModelConfig(slots=(5, 3), heads=("click", "like"), dense_dim=0))
    batch = builder.build([
        sample(0, ids=(10, 11, 12), slots=(3, 5, 3), labels=("like",)),
        sample(1, ids=(), slots=()),
        sample(2, ids=(20, 99), slots=(5, 7), labels=("click", "like", "buy")),
    ], positions={0: 3})
    assert len(batch) == 3
    assert batch.offsets.tolist() == [0, 3, 3, 4]
    assert batch.ids.tolist() == [10, 11, 12, 20]
    assert batch.fields.tolist() == [1, 0, 1, 0]  # slot 5 is field 0, slot 3 field 1
    assert batch.sample_index.tolist() == [0, 0, 0, 2]
    assert batch.dropped_ids == 1  # slot 7 is not a model field
    assert batch.labels.tolist() == [[0, 1], [0, 0], [1, 1]]
    assert batch.request_ids == ["r0", "r1", "r2"] and batch.positions == {0: 3}
    assert batch.dense.shape == (3, 0)


def test_batch_problem_names_what_is_wrong():
    builder = BatchBuilder(ModelConfig(dense_dim=2))
    assert "differ in length" in builder.problem(sample(ids=(1, 2), slots=(0,), dense=[0.0, 1.0]))
    assert "dense" in builder.problem(sample(dense=[1.0]))
    assert "NaN" in builder.problem(sample(dense=[1.0, float("nan")]))
    assert "sample_rate" in builder.problem(sample(dense=[1.0, 2.0], sample_rate=0.0))
    assert "weight" in builder.problem(sample(dense=[1.0, 2.0], weight=-1.0))
    assert builder.problem(sample(dense=[1.0, 2.0])) is None


def test_batch_empty_has_consistent_shapes():
    batch = BatchBuilder(ModelConfig(heads=("a", "b"))).build([])
    assert batch.dense.shape == (0, 3)
    assert len(batch) == 0 and batch.labels.shape == (0, 2) and batch.ids.dtype == np.int64
