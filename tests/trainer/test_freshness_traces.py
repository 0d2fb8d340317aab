"""Freshness traces on the trainer side (trainer.freshness): which actions a batch carries,
the bounded uniform reservoir, and the trained_ms the trainer stamps."""

import numpy as np
import pytest

from streamtrain.clock import FixedClock
from streamtrain.config import ConfigError
from tests.helpers.trainer_models import sample, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.config import TrainerConfig
from trainer.freshness import ActionTraces
from trainer.trainer import Trainer


def _batch(samples):
    return BatchBuilder(small_model()).build(samples)


def _emitted(s, emit_time_ms):
    s.emit_time_ms = emit_time_ms
    return s


def test_batch_carries_one_action_per_label_with_its_produce_time():
    samples = [sample(0),  # negative
               _emitted(sample(1, labels=("click", "conversion"), label_delays_ms=[200, 9_000]),
                        20_000),
               sample(2, labels=("click",)),  # no delays (an old producer): time unknown
               _emitted(sample(3, labels=("like",), label_delays_ms=[50]), 7_000)]
    b = _batch(samples)
    assert b.action_rows.tolist() == [1, 1, 3]
    assert b.action_ms.tolist() == [1001 + 200, 1001 + 9_000, 1003 + 50]
    assert b.emit_time_ms.tolist() == [1000, 20_000, 1002, 7_000]


def test_batch_of_negatives_has_no_actions():
    b = _batch([sample(i) for i in range(5)])
    assert len(b.action_rows) == 0 and len(b.action_ms) == 0


def test_traces_rows_hold_action_emit_and_trained_time():
    traces = ActionTraces(capacity=8, clock=FixedClock(50_000))
    traces.observe(_batch([_emitted(sample(1, labels=("click",), label_delays_ms=[300]), 4_000)]))
    rows, actions = traces.take()
    assert rows.tolist() == [[1301, 4000, 50_000]] and actions == 1


def test_traces_keep_at_most_capacity_and_count_every_action():
    traces = ActionTraces(capacity=16, seed=1)
    for k in range(10):
        traces.add(np.arange(100) + 100 * k, np.zeros(100, np.int64), trained_ms=k)
    rows, actions = traces.take()
    assert rows.shape == (16, 3) and actions == 1000
    assert len(set(rows[:, 0].tolist())) == 16  # distinct actions, no slot written twice
    assert traces.take()[0].shape == (0, 3)


def test_traces_sample_the_stream_uniformly():
    # each of 400 actions offered in batches of 40 lands in a 20-slot reservoir with
    # probability 20/400; over 300 rounds, the first and last halves are kept alike
    traces = ActionTraces(capacity=20, seed=7)
    kept = np.zeros(400)
    for _ in range(300):
        for lo in range(0, 400, 40):
            traces.add(np.arange(lo, lo + 40), np.zeros(40, np.int64), trained_ms=0)
        rows, _ = traces.take()
        kept[rows[:, 0]] += 1
    assert kept.sum() == 300 * 20
    per_batch = kept.reshape(10, 40).sum(1) / (300 * 20)  # expected 0.1 each
    assert np.all(np.abs(per_batch - 0.1) < 0.02), per_batch


def test_traces_capacity_zero_is_off_and_capacity_is_bounded():
    off = ActionTraces(capacity=0)
    off.add(np.arange(5), np.arange(5))
    assert off.take()[0].shape == (0, 3)
    with pytest.raises(ValueError, match="capacity"):
        ActionTraces(capacity=5000)
    with pytest.raises(ConfigError, match="trainer.freshness_traces"):
        TrainerConfig(freshness_traces=-1)


def test_trainer_records_traces_when_its_step_is_done():
    trainer = Trainer(small_model(), small_table(), small_trainer())
    trainer.traces = ActionTraces(capacity=64, clock=FixedClock(90_000))
    batch = _batch([sample(i, labels=("click",) if i % 3 == 0 else (),
                           label_delays_ms=[10 * i] if i % 3 == 0 else []) for i in range(30)])
    trainer.train_batch(batch)
    rows, actions = trainer.traces.take()
    assert actions == 10
    assert sorted(rows[:, 0].tolist()) == [1000 + i + 10 * i for i in range(0, 30, 3)]
    assert set(rows[:, 2].tolist()) == {90_000}
