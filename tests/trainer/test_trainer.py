import json

import numpy as np
import torch

from tests.helpers.trainer_models import SLOTS, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.source import ListSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer


def stream(n, seed=0, **kw):
    return SyntheticStream(num_slots=SLOTS, seed=seed, **kw).take(n)


def test_trainer_learns_progressive_auc_rises():
    m = small_model()
    trainer = Trainer(m, small_table(), small_trainer(report_every_batches=10))
    final = trainer.run(ListSource(stream(20000), m, 256))
    first = trainer.validator.history[0]["click"]["window"]["auc"]
    # it learns (fast enough that the first window of 2560 samples already ranks a little)
    assert final["click"]["window"]["auc"] > 0.65 and final["click"]["window"]["auc"] > first + 0.05
    assert final["samples"] == 20000 and final["step"] == 79


def test_trainer_scores_each_batch_before_training_on_it():
    m = small_model()
    trainer = Trainer(m, small_table(), small_trainer())
    trainer.run(ListSource(stream(1000), m, 250))
    batch = BatchBuilder(m).build(stream(200, seed=1))
    # admit the batch's new ids as train_batch does on sight (their rows start random, and
    # with the wide term they count at once); the scores then see exactly this state
    trainer.table.rows_for(np.unique(batch.ids), now_ms=int(batch.event_time_ms.max()), train=True)
    before = trainer.predict(batch)
    scores = trainer.train_batch(batch)
    np.testing.assert_allclose(scores, before, rtol=1e-5, atol=1e-6)
    assert not np.allclose(trainer.predict(batch), before, atol=2e-3)  # and then it trained


def test_trainer_sparse_update_touches_only_batch_ids():
    m = small_model()
    trainer = Trainer(m, small_table(), small_trainer())
    first, second = BatchBuilder(m).build(stream(300)), BatchBuilder(m).build(stream(50, seed=9))
    trainer.train_batch(first)
    trainer.collect_updates()
    probe = np.setdiff1d(first.ids, second.ids)
    before = trainer.table.lookup(probe)
    trainer.train_batch(second)
    (upd,) = trainer.collect_updates()
    assert set(upd.ids.tolist()) <= set(second.ids.tolist())
    np.testing.assert_array_equal(trainer.table.lookup(probe), before)


def test_trainer_expiry_is_reported_to_sync():
    m = small_model()
    trainer = Trainer(m, small_table(expiry_ms=2000), small_trainer(expire_every_batches=1))
    old, new = stream(100, start_ms=0), stream(100, seed=1, start_ms=100_000, users=7, items=7, vocab=5)
    trainer.train_batch(BatchBuilder(m).build(old))
    trainer.collect_updates()
    trainer.train_batch(BatchBuilder(m).build(new))
    (upd,) = trainer.collect_updates()
    gone = set(np.unique(BatchBuilder(m).build(old).ids).tolist()) - set(upd.ids.tolist())
    assert gone and gone <= set(upd.evicted.tolist())
    assert trainer.table.num_live == len(np.unique(BatchBuilder(m).build(new).ids))


def test_trainer_restored_checkpoint_continues_identically(tmp_path):
    m = small_model(heads=("click", "like"))
    data = stream(2000, heads=("click", "like"))
    full = Trainer(m, small_table(admit_count=2), small_trainer(delayed_feedback="fn_weighting"))
    full.run(ListSource(data, m, 200))

    cfg = small_trainer(checkpoint_dir=str(tmp_path), max_samples=1000)
    half = Trainer(m, small_table(admit_count=2), cfg)
    half.run(ListSource(data, m, 200))
    resumed = Trainer(m, small_table(admit_count=2), small_trainer(checkpoint_dir=str(tmp_path)))
    assert resumed.restore_latest() and resumed.positions == {0: 1000}
    resumed.run(ListSource(data, m, 200, start=resumed.positions[0]))

    assert resumed.samples == full.samples == 2000
    for k, v in full.dense_state_dict().items():
        torch.testing.assert_close(resumed.dense_state_dict()[k], v, rtol=0, atol=0)
    a, b = full.full_dump()[0], resumed.full_dump()[0]
    np.testing.assert_array_equal(np.sort(a.ids), np.sort(b.ids))
    np.testing.assert_array_equal(a.values[np.argsort(a.ids)], b.values[np.argsort(b.ids)])
    assert full.validator.report()["like"] == resumed.validator.report()["like"]


def test_trainer_model_config_is_json_and_names_the_table():
    cfg = Trainer(small_model(), small_table(), small_trainer()).model_config()
    again = json.loads(json.dumps(cfg))
    assert again["tables"] == {"emb": {"dim": 8}} and again["slots"] == list(range(SLOTS))


def test_trainer_counts_and_warns_once_per_unknown_action_type(tmp_path, caplog):
    import logging

    from tests.helpers.trainer_models import sample

    m = small_model()  # heads: click
    labels = [("click",), ("share",), ("share", "click"), ("like",), (), ("share",)] * 10
    data = [sample(i, labels=lab) for i, lab in enumerate(labels)]
    caplog.set_level(logging.WARNING, logger="trainer.trainer")
    cfg = small_trainer(metrics_path=str(tmp_path / "m.jsonl"), checkpoint_dir=str(tmp_path / "ckpt"))
    trainer = Trainer(m, small_table(), cfg)
    final = trainer.run(ListSource(data, m, 12))  # 5 batches, each with every type
    counts = [{"type": "like", "samples": 10}, {"type": "share", "samples": 30}]
    assert final["unknown_action_types"] == counts
    line = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    assert line["unknown_action_types"] == counts
    assert [k for k, v in line.items() if isinstance(v, dict)] == ["click"]  # dicts are heads
    warned = [r.getMessage() for r in caplog.records if "is not a model head" in r.getMessage()]
    assert len(warned) == 2 and "'like'" in warned[0] and "'share'" in warned[1]
    assert "model.heads=click" in warned[0]
    # the labels of heads are unaffected: "share" + "click" is a click
    np.testing.assert_array_equal(BatchBuilder(m).build(data[:6]).labels[:, 0], [1, 0, 1, 0, 0, 0])
    resumed = Trainer(m, small_table(), cfg)  # the counts survive a restart
    assert resumed.restore_latest() and resumed.unknown_actions == {"like": 10, "share": 30}
