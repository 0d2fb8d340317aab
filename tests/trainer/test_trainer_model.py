import json

import numpy as np
import pytest
import torch

from tests.helpers.trainer_models import SLOTS, dict_lookup, sample, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.model import build_model
from trainer.scoring import default_ids, score_batch
from trainer.source import ListSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer


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
    score with rows looked up in the synced rows (an unknown id reads zeros, or for a slot of
    ``field_mean_slots`` the slot's mean row, which the dump carries like any row)."""
    m = small_model(interaction=interaction, dense_dim=2, heads=("click", "like"), field_mean_slots=(0, 2, 3))
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
    assert set(default_ids(m).tolist()) <= set(store)
    batch = BatchBuilder(m).build(stream.take(300))
    assert not set(batch.ids.tolist()) <= set(store)  # unseen ids too
    got = score_batch(replica, batch, dict_lookup(store, 8))
    np.testing.assert_allclose(got, trainer.predict(batch), rtol=1e-5, atol=1e-6)
    without_defaults = {i: r for i, r in store.items() if i not in set(default_ids(m).tolist())}
    assert not np.allclose(score_batch(replica, batch, dict_lookup(without_defaults, 8)), got, atol=1e-4)


def test_model_head_biases_start_at_init_rate():
    model = build_model(small_model(init_rate=0.02, heads=("click", "like")))
    np.testing.assert_allclose(model.heads.bias.detach().numpy(), np.log(0.02 / 0.98), rtol=1e-6)
    probs = model.score(torch.zeros(4, SLOTS, 8), torch.zeros(4, 0))  # no ids: bias + the MLP's own biases
    np.testing.assert_allclose(probs.numpy(), 0.02, rtol=0.1)


def test_model_wide_term_is_the_sum_of_the_fields_first_component():
    model = build_model(small_model(wide=True))
    emb = torch.zeros(3, SLOTS, 8)
    base = model(emb, torch.zeros(3, 0))
    emb[:, 0, 0], emb[:, 2, 0] = 0.5, -0.2  # component 0 of fields 0 and 2; the deep part sees it too
    deep_only = build_model(small_model(wide=False))
    deep_only.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("wide")})
    got = model(emb, torch.zeros(3, 0)) - deep_only(emb, torch.zeros(3, 0))
    np.testing.assert_allclose(got.detach().numpy(), 0.3, rtol=1e-5)
    assert not torch.equal(base, model(emb, torch.zeros(3, 0)))


def test_base_rate_tracker_moves_bias_toward_observed_rate_and_settles():
    from trainer.model import BaseRateTracker

    rng = np.random.default_rng(0)
    tracker, logit = BaseRateTracker(1, horizon=5000), 0.0  # starts predicting 0.5, truth 0.02
    for _ in range(60):
        p = np.full((512, 1), 1 / (1 + np.exp(-logit)))
        y = (rng.random((512, 1)) < 0.02).astype(float)
        logit += float(tracker.update(p, y, np.ones_like(p))[0])
    assert abs(1 / (1 + np.exp(-logit)) - 0.02) < 0.006


def test_trainer_calibrated_from_the_start_with_bias_tracking():
    """A 5% head, prior 1%: with the prior and the tracker the first report (2048 samples,
    the first batch scored at the prior included) is near the base rate's NE and within a
    factor 2 of calibrated, later windows within 25%, and the run ends below NE 1; without
    either (bias at p = 0.5, no tracking) the first report is far off."""
    stream = SyntheticStream(num_slots=SLOTS, seed=4, base_logit=-4.5).take(8192)
    history = {}
    for name, m, cfg in (("tracked", small_model(), small_trainer(report_every_batches=8)),
                         ("untracked", small_model(init_rate=0.5),
                          small_trainer(report_every_batches=8, bias_tracking_samples=0, warmup_step_samples=0))):
        trainer = Trainer(m, small_table(), cfg)
        trainer.run(ListSource(stream, m, 256))
        history[name] = [r["click"] for r in trainer.validator.history]
    first, last = history["tracked"][0]["cumulative"], history["tracked"][-1]
    assert first["ne"] < 1.1 and 0.5 < first["calibration"] < 2.0 and last["cumulative"]["ne"] < 1.0
    assert all(0.8 < r["window"]["calibration"] < 1.25 for r in history["tracked"][1:])
    assert history["untracked"][0]["cumulative"]["ne"] > 1.5
    assert history["untracked"][0]["cumulative"]["calibration"] > 3


def test_a_young_model_learns_its_first_batch_in_growing_steps():
    """The first batch of a new model is trained in steps of 128, 128, 256, 512 (warm-up),
    each scored after the ones before it were learnt: the first 128 samples are scored at the
    prior as without warm-up, the later ones already nearer the stream's 30% rate.
    It stays one training step for the counters, and later batches are one step each."""
    m = small_model()
    samples = SyntheticStream(num_slots=SLOTS, seed=6, base_logit=-0.85).take(2048)
    builder = BatchBuilder(m)
    first, second = builder.build(samples[:1024]), builder.build(samples[1024:])
    first.positions, second.positions = {0: 1024}, {0: 2048}
    runs = {}
    for warmup in (128, 0):
        trainer = Trainer(m, small_table(), small_trainer(batch_size=1024, warmup_step_samples=warmup))
        pieces = []
        learn = trainer._learn
        trainer._learn = lambda b, pieces=pieces, learn=learn: pieces.append(len(b)) or learn(b)  # type: ignore[method-assign]
        scores = trainer.train_batch(first)
        assert (trainer.step, trainer.samples, trainer.positions) == (1, 1024, {0: 1024})
        trainer.train_batch(second)
        assert (trainer.step, trainer.samples, trainer.positions) == (2, 2048, {0: 2048})
        runs[warmup] = scores, pieces
    (warm, warm_pieces), (cold, cold_pieces) = runs[128], runs[0]
    assert warm_pieces == [128, 128, 256, 512, 1024] and cold_pieces == [1024, 1024]
    rate = float(first.labels[:, 0].mean())
    # both at the prior, nothing learnt yet (rows are drawn in another order: not bit-equal)
    np.testing.assert_allclose(warm[:128], cold[:128], atol=1e-3)
    assert abs(cold[128:, 0].mean() - 0.01) < 0.005  # without warm-up the whole batch at the prior
    assert warm[512:, 0].mean() > 0.5 * rate > cold[512:, 0].mean()


def test_warmup_cuts():
    from trainer.trainer import warmup_cuts

    assert warmup_cuts(0, 100, 128, 1024) == [0, 100]
    assert warmup_cuts(0, 1000, 128, 1024) == [0, 128, 256, 512, 1000]
    assert warmup_cuts(300, 1024, 128, 1024) == [0, 300, 900, 1024]  # 300 seen: 300, 600, then the rest
    assert warmup_cuts(0, 4096, 128, 1024) == [0, 128, 256, 512, 1024, 4096]
    assert warmup_cuts(0, 1024, 0, 1024) == [0, 1024]


def test_trainer_reports_the_oracle_beside_the_model():
    m = small_model()
    stream = SyntheticStream(num_slots=SLOTS, seed=5)
    samples = stream.take(3000)
    truth = {s.request_id: p for s, p in zip(samples, 1 / (1 + np.exp(-(stream.last_logit + stream.head_bias[0]))))}
    trainer = Trainer(m, small_table(), small_trainer(),
                      oracle=lambda b: np.array([[truth[r]] for r in b.request_ids]))
    final = trainer.run(ListSource(samples, m, 256))
    oracle = final["click"]["oracle"]["cumulative"]
    assert oracle["auc"] > final["click"]["cumulative"]["auc"] and oracle["ne"] < 1.0
    assert final["click"]["oracle"]["window"]["n"] == final["click"]["window"]["n"]  # same samples


def test_replica_built_from_the_shipped_model_config_pools_a_multi_id_field_as_the_trainer():
    """The seam of ``model.pooling``: a replica rebuilds the network from the JSON model
    config the publisher ships, and a field holding several ids (the last-N items) scores
    as the trainer scores it."""
    m = small_model()  # pooling: the default, mean
    trainer = Trainer(m, small_table(), small_trainer())
    samples = [sample(i, ids=(10 + i % 3, 20 + i % 5, 30 + i % 7, 40 + i % 2), slots=(0, 0, 0, 1),
                      labels=("click",) if i % 4 == 0 else ()) for i in range(512)]
    trainer.run(ListSource(samples, m, 128))
    cfg = json.loads(json.dumps(trainer.model_config()))
    assert cfg["pooling"] == "mean"
    replica = build_model(cfg)
    replica.load_state_dict(trainer.dense_state_dict())
    store = {}
    for upd in trainer.full_dump():
        store.update(zip(upd.ids.tolist(), upd.values))
    batch = BatchBuilder(m).build(samples[:64])
    lookup = dict_lookup(store, 8)  # every id of the batch was trained
    got = score_batch(replica, batch, lookup)
    np.testing.assert_allclose(got, trainer.predict(batch), rtol=1e-5, atol=1e-7)
    summed = build_model(cfg | {"pooling": "sum"})  # what a replica without the key would build
    summed.load_state_dict(trainer.dense_state_dict())
    assert not np.allclose(score_batch(summed, batch, lookup), got)


def test_model_config_of_an_older_trainer_means_no_wide_term_and_sum_pooling():
    """A dense payload or dump written before ``wide`` and ``pooling`` existed rebuilds the
    model it came from."""
    old = small_model(wide=False).to_dict()
    del old["wide"], old["init_rate"], old["pooling"]
    net = build_model(old)
    assert net.wide is None and net.cfg.pooling == "sum"
    net.load_state_dict(build_model(small_model(wide=False)).state_dict())  # the old layout loads
