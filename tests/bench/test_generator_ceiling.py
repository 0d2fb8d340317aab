"""bench.generator_ceiling on a tiny generator stream (a few thousand impressions), and its
pieces on hand-made columns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bench.common
import bench.peer_streams
from bench import generator_ceiling as gc

IMPRESSIONS, CUT = 3000, 2000


@pytest.fixture(scope="module")
def tiny_stream(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(bench.peer_streams, "CACHE", tmp_path_factory.mktemp("streams"))
    try:
        yield bench.peer_streams.build("generator", impressions=IMPRESSIONS)
    finally:
        mp.undo()


def columns(user, item, request, y, w_train=None) -> gc.Columns:
    n = len(user)
    return gc.Columns(np.array(user), np.array(item), np.stack([np.array(user) + 10, np.array(item) + 1000], 1),
                      np.zeros((n, 1)), np.array(request), np.array(y, float), np.ones(n),
                      np.ones(n) if w_train is None else np.array(w_train, float), np.full(n, 0.5))


def test_generator_ceiling_redrawn_parameters_reproduce_the_oracle(tiny_stream):
    c = gc.columns(tiny_stream)
    parts = gc.oracle_parts(c, gc.generator_for(IMPRESSIONS), CUT)
    # the first impressions have hardly drifted: base + item_bias + 3 u.v from the redrawn parameters is the oracle
    assert parts["check_max_abs_logit_diff_first_samples"] < 0.05
    assert abs(parts["full_no_drift"]["auc"] - parts["full (oracle)"]["auc"]) < 0.03
    o = c.oracle[CUT:]
    assert parts["full (oracle)"] == gc.summarize(o, c.y[CUT:], c.w_eval[CUT:]) | {
        "logit_std": round(float(gc.logit(o).std()), 3)}


def test_generator_ceiling_training_set_has_each_impression_once_with_its_final_label():
    # r1 emitted as a negative, then its late click; r2's late correction is for another head (weight 0)
    c = columns([0, 1, 0, 1, 2], [0, 1, 0, 1, 2], ["r1", "r2", "r1", "r2", "r3"], [0, 0, 1, 0, 1],
                w_train=[1, 1, 1, 0, 1])
    rows, label = gc.training_set(c, 0, 5)
    assert dict(zip(c.request[rows], label)) == {"r1": 1.0, "r2": 0.0, "r3": 1.0}
    assert list(rows) == [0, 1, 4]
    rows, label = gc.training_set(c, 0, 2)  # the correction after the span is not known yet
    assert list(label) == [0.0, 0.0]


def test_generator_ceiling_learners_find_a_signal_that_is_there():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, users, items = 4000, 40, 30
    u, i = rng.integers(0, users, n), rng.integers(0, items, n)
    uv, iv = rng.normal(0, 1, (users, 2)), rng.normal(0, 1, (items, 2))
    p = 1 / (1 + np.exp(-(2 * (uv[u] * iv[i]).sum(1) - 1)))
    c = columns(u, i, [f"r{k}" for k in range(n)], rng.random(n) < p)
    rows, y = gc.training_set(c, 0, 3000)
    test = np.arange(3000, n)
    lr = gc.OneHotLR(c, rows, 1.0).fit(rows, y, 100).predict(test)
    mf = gc.FactorizationMF(c, rows, 1.0, dim=2).fit(rows, y, 200).predict(test)
    auc = {name: gc.summarize(q, c.y[test], c.w_eval[test])["auc"] for name, q in (("lr", lr), ("mf", mf))}
    truth = gc.summarize(p[test], c.y[test], c.w_eval[test])["auc"]
    assert auc["mf"] > auc["lr"] + 0.05  # the interaction is only learnable by the factorisation
    assert auc["mf"] > truth - 0.05


def test_generator_ceiling_main_writes_its_table(tiny_stream, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gc, "build", lambda name, impressions: tiny_stream)
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    gc.main(["--generator", str(IMPRESSIONS), "--cut", str(CUT), "--max-iter", "50", "--block", "500"])
    r = json.loads((tmp_path / "generator_ceiling.json").read_text())
    assert r["command"].startswith("python -m bench.generator_ceiling --generator 3000")
    assert r["after_cut"] == len(tiny_stream.samples) - CUT
    h = r["history"]
    assert h["impressions"] == len({s.request_id for s in tiny_stream.samples[:CUT]})
    assert h["users_with_at_least_impressions"]["1"] == h["users_seen"]
    assert set(r["learners"]) == {"lr", "mf", "mf_known_items", "mf_known_items_bayes", "mf_known_users"}
    for v in r["learners"].values():
        assert 0 <= v["auc"] <= 1 and v["refit"]["block"] == 500 and v["lam"] in map(float, v["validation"])
    f = r["first_window"]
    assert f["samples"] == len(tiny_stream.samples) and f["oracle"]["ne"] < f["base_rate"]["ne"]
    assert f["bayes_items_best_prior"]["ne"] == min(t["ne"] for t in f["bayes_items_priors_tried"])
    out = capsys.readouterr().out
    assert "oracle part full (oracle)" in out and "bayes_items_best_prior" in out


def test_generator_ceiling_bayes_item_learner_learns_each_item_after_scoring_it():
    rng = np.random.default_rng(1)
    n, rates = 6000, np.array([0.02, 0.1, 0.4])
    item = rng.integers(0, 3, n)
    y = (rng.random(n) < rates[item]).astype(float)
    w = np.ones(n)
    w[5] = 0.0  # a masked sample teaches nothing
    p = gc.bayes_items(item, y, w, mean=-2.0, spread=1.5)
    firsts = [int(np.flatnonzero(item == k)[0]) for k in range(3)]
    assert len({round(p[k], 9) for k in firsts}) == 1  # each item's first sample: the prior alone
    for k in range(3):  # then each item's own rate
        assert abs(p[item == k][-200:].mean() - rates[k]) < 0.3 * rates[k]
    again = gc.bayes_items(item, np.where(np.arange(n) == 5, 1 - y, y), w, mean=-2.0, spread=1.5)
    np.testing.assert_array_equal(np.delete(p, 5), np.delete(again, 5))  # label under weight 0 ignored
    judged = gc.summarize(p, y, w)
    assert judged["ne"] < 0.95 < gc.summarize(np.full(n, y.mean()), y, w)["ne"] + 0.01
