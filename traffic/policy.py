"""Which candidates a request shows, and what each policy would have earned: the live
source's policy accounting, from the world's true click probabilities.

``truth`` is the (candidates, shown) matrix of true click probabilities of each candidate
if shown at each rank (``traffic.world.LiveWorld.click_matrix``); ``order`` lists the
candidates shown, best rank first.

>>> truth = np.array([[0.1, 0.05], [0.4, 0.2], [0.2, 0.1]])
>>> top_k(np.array([0.3, 0.9, 0.1]), 2).tolist()   # by predicted click probability
[1, 0]
>>> {k: round(v, 3) for k, v in expected_clicks(truth, np.array([1, 0])).items()}
{'shown': 0.45, 'random': 0.35, 'oracle': 0.5}
"""

from __future__ import annotations

import numpy as np

# served: ranked by a replica's model; explore: random by choice (explore_rate); fallback:
# random because no replica answered (or none is configured)
POLICIES = ("served", "explore", "fallback")
# what was shown, and the counterfactuals on the same request
CHOICES = ("shown", "random", "oracle")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, highest first (ties: the lower index first)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def random_k(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``k`` distinct candidates of ``n`` in random order (the random policy)."""
    return rng.choice(n, size=min(k, n), replace=False)


def expected_clicks(truth: np.ndarray, order: np.ndarray) -> dict[str, float]:
    """Expected clicks of one request, per choice: ``shown`` (``order`` at its ranks),
    ``random`` (the expectation over a uniformly random choice of as many candidates in
    random order: each rank's mean over candidates), ``oracle`` (the best by true rank-0
    probability, best first)."""
    k = len(order)
    ranks = np.arange(k)
    best = top_k(truth[:, 0], k)
    return {"shown": float(truth[order, ranks].sum()),
            "random": float(truth[:, :k].mean(0).sum()),
            "oracle": float(truth[best, ranks].sum())}
