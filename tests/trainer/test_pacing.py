"""Negative pacing (trainer/pacing.py): a label-sorted stream trains in its own proportion,
positives are never held, and a checkpoint with negatives held restarts without training
any sample twice or losing one (a fake source, then the real broker)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamtrain.cli import train as train_cli
from tests.helpers.trainer_models import produce_samples, sample, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder, concat, take
from trainer.pacing import NegativePacer
from trainer.source import ListSource
from trainer.stream import KafkaSampleSource
from trainer.trainer import Trainer


def label_sorted(n_bursts: int, negatives: int = 90, positives: int = 10) -> list:
    """What an early-emit joiner gives: the positives of a stretch one by one, then its
    negatives in one burst when the watermark closes their windows."""
    out, i = [], 0
    for _ in range(n_bursts):
        for _ in range(positives):
            out.append(sample(i, ids=(i % 7 + 1, 100 + i % 5), labels=("click",)))
            i += 1
        for _ in range(negatives):
            out.append(sample(i, ids=(i % 7 + 1, 100 + i % 5)))
            i += 1
    return out


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def pace(samples, batch_size, cfg, clock, held=None, start=0):
    src = NegativePacer(ListSource(samples, small_model(), batch_size, start=start), cfg, held=held, clock=clock)
    return src


def test_pacer_mixes_a_label_sorted_stream_and_never_holds_a_positive():
    samples = label_sorted(40)
    cfg = small_trainer(pacing=True, pacing_max_hold_ms=60_000)
    clock = Clock()
    src = pace(samples, 10, cfg, clock)
    seen, fractions, seen_inputs = [], [], []
    while (b := src.next_batch()) is not None:
        clock.t += 0.1
        labels = b.labels[:, 0]
        seen += b.request_ids
        if len(b) and src.labelled_seen > 150:  # pacing (after PACE_AFTER_LABELLED labelled samples)
            fractions.append(labels.mean())
        # every positive of the input batch (10 samples in order) comes out in the same call
        consumed = samples[len(seen_inputs) * 10:(len(seen_inputs) + 1) * 10]
        seen_inputs.append(1)
        assert sorted(r for r, y in zip(b.request_ids, labels) if y) == \
            sorted(s.request_id for s in consumed if s.label_types)
    assert sorted(seen, key=lambda r: int(r[1:])) == [s.request_id for s in samples]  # once each
    # without pacing, batches of 10 are all positive or all negative; paced, ~1 in 10 positive
    mixed = [f for f in fractions if 0 < f < 1]
    assert len(mixed) >= 0.8 * len(fractions)
    assert 0.05 < float(np.mean(fractions)) < 0.2


def test_pacer_releases_negatives_after_the_hold_limit_and_at_the_end():
    cfg = small_trainer(pacing=True, pacing_max_hold_ms=1000)
    clock = Clock()
    samples = label_sorted(3, negatives=50, positives=50) + [sample(1000 + i, ids=(1, 2)) for i in range(40)]
    src = pace(samples, 50, cfg, clock)
    out = [src.next_batch() for _ in range(6)]  # 3 x (50 positives, 50 negatives)
    assert all(b is not None for b in out) and src.n_held > 0
    clock.t += 2.0  # every held negative overdue
    held_before = src.n_held
    b = src.next_batch()  # the last 40 negatives come in (held); all the overdue ones go out
    assert b is not None and len(b) == held_before and src.n_held == 40
    b = src.next_batch()  # the input's end: nothing is held back any more
    assert b is not None and len(b) == 40 and src.n_held == 0
    assert src.next_batch() is None and src.exhausted


def test_pacer_with_pacing_off_releases_a_checkpoints_held_negatives_at_once():
    held = [BatchBuilder(small_model()).build([sample(i) for i in range(5)])]
    src = NegativePacer(ListSource([sample(10, labels=("click",))], small_model(), 10), small_trainer(pacing=False),
                        held=held)
    b = src.next_batch()
    assert b is not None and sorted(b.request_ids) == ["r0", "r1", "r10", "r2", "r3", "r4"]


def test_take_and_concat_keep_ids_labels_and_action_traces():
    builder = BatchBuilder(small_model())
    samples = [sample(i, ids=tuple(range(1, i % 3 + 2)), slots=tuple(range(i % 3 + 1)),
                      labels=("click",) if i % 2 else (),
                      label_delays_ms=[100 * i] if i % 2 else []) for i in range(6)]
    full = builder.build(samples)
    odd, even = take(full, np.array([1, 3, 5])), take(full, np.array([0, 2, 4]))
    assert odd.request_ids == ["r1", "r3", "r5"] and odd.labels[:, 0].tolist() == [1, 1, 1]
    back = concat([even, odd])
    direct = builder.build([samples[i] for i in (0, 2, 4, 1, 3, 5)])
    for name in ("ids", "fields", "offsets", "dense", "labels", "flags", "event_time_ms"):
        assert np.array_equal(getattr(back, name), getattr(direct, name)), name
    if direct.action_rows is not None:
        assert back.action_rows is not None and back.action_ms is not None
        assert sorted(zip(back.action_rows.tolist(), back.action_ms.tolist())) == \
            sorted(zip(direct.action_rows.tolist(), direct.action_ms.tolist()))


class Crash(Exception):
    pass


def crash_at(step: int, log: list):
    def on_batch(batch, trainer):
        log.append((trainer.step, batch.request_ids))
        if trainer.step == step:
            raise Crash  # the steps after the last checkpoint were trained, not checkpointed
    return on_batch


def test_checkpoint_with_negatives_held_restarts_training_every_sample_once(tmp_path):
    samples = label_sorted(30, negatives=20, positives=10)
    cfg = small_trainer(pacing=True, checkpoint_dir=str(tmp_path), checkpoint_every_batches=4,
                        pacing_max_hold_ms=60_000)
    steps: list[tuple[int, list[str]]] = []
    first = Trainer(small_model(), small_table(), cfg)
    with pytest.raises(Crash):
        first.run(pace(samples, 25, cfg, Clock()), on_batch=crash_at(22, steps))
    kept = [rid for step, ids in steps if step <= 20 for rid in ids]
    second = Trainer(small_model(), small_table(), cfg)
    assert second.restore_latest() and second.step == 20 and second.samples == len(kept)
    held = [r for b in second.held_input or [] for r in b.request_ids]
    assert held, "the checkpoint was taken with negatives held"
    assert second.positions[0] == len(kept) + len(held)  # consumed = trained + held
    after: list[str] = []
    second.run(pace(samples, 25, cfg, Clock(), held=second.held_input, start=second.positions[0]),
               on_batch=lambda b, t: after.extend(b.request_ids))
    everything = kept + after
    assert len(everything) == len(set(everything)) == len(samples)  # none twice, none skipped


@pytest.mark.integration
def test_trainer_with_pacing_restarts_from_kafka_training_every_sample_once(kafka_broker, topics, tmp_path):
    samples = label_sorted(40, negatives=20, positives=10)
    produce_samples(kafka_broker, topics.samples, samples)
    m = small_model()
    cfg = small_trainer(pacing=True, batch_size=20, max_wait_ms=50, checkpoint_dir=str(tmp_path),
                        checkpoint_every_batches=10,
                        max_samples=len(samples), pacing_max_hold_ms=60_000)
    steps: list[tuple[int, list[str]]] = []
    first = Trainer(m, small_table(), cfg)
    with pytest.raises(Crash):
        first.run(NegativePacer(KafkaSampleSource(kafka_broker, topics, m, cfg), cfg), on_batch=crash_at(32, steps))
    kept = [rid for step, ids in steps if step <= 30 for rid in ids]
    second = Trainer(m, small_table(), cfg)
    assert second.restore_latest() and second.step == 30 and second.samples == len(kept)
    held = [r for b in second.held_input or [] for r in b.request_ids]
    assert held, "the checkpoint was taken with negatives held"
    # consumed = trained + held, and the positions say exactly that much was consumed
    assert sum(second.positions.values()) == len(kept) + len(held)
    after: list[str] = []
    second.run(NegativePacer(KafkaSampleSource(kafka_broker, topics, m, cfg, start=second.positions), cfg,
                             held=second.held_input),
               on_batch=lambda b, t: after.extend(b.request_ids))
    everything = kept + after
    assert len(everything) == len(set(everything)) == len(samples)  # none twice, none skipped


@pytest.mark.integration
def test_train_command_with_pacing_turned_off_still_trains_a_checkpoints_held_negatives(kafka_broker, topics,
                                                                                         tmp_path):
    """A checkpoint taken with negatives held, resumed by ``streamtrain train`` with
    ``trainer.pacing=false``: the held ones are trained, not dropped with the pacer."""
    samples = label_sorted(40, negatives=20, positives=10)
    produce_samples(kafka_broker, topics.samples, samples)
    m = small_model()
    cfg = small_trainer(pacing=True, batch_size=20, max_wait_ms=50, checkpoint_dir=str(tmp_path),
                        checkpoint_every_batches=10,
                        max_samples=len(samples), pacing_max_hold_ms=60_000, idle_timeout_s=5)
    first = Trainer(m, small_table(), cfg)
    with pytest.raises(Crash):
        first.run(NegativePacer(KafkaSampleSource(kafka_broker, topics, m, cfg), cfg), on_batch=crash_at(32, []))
    probe = Trainer(m, small_table(), cfg)
    assert probe.restore_latest() and probe.held_input, "the checkpoint was taken with negatives held"
    final = train_cli.run(kafka_broker, topics, m, small_table(), dataclasses.replace(cfg, pacing=False))
    assert final["samples"] == len(samples)  # every sample trained: none held back, none twice (max_samples)
    last = Trainer(m, small_table(), cfg)
    assert last.restore_latest() and not last.held_input
    assert sum(last.positions.values()) == len(samples)
