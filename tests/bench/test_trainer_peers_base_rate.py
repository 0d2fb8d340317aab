"""bench.trainer_peers' base-rate peer on hand-made label sequences: each sample gets the
Krichevsky-Trofimov estimate of the samples before it, weighted as the peers learn."""

from __future__ import annotations

import numpy as np
import pytest

from bench.trainer_peers import FIRST_WINDOW, judge, run_base_rate


def test_kt_estimate_of_the_samples_before_each_one():
    y = np.array([[1], [0], [0], [1], [0]], np.float32)
    p = run_base_rate(y, np.ones_like(y))
    # (positives + 1/2) / (samples + 1) over the samples before: 0/0, 1/1, 1/2, 1/3, 2/4
    assert p[:, 0] == pytest.approx([0.5, 0.75, 0.5, 0.375, 0.5])


def test_per_head_and_weighted():
    y = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    w = np.array([[2, 1], [1, 0], [1, 1]], np.float32)  # a weight of 0 (a masked head) is not learnt
    p = run_base_rate(y, w)
    assert p[:, 0] == pytest.approx([0.5, 2.5 / 3, 2.5 / 4])
    assert p[:, 1] == pytest.approx([0.5, 0.5 / 2, 0.5 / 2])


def test_ne_above_one_by_the_cost_of_learning_the_rate():
    rng = np.random.default_rng(0)
    rate, n = 0.05, FIRST_WINDOW
    y = (rng.random((n, 1)) < rate).astype(np.float32)
    w = np.ones_like(y)
    r = judge(run_base_rate(y, w)[:, 0], y[:, 0], w[:, 0])
    h = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    mdl = 0.5 * np.log(n) / (n * h)  # ~1.3e-3 here
    assert 1.0 < r["ne_first_window"] < 1.0 + 3 * mdl
    assert r["auc"] is not None and r["calibration"] == pytest.approx(1.0, abs=0.05)
