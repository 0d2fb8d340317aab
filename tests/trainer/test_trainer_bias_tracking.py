"""The base-rate tracker's first batches (``trainer.model.BaseRateTracker``, re-scored after
each training step): a head far from its rate is put near it at once, a head within the
noise of its few positives is left alone, and in the trainer a rare head is not carried
along by a common head's first steps (they share every field's wide weight)."""

import numpy as np

from tests.helpers.trainer_models import SLOTS, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.model import BaseRateTracker
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer


def test_base_rate_tracker_rescored_batch_moves_a_far_head_to_its_rate_at_once():
    """2 positives in 1024 while the re-scored batch predicts 6.5%: the bias goes most of
    the way (the log ratio less one standard error), not a halved step clipped to 1."""
    tracker = BaseRateTracker(1, horizon=20_000)
    y = np.zeros((1024, 1))
    y[:2] = 1
    w = np.ones_like(y)
    now = np.full_like(y, 0.065)
    shift = float(tracker.update(np.full_like(y, 0.01), y, w, probs_now=now)[0])
    calibration = (now * np.exp(shift)).sum() / y.sum()
    assert 1.0 < calibration < 3.0  # shrunk toward no move, never past the observed rate
    assert shift < -2.0


def test_base_rate_tracker_rescored_batch_leaves_a_head_within_noise():
    """3 positives seen, 4 predicted: within one standard error, no move (the full ratio made
    a head with a handful of positives chase them)."""
    tracker = BaseRateTracker(1, horizon=20_000)
    y = np.zeros((1000, 1))
    y[:3] = 1
    assert tracker.update(np.full_like(y, 0.004), y, np.ones_like(y), probs_now=np.full_like(y, 0.004))[0] == 0.0


def _rare_and_common(n: int, rate: float) -> list:
    """Click from the synthetic model (~47%), conversion independent of everything at ``rate``."""
    samples = SyntheticStream(num_slots=SLOTS, seed=11, base_logit=0.0).take(n)
    rng = np.random.default_rng(3)
    for s in samples:
        if rng.random() < rate:
            s.label_types = [*s.label_types, "conversion"]
            s.label_delays_ms = [*s.label_delays_ms, 1000]
    return samples


def test_trainer_rare_head_is_not_lifted_by_the_common_heads_first_steps():
    """Prior 1%, click ~47%, conversion 0.2% with nothing to learn: the first step lifts every
    head (the click's first-order weights are also the conversion's), yet the conversion
    head's mean prediction on batches 2-6 stays within 3x of its true rate (the halved,
    clipped shift: 3.8x, batch 2 at 5.4x; the rest is the noise of ~2 positives a batch)."""
    m = small_model(heads=("click", "conversion"))
    trainer = Trainer(m, small_table(), small_trainer(batch_size=1024, delayed_feedback="none"))
    builder = BatchBuilder(m)
    samples = _rare_and_common(6 * 1024, 0.002)
    preds = [trainer.train_batch(builder.build(samples[k:k + 1024])) for k in range(0, len(samples), 1024)]
    later = np.concatenate(preds[1:])  # (B, H), scored before each batch was trained on
    assert later[:, 1].mean() / 0.002 < 3.0
    assert 0.5 < later[:, 0].mean() / np.mean(["click" in s.label_types for s in samples[1024:]]) < 1.5
