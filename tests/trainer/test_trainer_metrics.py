import itertools
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.metrics import MetricsWriter, ProgressiveValidator, auc


def brute_auc(p, y, w):
    num = den = 0.0
    for i, j in itertools.product(range(len(p)), repeat=2):
        if y[i] == 1 and y[j] == 0:
            pair = w[i] * w[j]
            den += pair
            num += pair * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    return num / den if den else float("nan")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9]), st.booleans(),
                          st.sampled_from([0.5, 1.0, 3.0])), min_size=2, max_size=25))
def test_metrics_auc_matches_pair_counting(rows):
    p, y, w = (np.array(c, dtype=float) for c in zip(*rows))
    expected, got = brute_auc(p, y, w), auc(p, y, w)
    assert (np.isnan(expected) and np.isnan(got)) or abs(expected - got) < 1e-12


def test_metrics_base_rate_prediction_has_ne_one_and_calibration_one():
    rng = np.random.default_rng(0)
    y = (rng.random((5000, 1)) < 0.2).astype(float)
    pv = ProgressiveValidator(("click",), window=1000)
    pv.update(np.full_like(y, y.mean()), y, np.ones_like(y))
    cum = pv.report()["click"]["cumulative"]
    assert abs(cum["ne"] - 1.0) < 1e-6 and abs(cum["calibration"] - 1.0) < 1e-6
    assert abs(cum["auc"] - 0.5) < 1e-9


def test_metrics_window_forgets_old_samples_cumulative_does_not():
    pv = ProgressiveValidator(("click",), window=100)
    y = np.array([[1.0], [0.0]] * 100)
    pv.update(np.where(y > 0, 0.2, 0.8), y, np.ones_like(y))  # perfectly wrong
    pv.update(np.where(y > 0, 0.8, 0.2), y, np.ones_like(y))  # perfectly right
    rep = pv.report(step=2)
    assert rep["click"]["window"]["auc"] == 1.0 and rep["click"]["window"]["n"] == 100
    assert abs(rep["click"]["cumulative"]["auc"] - 0.5) < 1e-9
    assert rep["step"] == 2


def test_metrics_zero_weight_samples_are_not_evaluated():
    pv = ProgressiveValidator(("a",), window=100)
    pv.update(np.array([[0.9], [0.1], [0.99]]), np.array([[1.0], [0.0], [0.0]]), np.array([[1.0], [1.0], [0.0]]))
    assert pv.report()["a"]["window"]["auc"] == 1.0


def test_metrics_writer_appends_json_lines_and_draws_png(tmp_path):
    pv = ProgressiveValidator(("click", "like"), window=100)
    writer = MetricsWriter(str(tmp_path / "m.jsonl"), str(tmp_path / "auc.png"))
    rng = np.random.default_rng(1)
    for step in range(3):
        y = (rng.random((50, 2)) < 0.3).astype(float)
        pv.update(rng.random((50, 2)), y, np.ones_like(y))
        writer.write(pv.report(step=step, samples=50 * (step + 1)))
    writer.plot(pv.history, pv.heads)
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2] and "like" in lines[0]
    assert (tmp_path / "auc.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_history_is_bounded_and_reports_are_unchanged():
    rng = np.random.default_rng(2)
    bounded = ProgressiveValidator(("click", "like"), window=200, history_points=20)
    full = ProgressiveValidator(("click", "like"), window=200, history_points=10**6)
    for step in range(1000):
        p, y = rng.random((30, 2)), (rng.random((30, 2)) < 0.3).astype(float)
        for pv in (bounded, full):
            pv.update(p, y, np.ones_like(y))
        assert bounded.report(step=step, samples=30 * (step + 1)) == full.report(step=step, samples=30 * (step + 1))
        assert len(bounded.history) <= 20
    kept, everything = bounded.history.indices(), list(full.history)
    assert len(everything) == bounded.history.total == 1000
    assert kept[0] == 0 and kept[-10:] == list(range(990, 1000))  # the first and the newest half
    old = np.diff(kept[:-10])
    assert len(set(old.tolist())) == 1  # older reports evenly thinned
    assert list(bounded.history) == [everything[i] for i in kept]
    assert bounded.history[0] == everything[0] and bounded.history[-1] == everything[-1]


def test_trainer_history_stays_bounded_over_many_reports_and_plots_from_it(tmp_path):
    from tests.helpers.trainer_models import SLOTS, small_model, small_table, small_trainer
    from trainer.source import ListSource
    from trainer.synthetic import SyntheticStream
    from trainer.trainer import Trainer

    m = small_model()
    cfg = small_trainer(batch_size=10, report_every_batches=1, history_points=16,
                        metrics_path=str(tmp_path / "m.jsonl"))
    trainer = Trainer(m, small_table(), cfg)
    trainer.run(ListSource(SyntheticStream(num_slots=SLOTS).take(1000), m, 10))
    assert trainer.validator.history.total == 101 and len(trainer.validator.history) <= 16
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 101  # every report, in full
    writer = MetricsWriter("", str(tmp_path / "auc.png"))
    writer.plot(trainer.validator.history, m.heads)
    assert (tmp_path / "auc.png").read_bytes()[:4] == b"\x89PNG"
