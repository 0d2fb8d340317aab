import numpy as np
import pytest
import torch

from schemas import FLAG_ACTION_STALL, FLAG_LATE_CORRECTION
from tests.helpers.trainer_models import SLOTS, sample, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig
from trainer.source import ListSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer
from trainer.weighting import LossWeighting

HEADS = ("click", "conversion")


def build(samples):
    return BatchBuilder(ModelConfig(slots=(0, 1), heads=HEADS, dense_dim=0)).build(samples)


def test_weighting_negatives_get_inverse_sample_rate():
    batch = build([sample(0, sample_rate=0.25), sample(1, labels=("click",), sample_rate=0.25)])
    eval_w, train_w = LossWeighting(small_trainer(neg_sampling="weight"), 2).base(batch)
    assert eval_w.tolist() == [[4, 4], [1, 1]] and train_w.tolist() == [[4, 4], [1, 1]]
    eval_w, train_w = LossWeighting(small_trainer(neg_sampling="logit"), 2).base(batch)
    # the click's conversion-negative was kept for sure: it counts r, like the sampled negatives
    assert eval_w.tolist() == [[4, 4], [1, 1]] and train_w.tolist() == [[1, 1], [1, 0.25]]


def test_weighting_late_correction_trains_only_its_late_labels():
    batch = build([sample(0, labels=("conversion",), flags=FLAG_LATE_CORRECTION, weight=2.0)])
    eval_w, train_w = LossWeighting(small_trainer(), 2).base(batch)
    assert train_w.tolist() == [[0, 2]] and eval_w.tolist() == [[0, 2]]


def test_weighting_stall_negatives_are_down_weighted():
    batch = build([sample(0, flags=FLAG_ACTION_STALL), sample(1, labels=("click",), flags=FLAG_ACTION_STALL)])
    _, train_w = LossWeighting(small_trainer(stall_negative_weight=0.1), 2).base(batch)
    np.testing.assert_allclose(train_w, [[0.1, 0.1], [1.0, 0.1]])


def test_weighting_fake_negative_matches_paper_when_every_positive_is_late():
    w = LossWeighting(small_trainer(), 1)
    one_head = BatchBuilder(ModelConfig(slots=(0, 1), heads=("click",), dense_dim=0))
    w.observe(one_head.build([sample(0, labels=("click",), flags=FLAG_LATE_CORRECTION)]))
    assert w.rho[0] == 1.0
    p = torch.tensor([[0.2], [0.2]])
    got = w.fake_negative(p, torch.tensor([[1.0], [0.0]]))
    torch.testing.assert_close(got, torch.tensor([[1.2], [0.8 * 1.2]]))
    assert torch.equal(LossWeighting(small_trainer(), 1).fake_negative(p, torch.zeros(2, 1)), torch.ones(2, 1))


def _mean_prediction_error(mode: str) -> float:
    """Train on a stream whose negatives were kept with probability 0.3; compare the mean
    prediction with the positive rate of the un-sampled stream."""
    m = small_model()
    stream = SyntheticStream(num_slots=SLOTS, seed=4)
    raw = stream.take(12000)
    rate = 0.3
    keep = np.random.default_rng(0).random(len(raw)) < rate
    kept = [s for s, k in zip(raw, keep) if s.label_types or k]
    for s in kept:
        s.sample_rate = rate
    trainer = Trainer(m, small_table(), small_trainer(neg_sampling=mode, dense_lr=3e-3, delayed_feedback="none"))
    trainer.run(ListSource(kept, m, 256))
    test = stream.take(3000)
    truth = np.mean([bool(s.label_types) for s in test])
    return float(trainer.predict(BatchBuilder(m).build(test)).mean() - truth)


@pytest.mark.parametrize("mode", ["weight", "logit"])
def test_weighting_recalibrates_for_negative_down_sampling(mode):
    assert abs(_mean_prediction_error(mode)) < 0.05
    # without a correction the model believes the sampled positive rate
    assert _mean_prediction_error("none") > 0.15


def test_weighting_a_label_no_head_reads_was_still_kept_for_sure():
    """The joiner keeps every labelled sample (schemas/contracts.py): one whose only label is
    no model head is a negative for the heads, but it is not down-sampled."""
    batch = build([sample(0, labels=("like",), sample_rate=0.25), sample(1, sample_rate=0.25)])
    eval_w, train_w = LossWeighting(small_trainer(neg_sampling="weight"), 2).base(batch)
    assert eval_w.tolist() == [[1, 1], [4, 4]] and train_w.tolist() == [[1, 1], [4, 4]]
    eval_w, train_w = LossWeighting(small_trainer(neg_sampling="logit"), 2).base(batch)
    assert eval_w.tolist() == [[1, 1], [4, 4]] and train_w.tolist() == [[0.25, 0.25], [1, 1]]
