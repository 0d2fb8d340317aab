"""The trainer <-> publisher contract: ``sync.source.ModelSource``."""

import numpy as np

from sync.publisher import merge_full
from sync.source import ModelSource
from tests.helpers.sync_updates import FakeTrainer
from tests.helpers.trainer_models import SLOTS, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer


def _trainer() -> Trainer:
    return Trainer(small_model(), small_table(), small_trainer())


def test_source_trainer_and_fake_trainer_are_model_sources():
    real: ModelSource = _trainer()  # checked by mypy too: structural, no inheritance
    fake: ModelSource = FakeTrainer()
    assert isinstance(real, ModelSource) and isinstance(fake, ModelSource)


def test_source_trainer_hands_rows_the_publisher_can_read():
    trainer = _trainer()
    trainer.train_batch(BatchBuilder(small_model()).build(SyntheticStream(num_slots=SLOTS).take(64)))
    (upd,) = merge_full(trainer.full_dump(), trainer.collect_updates())
    assert upd.table == "emb" and upd.ids.dtype == np.int64 and upd.values.shape == (len(upd.ids), 8)
    assert set(trainer.dense_state_dict()) and trainer.model_config()["tables"] == {"emb": {"dim": 8}}
