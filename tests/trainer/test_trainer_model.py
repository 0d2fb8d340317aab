import json

import numpy as np
import pytest
import torch

from trainer.batch import BatchBuilder
from trainer.model import build_model, pool
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer
from trainer.source import ListSource

from trainer_helpers import SLOTS, small_model, small_table, small_trainer


@pytest.mark.parametrize("interaction", ["fm", "dcn"])
def test_model_scores_are_probabilities_per_head(interaction):
    model = build_model(small_model(interaction=interaction, heads=("click", "like"), dense_dim=3).to_dict())
    probs = model.score(torch.randn(5, SLOTS, 8), torch.randn(5, 3))
    assert probs.shape == (5, 2) and ((probs > 0) & (probs < 1)).all()


def test_model_same_seed_same_weights():
    a, b = build_model(small_model(seed=3).to_dict()), build_model(small_model(seed=3).to_dict())
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("interaction", ["fm", "dcn"])
def test_model_replica_with_same_rows_and_weights_predicts_like_trainer(interaction):
    """What a serving replica does: rebuild from model_config, load the dense state dict,
    look up the synced rows (zeros for unknown ids), pool, score."""
    m = small_model(interaction=interaction, dense_dim=2, heads=("click", "like"))
    trainer = Trainer(m, small_table(admit_count=2), small_trainer())
    stream = SyntheticStream(num_slots=SLOTS, dense_dim=2, heads=("click", "like"), seed=2)
    trainer.run(ListSource(stream.take(1500), m, 256))
    cfg = json.loads(json.dumps(trainer.model_config()))  # must survive JSON
    replica = build_model(cfg)
    replica.load_state_dict(trainer.dense_state_dict())
    store = {}
    for upd in trainer.full_dump():
        assert upd.table in cfg["tables"]
        store.update(zip(upd.ids.tolist(), upd.values))
    batch = BatchBuilder(m).build(stream.take(300))  # has unseen ids too
    values = torch.from_numpy(np.stack([store.get(i, np.zeros(8, np.float32)) for i in batch.ids.tolist()]))
    emb = pool(values, batch.sample_index, batch.fields, len(batch), len(cfg["slots"]))
    got = replica.score(emb, torch.from_numpy(batch.dense)).numpy()
    np.testing.assert_allclose(got, trainer.predict(batch), rtol=1e-5, atol=1e-6)
