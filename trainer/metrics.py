"""Progressive validation: each batch is scored before it is trained on, so every sample is
a test sample for the model that had not yet seen it (McMahan et al., KDD 2013).

Per head (action type), over a sliding window of the last ``window`` samples (exact) and
cumulatively since the start (AUC from 2^14 probability bins; the rest exact):

    auc          P(score of a positive > score of a negative), ties count half, weighted
    logloss      weighted mean binary cross-entropy
    ne           normalized entropy = logloss / entropy of the (weighted) base rate
    calibration  sum(w * p) / sum(w * y)   (1.0 = calibrated)

A trainer given an oracle (true probabilities, e.g. from the traffic generator) runs a second
validator on them and adds ``report[head]["oracle"]`` (same layout); the plot draws it dotted.

    pv = ProgressiveValidator(("click",), window=20000)
    pv.update(probs, labels, weights)         # (B, H) each; weight 0 = not evaluated
    line = pv.report(step=10, samples=5120)   # dict, JSON-serialisable

Memory is bounded however long it runs: the window is a fixed ring of ``window`` samples,
the cumulative AUC a fixed histogram, and the reports kept for the plot (``history``) at
most ``history_points`` per validator (one per trainer process; a report holds every head):
the newest ``history_points // 2`` in full, older ones thinned to every ``stride``-th report
(the stride doubles whenever they fill their half; the first report is always kept). Every
report still goes to the JSON lines file in full; only the plot sees the thinned history.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
BINS = 1 << 14
EPS = 1e-7


def auc(preds: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Exact weighted ROC AUC with ties counted half; NaN without both classes."""
    w = np.ones_like(preds, dtype=np.float64) if weights is None else weights.astype(np.float64)
    pos_w, neg_w = w * (labels > 0.5), w * (labels <= 0.5)
    if pos_w.sum() <= 0 or neg_w.sum() <= 0:
        return float("nan")
    uniq, inv = np.unique(preds, return_inverse=True)
    pos = np.bincount(inv, pos_w, len(uniq))
    neg = np.bincount(inv, neg_w, len(uniq))
    return _auc_from_hist(pos, neg)


def _auc_from_hist(pos: np.ndarray, neg: np.ndarray) -> float:
    tp, tn = pos.sum(), neg.sum()
    if tp <= 0 or tn <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (tp * tn))


def _summary(sw: float, swy: float, swp: float, sll: float) -> dict:
    if sw <= 0:
        return {"logloss": None, "ne": None, "calibration": None, "pos_rate": None}
    rate = swy / sw
    ll = sll / sw
    base = -(rate * np.log(max(rate, EPS)) + (1 - rate) * np.log(max(1 - rate, EPS)))
    return {"logloss": float(ll), "ne": float(ll / base) if base > 0 else None,
            "calibration": float(swp / swy) if swy > 0 else None, "pos_rate": float(rate)}


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


class ReportHistory:
    """At most ``points`` reports: the newest ``points - points // 2`` in full and older ones
    thinned to every ``stride``-th (report index counted from 0, so the first stays); the
    stride doubles whenever the thinned half would exceed ``points // 2``."""

    def __init__(self, points: int = 1000):
        if points < 2:
            raise ValueError(f"history points={points} must be >= 2")
        self.points = points
        self.total = 0  # reports ever added
        self.stride = 1
        self._old: list[tuple[int, dict]] = []
        self._recent: deque[tuple[int, dict]] = deque(maxlen=points - points // 2)

    def append(self, report: dict) -> None:
        if len(self._recent) == self._recent.maxlen:
            i, old = self._recent[0]
            if i % self.stride == 0:
                self._old.append((i, old))
                if len(self._old) > self.points // 2:
                    self.stride *= 2
                    self._old = [(j, r) for j, r in self._old if j % self.stride == 0]
        self._recent.append((self.total, report))
        self.total += 1

    def __len__(self) -> int:
        return len(self._old) + len(self._recent)

    def __iter__(self) -> Iterator[dict]:
        return (r for _, r in (*self._old, *self._recent))

    def __getitem__(self, i: int) -> dict:
        return list(self)[i]

    def __bool__(self) -> bool:
        return self.total > 0

    def indices(self) -> list[int]:
        """The report numbers (0 = first report) of the kept reports, in order."""
        return [i for i, _ in (*self._old, *self._recent)]


class ProgressiveValidator:
    def __init__(self, heads: tuple[str, ...], window: int = 20000, history_points: int = 1000):
        self.heads = tuple(heads)
        h = len(self.heads)
        self.window = window
        self._p = np.zeros((window, h), np.float64)
        self._y = np.zeros((window, h), np.float64)
        self._w = np.zeros((window, h), np.float64)
        self._filled = 0
        self._at = 0
        self._pos = np.zeros((h, BINS))
        self._neg = np.zeros((h, BINS))
        self._sums = np.zeros((h, 4))  # sw, swy, swp, s(w*logloss)
        self.history = ReportHistory(history_points)  # bounded; see the module docstring

    def update(self, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> None:
        p = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
        y, w = labels.astype(np.float64), weights.astype(np.float64)
        ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        self._sums += np.stack([w.sum(0), (w * y).sum(0), (w * p).sum(0), (w * ll).sum(0)], 1)
        bins = np.minimum((p * BINS).astype(np.int64), BINS - 1)
        for h in range(len(self.heads)):
            self._pos[h] += np.bincount(bins[:, h], w[:, h] * y[:, h], BINS)
            self._neg[h] += np.bincount(bins[:, h], w[:, h] * (1 - y[:, h]), BINS)
        self._push(p, y, w)

    def _push(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        n = len(p)
        if n >= self.window:
            p, y, w, n = p[-self.window:], y[-self.window:], w[-self.window:], self.window
        idx = (self._at + np.arange(n)) % self.window
        self._p[idx], self._y[idx], self._w[idx] = p, y, w
        self._at = (self._at + n) % self.window
        self._filled = min(self.window, self._filled + n)

    def report(self, **context: object) -> dict:
        """Window and cumulative metrics per head, plus ``context`` (step, samples, ...)."""
        out: dict = dict(context)
        p, y, w = self._p[: self._filled], self._y[: self._filled], self._w[: self._filled]
        for h, name in enumerate(self.heads):
            ph, yh, wh = p[:, h], y[:, h], w[:, h]
            ll = -(yh * np.log(ph) + (1 - yh) * np.log(1 - ph)) if len(ph) else ph
            win = _summary(wh.sum(), (wh * yh).sum(), (wh * ph).sum(), (wh * ll).sum())
            win["auc"] = _nan_to_none(auc(ph, yh, wh))
            win["n"] = int((wh > 0).sum())
            cum = _summary(*self._sums[h])
            cum["auc"] = _nan_to_none(_auc_from_hist(self._pos[h], self._neg[h]))
            cum["weight"] = float(self._sums[h, 0])
            out[name] = {"window": win, "cumulative": cum}
        self.history.append(out)
        return out

    def state(self) -> dict:
        return {k: getattr(self, k).copy() for k in ("_p", "_y", "_w", "_pos", "_neg", "_sums")} | {
            "_filled": self._filled, "_at": self._at}

    def load_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)


class MetricsWriter:
    """Appends reports as JSON lines and draws them as a PNG (AUC, NE, calibration)."""

    def __init__(self, jsonl_path: str = "", plot_path: str = ""):
        self.jsonl = Path(jsonl_path) if jsonl_path else None
        self.plot_path = Path(plot_path) if plot_path else None
        if self.jsonl:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)

    def write(self, report: dict) -> None:
        if self.jsonl:
            with self.jsonl.open("a") as fh:
                fh.write(json.dumps(report) + "\n")

    def plot(self, history: Iterable[dict], heads: tuple[str, ...]) -> None:
        history = list(history)
        if not self.plot_path or not history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = [r.get("samples", i) for i, r in enumerate(history)]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for name in heads:
            for scope, style in (("window", "-"), ("cumulative", "--")):
                for ax, key in zip(axes, ("auc", "ne", "calibration")):
                    ys = [r[name][scope][key] for r in history]
                    ax.plot(x, [np.nan if v is None else v for v in ys], style, label=f"{name} {scope}")
            if any("oracle" in r[name] for r in history):  # the ceiling (a generator's truth)
                for ax, key in zip(axes, ("auc", "ne", "calibration")):
                    ys = [r[name].get("oracle", {}).get("cumulative", {}).get(key) for r in history]
                    ax.plot(x, [np.nan if v is None else v for v in ys], ":", label=f"{name} oracle")
        for ax, title in zip(axes, ("progressive AUC", "normalized entropy", "calibration (pred/obs)")):
            ax.set_title(title)
            ax.set_xlabel("samples trained")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        self.plot_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.plot_path, dpi=90)
        plt.close(fig)
        log.info("wrote plot path=%s points=%d", self.plot_path, len(history))
