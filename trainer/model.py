"""The CTR model: pooled field embeddings + dense features -> interaction -> MLP -> heads.

    fields   (B, F, D)   sum of the embedding rows of each field's ids (zeros if none)
    dense    (B, Dd)  -> Linear+ReLU -> one more field (B, 1, D)      (when Dd > 0)
    interaction on the F' = F (+1) fields:
      "fm"   FM second-order terms kept apart: every pairwise inner product <v_i, v_j>,
             (B, F'(F'-1)/2), concatenated with the flattened fields (DLRM's dot interaction)
      "dcn"  DCN-v2 cross layers on the flattened fields x0: x_{l+1} = x0 * (W x_l + b) + x_l
    MLP (ReLU) -> one logit per head (an action type, e.g. click / like / conversion)
    wide   (when ``wide``) + first-order term: component 0 of each field, (B, F) -> Linear(F, H)
           (weights start at 1: the plain sum of the fields' linear weights, as in DeepFM)
    head biases start at logit(``init_rate``); the trainer's ``BaseRateTracker`` keeps them
    on the observed base rate

``build_model`` is the one way to make the network, from a ``ModelConfig`` (the trainer)
or from the JSON ``model_config`` shipped with the dense weights (a serving replica); with
the same dense state dict and the same rows, ``trainer.scoring.score_batch`` then returns
the trainer's predictions exactly.

    model = build_model(trainer.model_config())
    model.load_state_dict(trainer.dense_state_dict())
    probs = score_batch(model, batch, lookup)                     # (B, H), trainer.scoring
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.config import ModelConfig


class CTRModel(nn.Module):
    pairs: torch.Tensor  # (P,) FM pairs i < j as flat indices i * F' + j, a buffer ("fm" only)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        n_fields = len(cfg.slots) + (1 if cfg.dense_dim else 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.dense_proj = nn.Sequential(nn.Linear(cfg.dense_dim, d), nn.ReLU()) if cfg.dense_dim else None
            flat = n_fields * d
            if cfg.interaction == "fm":
                iu = torch.triu_indices(n_fields, n_fields, offset=1)
                self.register_buffer("pairs", iu[0] * n_fields + iu[1], persistent=False)
                width = flat + iu.shape[1]
                self.cross = nn.ModuleList()
            else:
                self.cross = nn.ModuleList(nn.Linear(flat, flat) for _ in range(cfg.cross_layers))
                width = flat
            layers: list[nn.Module] = []
            for h in cfg.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.mlp = nn.Sequential(*layers)
            self.heads = nn.Linear(width, len(cfg.heads))  # one logit per action type
            self.wide = nn.Linear(len(cfg.slots), len(cfg.heads), bias=False) if cfg.wide else None
        with torch.no_grad():
            prior = math.log(cfg.init_rate / (1 - cfg.init_rate))
            self.heads.bias.fill_(prior)
            if self.wide is not None:
                self.wide.weight.fill_(1.0)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits (B, H) from pooled field embeddings (B, F, D) and dense features (B, Dd)."""
        fields = emb
        if self.dense_proj is not None:
            fields = torch.cat([emb, self.dense_proj(dense).unsqueeze(1)], dim=1)  # (B, F', D)
        x0 = fields.flatten(1)  # (B, F'*D)
        if self.cfg.interaction == "fm":
            dots = torch.bmm(fields, fields.transpose(1, 2)).flatten(1)  # (B, F'*F')
            # gather, not dots[:, i, j]: advanced indexing's backward (index_put_ with
            # accumulate) was ~20% of a CPU step at 2 threads and slower than at 1; gather's
            # (scatter_add_) splits over threads (bench/trainer_bench.py thread scaling)
            pairs = torch.gather(dots, 1, self.pairs.expand(dots.shape[0], -1))  # (B, P)
            x = torch.cat([x0, pairs], dim=1)
        else:
            x = x0
            for layer in self.cross:
                x = x0 * layer(x) + x
        logits = self.heads(self.mlp(x))  # (B, H)
        if self.wide is not None:
            logits = logits + self.wide(emb[:, :, 0])  # (B, F) first-order weights
        return logits

    @torch.no_grad()
    def score(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (B, H). The trainer corrects for negative down-sampling
        in the loss (log-odds offset), so these are on the un-sampled distribution."""
        return torch.sigmoid(self.forward(emb, dense))


# what a model_config written before a key existed meant (a dense payload, a dump or a
# checkpoint of an older trainer): those models had no wide term and sum-pooled their fields
# (and read zeros for unknown ids: ``field_mean_slots`` empty, its default)
LEGACY_MODEL_KEYS: dict[str, Any] = {"wide": False, "pooling": "sum"}


def model_config_from_dict(model_config: Mapping[str, Any]) -> ModelConfig:
    """The ``ModelConfig`` inside ``Trainer.model_config()`` (its extra keys are ignored; a
    key it lacks takes its ``LEGACY_MODEL_KEYS`` meaning, else the default)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig.from_dict(LEGACY_MODEL_KEYS | {k: v for k, v in model_config.items() if k in known})


def build_model(config: ModelConfig | Mapping[str, Any]) -> CTRModel:
    """The network of ``config``: a ``ModelConfig``, or the JSON form of
    ``Trainer.model_config()`` (read with ``model_config_from_dict``). Weights are seeded
    by ``config.seed``; load trained ones with ``load_state_dict``."""
    cfg = config if isinstance(config, ModelConfig) else model_config_from_dict(config)
    return CTRModel(cfg)



class BaseRateTracker:
    """Keeps each head's bias on the observed base rate, from the first batch on. After a
    batch has been scored (progressively) and its labels are known, the decayed sums of the
    weighted labels Y and predictions P of the last ~``horizon`` samples give the shift
    log((Y + a) / (P + a)) (``a`` = one pseudo-positive, so a head without positives yet moves
    gently) that the bias takes; P is rescaled by exp(shift), the shift's effect on small
    probabilities, so a correction is not applied twice. In the first ``horizon`` samples the
    trainer passes the batch re-scored after its training step (``probs_now``), so P holds
    what the step itself did to the mean, and the bias takes the whole log ratio less its
    noise, one standard error of log(Y + a) (1 / sqrt(Y + a)), toward zero, bounded by
    ``RESCORED_MAX_STEP``: the first steps move every head at once (a row's first row-wise
    Adagrad step is ~lr whatever its gradient, and component 0 of every field feeds every
    head through the wide term: +2 logits on all three generator heads after the first
    batch, driven by the common click head), and a rare head under a prior already too high
    then needs ~-3 in one batch; a halved shift clipped to 1 left the generator's conversion
    head at 28x its rate in the second batch. Shrinking by the noise instead of halving
    keeps a head with a handful of positives from chasing them (the full ratio cost
    TalkingData AUC). From the scores before the step the shift is halved and clipped to
    +-``MAX_STEP`` (it cannot see the step's effect and would overshoot), and past the first
    ``horizon`` samples its gain fades as horizon / samples (a constant gain made the bias
    jitter with every rare positive and cost AUC).
    It uses only labels already scored, so progressive validation stays honest; Adam trains
    the bias as before, the tracker corrects what it has not caught up with (a new stream's
    rare base rate, the dense net drifting).

    >>> t = BaseRateTracker(1, horizon=1000)
    >>> p = np.full((100, 1), 0.5); y = np.zeros((100, 1)); y[:5] = 1; w = np.ones((100, 1))
    >>> float(t.update(p, y, w)[0]) < 0    # predicted 50, saw 5: lower the bias
    True
    """

    GAIN, MAX_STEP, PSEUDO = 0.5, 1.0, 1.0
    RESCORED_MAX_STEP = 4.0  # a bound for a pathological batch; the shifts measured early reach ~3

    def __init__(self, heads: int, horizon: int) -> None:
        self.horizon = horizon
        self.seen = 0
        self.sums = np.zeros((2, heads))  # decayed sum(w * y), sum(w * p)

    @property
    def early(self) -> bool:
        """Within the first ``horizon`` samples: the trainer then passes ``probs_now``."""
        return self.seen < self.horizon

    def update(self, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray,
               probs_now: np.ndarray | None = None) -> np.ndarray:
        """(H,) shift for the head biases after a batch of (B, H) scores, labels, weights.
        ``probs_now``: the batch re-scored after the training step; early on the step itself
        moves the mean a lot (every new row, the shared ids' wide weights), and a shift
        computed from the scores before it overshoots."""
        decay = math.exp(-len(probs) / self.horizon)
        self.seen += len(probs)
        now = probs if probs_now is None else probs_now
        self.sums = self.sums * decay + np.stack([(weights * labels).sum(0), (weights * now).sum(0)])
        ratio = np.log((self.sums[0] + self.PSEUDO) / (self.sums[1] + self.PSEUDO))
        if probs_now is not None:  # P holds the step's effect: the ratio beyond its noise, in full
            noise = 1.0 / np.sqrt(self.sums[0] + self.PSEUDO)  # standard error of log(Y + a)
            shift = np.clip(np.sign(ratio) * np.maximum(np.abs(ratio) - noise, 0.0),
                            -self.RESCORED_MAX_STEP, self.RESCORED_MAX_STEP)
        else:  # half of it, fading past the first horizon samples
            gain = self.GAIN * min(1.0, self.horizon / self.seen)
            shift = np.clip(gain * ratio, -self.MAX_STEP, self.MAX_STEP)
        self.sums[1] *= np.exp(shift)
        return shift

    def state(self) -> dict:
        return {"seen": self.seen, "sums": self.sums.copy()}

    def load_state(self, state: dict) -> None:
        self.seen, self.sums = int(state["seen"]), np.asarray(state["sums"], np.float64).copy()
