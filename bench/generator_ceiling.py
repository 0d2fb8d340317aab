"""How high can click AUC go on the generator's stream after ``--cut`` samples? A ceiling
for the issue's target ("progressive click AUC within 0.02 of the oracle's after 100k"),
built from the very samples ``bench.trainer_peers`` judges (``bench.peer_streams.build``),
judged by its function (``summarize``) on the samples after the cut, with its weights.

    .venv/bin/python -m bench.generator_ceiling [--generator 150000] [--cut 100000]

Three parts:

- The oracle taken apart. The generator's click logit is
  ``base + 3 * user_vec[u] . item_vec[i] + item_bias[i]``; a ``TrafficGenerator`` built with
  the same config draws the same parameters (``np.random.default_rng(seed)`` in its
  constructor), so each term can be scored alone. ``user_vec`` drifts during the stream:
  the drifted ``3 u . v`` is recovered exactly as logit(oracle) - base - item_bias.
- How much history there is: impressions and clicks per user, per item and per (user, item)
  before the cut, and the share of the samples after it whose user has that much history.
- Learners fitted with hindsight, offline, on every impression before the cut (its final
  label there, each impression once), fitted to convergence, scored on the samples after it:
  ``lr`` logistic regression on one-hot ids of every slot plus the dense values;
  ``mf`` logistic matrix factorisation with the generator's own structure (user and item
  vectors of ``latent_dim`` + item bias + global bias); ``mf_known_items`` the same with
  the TRUE item vectors, item biases and base given, only user vectors learned (a bound on
  any learner that has to learn users from this history); ``mf_known_items_bayes`` the same
  at the true prior, predicting with each user's (Laplace) posterior instead of its mode;
  ``mf_known_users`` the mirror: the TRUE user vectors (as drawn, before drift) given, item
  vectors and biases learned. Each is fitted by full-batch L-BFGS with an L2 penalty
  (``lam / 2 * |theta|^2`` on a summed log loss), ``lam`` picked by AUC on the last 20%
  before the cut when fitted on the first 80%, then refitted on all before the cut.
  A fixed model knows only the samples before the cut, while a progressive learner has
  seen up to 50% more by the end of the stream; so each learner is also scored ``refit``:
  every ``--block`` samples after the cut, refitted on all samples before the block.

And a fourth, for the issue's other target on this stream ("progressive NE below 1 from the
first reported window"): ``first_window``, progressive learners on the first
``trainer_peers.FIRST_WINDOW`` samples (the trainer's first report), judged the same way:
the base-rate learner, the oracle, the TRUE item biases and base given (the user x item
term, unknown, integrated out: ``sigmoid(z / sqrt(1 + pi/8 var))``), and the Bayes-optimal
learner of the one term that a window this short can learn, each item's logit under a
Gaussian prior (exact posterior on a grid, updated after each sample is scored), with the
prior's mean and spread picked in hindsight as the best on the window itself (an optimistic
bound: no learner knows them in advance).

Writes ``bench/results/generator_ceiling.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.common import write_result
from bench.peer_streams import PeerStream, build
from bench.trainer_peers import FIRST_WINDOW, labels_and_weights, run_base_rate, summarize
from traffic.generator import GeneratorConfig, TrafficGenerator
from trainer.config import TrainerConfig

RATE = 200.0  # impressions/s of build("generator"), and its start and seed
START_MS = 1_700_000_000_000
SEED = 7
VALIDATION = 0.2  # share of the samples before the cut that picks the L2 strength
GRIDS = {"lr": (1.0, 3.0, 10.0, 30.0, 100.0), "mf": (0.3, 1.0, 3.0, 10.0, 30.0),
         "mf_known_items": (1.0, 3.0, 8.0, 20.0, 50.0), "mf_known_users": (1.0, 3.0, 8.0, 20.0, 50.0)}
HISTORY = (1, 8, 20, 50, 100)


@dataclass
class Columns:
    """The click head of a stream, one row per sample in emission order."""

    user: np.ndarray  # (N,) 0-based user index
    item: np.ndarray  # (N,) 0-based item index
    ids: np.ndarray  # (N, S) feature id per slot
    dense: np.ndarray  # (N, D)
    request: np.ndarray  # (N,) request id
    y: np.ndarray  # (N,) click label
    w_eval: np.ndarray  # (N,) the benchmark's evaluation weight
    w_train: np.ndarray  # (N,) its training weight (0 on a late correction's other heads)
    oracle: np.ndarray  # (N,) true click probability


def columns(stream: PeerStream) -> Columns:
    y, ev, tr = labels_and_weights(stream, TrainerConfig(device="cpu"))
    s = stream.samples
    return Columns(np.array([x.user_id - 1 for x in s]), np.array([x.item_id - 1 for x in s]),
                   np.array([x.ids for x in s], dtype=np.int64), np.array([x.dense for x in s], dtype=np.float64),
                   np.array([x.request_id for x in s]), y[:, 0].astype(np.float64), ev[:, 0].astype(np.float64),
                   tr[:, 0].astype(np.float64), stream.oracle_probs()[:, 0])


def generator_for(impressions: int) -> TrafficGenerator:
    """The generator ``build("generator", impressions)`` ran, before its first event: the
    parameters as drawn (user vectors before any drift)."""
    return TrafficGenerator(GeneratorConfig(seed=SEED, impressions_per_s=RATE, duration_s=impressions / RATE,
                                            start_ms=START_MS))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


# -- the oracle taken apart ------------------------------------------------------------------
def oracle_parts(c: Columns, gen: TrafficGenerator, cut: int) -> dict:
    """AUC/NE after the cut of each term of the true logit, and how well the redrawn
    parameters reproduce the oracle (``check``: largest |logit difference| on the first
    samples, where the user vectors have not drifted yet)."""
    z = logit(c.oracle)
    bias = gen.logit_base + gen.item_bias[c.item]
    dot0 = 3.0 * np.einsum("nd,nd->n", gen.user_vec[c.user], gen.item_vec[c.item])
    parts = {"item_bias": bias, "user_item": z - bias, "user_item_no_drift": dot0,
             "full_no_drift": bias + dot0, "full (oracle)": z}
    after = slice(cut, None)
    out = {name: summarize(sigmoid(v[after]), c.y[after], c.w_eval[after])
           | {"logit_std": round(float(v[after].std()), 3)} for name, v in parts.items()}
    early = np.array([int(r.rsplit("-", 1)[1]) for r in c.request]) < 100  # hardly drifted yet
    out["check_max_abs_logit_diff_first_samples"] = round(float(np.abs(z - bias - dot0)[early].max()), 6) \
        if early.any() else None
    return out


# -- the first window ----------------------------------------------------------------------
PRIOR_SPREADS = (0.2, 0.35, 0.5, 0.7)  # the Bayes item learner's prior std grid (true item_bias std 0.5)
PRIOR_SHIFTS = (-0.6, -0.3, 0.0, 0.3)  # its prior mean: logit(window's click rate) + shift
LOGIT_GRID = np.linspace(-8.0, 2.0, 201)


def bayes_items(item: np.ndarray, y: np.ndarray, w: np.ndarray, mean: float, spread: float) -> np.ndarray:
    """Progressive predictions of per-item logits under the prior N(mean, spread^2): each
    sample is scored with its item's posterior predictive, then its label (training weight
    ``w``) updates that posterior; exact on ``LOGIT_GRID``."""
    p_grid = sigmoid(LOGIT_GRID)
    log_pos, log_neg = np.log(p_grid), np.log1p(-p_grid)
    prior = -0.5 * ((LOGIT_GRID - mean) / spread) ** 2
    post: dict[int, np.ndarray] = {}
    out = np.zeros(len(y))
    for k in range(len(y)):
        lp = post.get(int(item[k]), prior)
        q = np.exp(lp - lp.max())
        out[k] = float(q @ p_grid / q.sum())
        if w[k] > 0:
            post[int(item[k])] = lp + w[k] * (log_pos if y[k] > 0.5 else log_neg)
    return out


def first_window(c: Columns, gen: TrafficGenerator, n: int = FIRST_WINDOW) -> dict:
    """NE (and AUC, calibration) of the first ``n`` samples for the learners in the docstring."""
    n = min(n, len(c.y))
    y, w, wt, item = c.y[:n], c.w_eval[:n], c.w_train[:n], c.item[:n]
    var = 9.0 / gen.config.latent_dim  # of 3 u.v for u, v ~ N(0, I / d): the term integrated out
    known = sigmoid((gen.logit_base + gen.item_bias[item]) / np.sqrt(1 + np.pi / 8 * var))
    out = {"samples": int(n), "base_rate": summarize(run_base_rate(y[:, None], wt[:, None])[:, 0], y, w),
           "oracle": summarize(c.oracle[:n], y, w), "true_item_bias_given": summarize(known, y, w)}
    center = float(logit(np.array([(y * w).sum() / w.sum()]))[0])
    tried = {(round(center + d, 3), sd): summarize(bayes_items(item, y, wt, center + d, sd), y, w)
             for d in PRIOR_SHIFTS for sd in PRIOR_SPREADS}
    (mean, sd), best = min(tried.items(), key=lambda kv: kv[1]["logloss"])
    out["bayes_items_best_prior"] = best | {"prior_mean": mean, "prior_std": sd}
    out["bayes_items_priors_tried"] = [{"prior_mean": m, "prior_std": s, "ne": r["ne"]} for (m, s), r in tried.items()]
    return out


# -- how much history ------------------------------------------------------------------------
def history(c: Columns, cut: int) -> dict:
    """Impressions and clicks per user / item / (user, item) before the cut, and the weighted
    share of the samples after it whose user (pair) has that much history."""
    first, clicked = training_set(c, 0, cut)
    imp_u = np.bincount(c.user[first], minlength=c.user.max() + 1)
    clk_u = np.bincount(c.user[first], weights=clicked, minlength=c.user.max() + 1)
    imp_i = np.bincount(c.item[first], minlength=c.item.max() + 1)
    clk_i = np.bincount(c.item[first], weights=clicked, minlength=c.item.max() + 1)
    pair = c.user.astype(np.int64) * (c.item.max() + 1) + c.item
    pairs, pair_n = np.unique(pair[first], return_counts=True)
    after = np.arange(cut, len(c.y))
    w = c.w_eval[after] / c.w_eval[after].sum()
    seen = imp_u > 0

    def q(v: np.ndarray) -> dict:
        return {f"p{p}": float(np.percentile(v, p)) for p in (10, 50, 90, 99)} | {"max": float(v.max()),
                                                                                    "mean": round(float(v.mean()), 2)}

    return {
        "impressions": len(first), "users_seen": int(seen.sum()), "items_seen": int((imp_i > 0).sum()),
        "impressions_per_user": q(imp_u[seen]), "clicks_per_user": q(clk_u[seen]),
        "impressions_per_item": q(imp_i[imp_i > 0]), "clicks_per_item": q(clk_i[imp_i > 0]),
        "users_with_at_least_impressions": {k: int((imp_u >= k).sum()) for k in HISTORY},
        "users_with_at_least_clicks": {k: int((clk_u >= k).sum()) for k in HISTORY},
        "after_cut_share_whose_user_had_impressions": {k: round(float(w[imp_u[c.user[after]] >= k].sum()), 4)
                                                       for k in HISTORY},
        "after_cut_share_whose_user_had_clicks": {k: round(float(w[clk_u[c.user[after]] >= k].sum()), 4)
                                                  for k in HISTORY},
        "user_item_pairs": len(pairs), "user_item_pairs_seen_twice_or_more": int((pair_n >= 2).sum()),
        "after_cut_share_whose_user_item_pair_was_seen": round(float(w[np.isin(pair[after], pairs)].sum()), 4),
    }


def training_set(c: Columns, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Each impression in [lo, hi) once: the row of its first sample and its final click
    label there (a late correction in the span turns an emitted negative positive)."""
    _, idx, inv = np.unique(c.request[lo:hi], return_index=True, return_inverse=True)
    label = np.zeros(len(idx))
    np.maximum.at(label, inv, c.y[lo:hi] * (c.w_train[lo:hi] > 0))
    return idx + lo, label


# -- learners --------------------------------------------------------------------------------
class Learner:
    """A logistic model fitted by full-batch L-BFGS on ``sum log loss + lam / 2 * |theta|^2``."""

    def __init__(self, c: Columns, rows: np.ndarray, lam: float):
        self.c, self.lam = c, lam
        self.params: dict[str, torch.Tensor] = {}

    def logit(self, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def penalized(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def fit(self, rows: np.ndarray, y: np.ndarray, max_iter: int) -> Learner:
        target = torch.as_tensor(y, dtype=torch.float64)
        opt = torch.optim.LBFGS(list(self.params.values()), lr=1.0, max_iter=max_iter, history_size=20,
                                tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.logit(rows), target, reduction="sum")
            loss = (loss + self.lam / 2 * sum((p * p).sum() for p in self.penalized())) / len(rows)
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def predict(self, rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self.logit(rows)).numpy()


class OneHotLR(Learner):
    """Global bias + a weight per (slot, id) seen in training + a weight per standardized
    dense value; ids not seen in training weigh 0."""

    def __init__(self, c: Columns, rows: np.ndarray, lam: float):
        super().__init__(c, rows, lam)
        self.vocab = np.unique(c.ids[rows])
        self.mean, self.std = c.dense[rows].mean(0), c.dense[rows].std(0) + 1e-9
        self._encoded: tuple | None = None
        self.params = {"w": torch.zeros(len(self.vocab) + 1, dtype=torch.float64, requires_grad=True),
                       "a": torch.zeros(c.dense.shape[1], dtype=torch.float64, requires_grad=True),
                       "b": torch.zeros(1, dtype=torch.float64, requires_grad=True)}

    def penalized(self) -> list[torch.Tensor]:
        return [self.params["w"], self.params["a"]]

    def logit(self, rows: np.ndarray) -> torch.Tensor:
        if self._encoded is None or self._encoded[0] is not rows:  # L-BFGS asks for the same rows each step
            ids = self.c.ids[rows]
            at = np.minimum(np.searchsorted(self.vocab, ids), len(self.vocab) - 1)
            idx = torch.as_tensor(np.where(self.vocab[at] == ids, at, len(self.vocab)))  # (B, S); unseen -> last
            x = torch.as_tensor((self.c.dense[rows] - self.mean) / self.std)  # (B, D)
            self._encoded = (rows, idx, x)
        _, idx, x = self._encoded
        p = self.params
        return p["b"] + p["w"][idx].sum(1) + x @ p["a"]


class FactorizationMF(Learner):
    """``b + item_bias[i] + U[u] . V[i]`` with ``dim``-wide U, V (the generator's structure)."""

    def __init__(self, c: Columns, rows: np.ndarray, lam: float, dim: int = 8, seed: int = 0):
        super().__init__(c, rows, lam)
        g = torch.Generator().manual_seed(seed)
        users, items = int(c.user.max()) + 1, int(c.item.max()) + 1
        self.params = {"U": (0.1 * torch.randn(users, dim, generator=g, dtype=torch.float64)).requires_grad_(),
                       "V": (0.1 * torch.randn(items, dim, generator=g, dtype=torch.float64)).requires_grad_(),
                       "ib": torch.zeros(items, dtype=torch.float64, requires_grad=True),
                       "b": torch.zeros(1, dtype=torch.float64, requires_grad=True)}

    def penalized(self) -> list[torch.Tensor]:
        return [self.params["U"], self.params["V"], self.params["ib"]]

    def logit(self, rows: np.ndarray) -> torch.Tensor:
        u, i, p = torch.as_tensor(self.c.user[rows]), torch.as_tensor(self.c.item[rows]), self.params
        return p["b"] + p["ib"][i] + (p["U"][u] * p["V"][i]).sum(1)  # (B,)


class KnownItemsMF(Learner):
    """``base + item_bias[i] + 3 * U[u] . item_vec[i]`` with the generator's TRUE item
    parameters and base; only the user vectors are learned (their true prior is
    N(0, 1 / latent_dim), i.e. ``lam = latent_dim``)."""

    def __init__(self, c: Columns, rows: np.ndarray, lam: float, gen: TrafficGenerator | None = None):
        super().__init__(c, rows, lam)
        assert gen is not None
        self.fixed = torch.as_tensor(gen.logit_base + gen.item_bias)  # (I,)
        self.item_vec = torch.as_tensor(3.0 * gen.item_vec)  # (I, D)
        self.params = {"U": torch.zeros(int(c.user.max()) + 1, gen.item_vec.shape[1], dtype=torch.float64,
                                        requires_grad=True)}

    def logit(self, rows: np.ndarray) -> torch.Tensor:
        u, i = torch.as_tensor(self.c.user[rows]), torch.as_tensor(self.c.item[rows])
        return self.fixed[i] + (self.params["U"][u] * self.item_vec[i]).sum(1)


class KnownItemsBayes(KnownItemsMF):
    """``KnownItemsMF`` at the true prior, predicting with each user's posterior rather than
    its mode: Laplace approximation (per user, precision ``lam I + sum p (1 - p) x x^T``
    over its impressions, ``x = 3 item_vec[i]``) and the probit approximation of the
    predictive mean, ``sigmoid(mu / sqrt(1 + pi s^2 / 8))``. Given the true item parameters
    and prior, this is close to the best any predictor can do from the same labels (bar the
    drift, which it ignores)."""

    def fit(self, rows: np.ndarray, y: np.ndarray, max_iter: int) -> KnownItemsBayes:
        super().fit(rows, y, max_iter)
        with torch.no_grad():
            p = torch.sigmoid(self.logit(rows)).numpy()
        x = self.item_vec.numpy()[self.c.item[rows]]  # (B, D)
        prec = np.broadcast_to(self.lam * np.eye(x.shape[1]), (len(self.params["U"]), x.shape[1], x.shape[1])).copy()
        np.add.at(prec, self.c.user[rows], (p * (1 - p))[:, None, None] * x[:, :, None] * x[:, None, :])
        self.cov = np.linalg.inv(prec)  # (U, D, D)
        return self

    def predict(self, rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            mu = self.logit(rows).numpy()
        x = self.item_vec.numpy()[self.c.item[rows]]  # (B, D)
        var = np.einsum("bd,bde,be->b", x, self.cov[self.c.user[rows]], x)
        return sigmoid(mu / np.sqrt(1 + np.pi * var / 8))


class KnownUsersMF(Learner):
    """``b + item_bias[i] + 3 * user_vec0[u] . V[i]`` with the generator's TRUE user vectors
    as drawn (before their drift); item vectors, item biases and the bias are learned (the
    item vectors' true prior is N(0, 1 / latent_dim))."""

    def __init__(self, c: Columns, rows: np.ndarray, lam: float, gen: TrafficGenerator | None = None):
        super().__init__(c, rows, lam)
        assert gen is not None
        self.user_vec = torch.as_tensor(3.0 * gen.user_vec)  # (U, D), not yet drifted
        self.params = {"V": torch.zeros(gen.item_vec.shape, dtype=torch.float64, requires_grad=True),
                       "ib": torch.zeros(len(gen.item_bias), dtype=torch.float64, requires_grad=True),
                       "b": torch.zeros(1, dtype=torch.float64, requires_grad=True)}

    def penalized(self) -> list[torch.Tensor]:
        return [self.params["V"], self.params["ib"]]

    def logit(self, rows: np.ndarray) -> torch.Tensor:
        u, i, p = torch.as_tensor(self.c.user[rows]), torch.as_tensor(self.c.item[rows]), self.params
        return p["b"] + p["ib"][i] + (self.user_vec[u] * p["V"][i]).sum(1)


def tuned(kind: type[Learner], c: Columns, cut: int, grid: tuple[float, ...], max_iter: int, block: int,
          **kw) -> dict:
    """Pick ``lam`` by AUC on [0.8 cut, cut) when fitted on [0, 0.8 cut); refit on [0, cut);
    score the samples after the cut; with ``block``, also ``refitted``."""
    split = int(cut * (1 - VALIDATION))
    rows, y = training_set(c, 0, split)
    val = np.arange(split, cut)
    search = {}
    for lam in grid:
        m = kind(c, rows, lam, **kw).fit(rows, y, max_iter)
        search[lam] = summarize(m.predict(val), c.y[val], c.w_eval[val])
    best = max(grid, key=lambda lam: (search[lam]["auc"] or 0.0, -search[lam]["logloss"]))
    t0 = time.perf_counter()
    rows, y = training_set(c, 0, cut)
    model = kind(c, rows, best, **kw).fit(rows, y, max_iter)
    after = np.arange(cut, len(c.y))
    out = summarize(model.predict(after), c.y[after], c.w_eval[after])
    fit_s = round(time.perf_counter() - t0, 1)
    return out | {"lam": best, "fit_s": fit_s,
                  "refit": refitted(kind, c, cut, best, max_iter, block, **kw) if block else None,
                  "validation": {str(k): {"auc": v["auc"], "ne": v["ne"]} for k, v in search.items()}}


def refitted(kind: type[Learner], c: Columns, cut: int, lam: float, max_iter: int, block: int, **kw) -> dict:
    """The samples after the cut scored ``block`` at a time, each block by a model fitted on
    every sample before it: what a progressive learner could know by then (the fixed model
    above knows only the first ``cut``)."""
    p = np.zeros(len(c.y) - cut)
    for at in range(cut, len(c.y), block):
        rows, y = training_set(c, 0, at)
        span = np.arange(at, min(at + block, len(c.y)))
        p[at - cut: at - cut + len(span)] = kind(c, rows, lam, **kw).fit(rows, y, max_iter).predict(span)
    return summarize(p, c.y[cut:], c.w_eval[cut:]) | {"block": block}


def measure(stream: PeerStream, impressions: int, cut: int, max_iter: int = 300, block: int = 5000,
            grids: dict[str, tuple[float, ...]] = GRIDS) -> dict:
    c = columns(stream)
    if not 0 < cut < len(c.y):
        raise ValueError(f"--cut={cut} must lie inside the stream's {len(c.y)} samples")
    gen = generator_for(impressions)
    out = {"samples": len(c.y), "cut": cut, "after_cut": len(c.y) - cut,
           "oracle_parts": oracle_parts(c, gen, cut), "history": history(c, cut),
           "first_window": first_window(c, gen), "learners": {}}
    for name, kind, kw in (("lr", OneHotLR, {}), ("mf", FactorizationMF, {"dim": gen.config.latent_dim}),
                           ("mf_known_items", KnownItemsMF, {"gen": gen}),
                           ("mf_known_items_bayes", KnownItemsBayes, {"gen": gen}),
                           ("mf_known_users", KnownUsersMF, {"gen": gen})):
        grid = grids.get(name, (float(gen.config.latent_dim),))  # bayes: the true prior
        out["learners"][name] = tuned(kind, c, cut, grid, max_iter, block, **kw)
        print(f"  {name}: {out['learners'][name]['auc']}", flush=True)
    return out


def report(r: dict) -> None:
    f = r["first_window"]
    print(f"click head, the first {f['samples']:,} samples (the trainer's first report), progressive:")
    for name in ("base_rate", "oracle", "true_item_bias_given", "bayes_items_best_prior"):
        v = f[name]
        print(f"  {name:24s} AUC {v['auc']:.4f}  NE {v['ne']:.4f}  calibration {v['calibration']:.3f}"
              + (f"  (prior N({v['prior_mean']}, {v['prior_std']}^2))" if "prior_std" in v else ""))
    o = r["oracle_parts"]
    print(f"click head, {r['after_cut']:,} samples after the first {r['cut']:,} (of {r['samples']:,})")
    print(f"{'':28s} {'AUC':>6s} {'NE':>7s} {'logit std':>9s}")
    for name, v in o.items():
        if isinstance(v, dict):
            print(f"oracle part {name:16s} {v['auc']:6.4f} {v['ne']:7.4f} {v['logit_std']:9.3f}")
    for name, v in r["learners"].items():
        ref = v["refit"]
        print(f"hindsight {name:18s} {v['auc']:6.4f} {v['ne']:7.4f}   lam={v['lam']}  ({v['fit_s']} s)"
              + (f"   refit every {ref['block']}: AUC {ref['auc']:.4f} NE {ref['ne']:.4f}" if ref else ""))
    h = r["history"]
    print(f"before the cut: {h['users_seen']} users, impressions/user {h['impressions_per_user']}, "
          f"clicks/user {h['clicks_per_user']}")
    print(f"users with >= k impressions {h['users_with_at_least_impressions']}, "
          f">= k clicks {h['users_with_at_least_clicks']}")
    print(f"share after the cut whose user had >= k impressions {h['after_cut_share_whose_user_had_impressions']}, "
          f">= k clicks {h['after_cut_share_whose_user_had_clicks']}")
    print(f"(user, item) pairs {h['user_item_pairs']}, seen twice+ {h['user_item_pairs_seen_twice_or_more']}, "
          f"share after the cut on a seen pair {h['after_cut_share_whose_user_item_pair_was_seen']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", type=int, default=150_000, help="generator impressions")
    p.add_argument("--cut", type=int, default=100_000, help="fit on the samples before, score those after")
    p.add_argument("--max-iter", type=int, default=300, help="L-BFGS iterations per fit")
    p.add_argument("--block", type=int, default=5000, help="refit every this many samples after the cut (0: no)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    r = measure(build("generator", impressions=args.generator), args.generator, args.cut, args.max_iter, args.block)
    report(r)
    r = {"command": "python -m bench.generator_ceiling " + " ".join(argv or []), "torch_threads": 1,
         "wall_s": round(time.perf_counter() - t0, 1), **r}
    print(f"wrote {write_result('generator_ceiling', r)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
