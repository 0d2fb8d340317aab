"""Per-(sample, head) loss weights: sample weights, negative down-sampling, delayed feedback.

- ``Sample.weight`` multiplies everything.
- Negative down-sampling, by the contract of ``schemas/contracts.py`` (SAMPLE_RATE_CONTRACT:
  every sample carries the policy's rate r; a sample without any label was kept with
  probability r, a labelled one with 1): ``weight`` mode gives samples without any label
  the importance weight 1/r; ``logit`` mode instead adds log(1/r) to the logit of every
  sample in the loss, so the model's own logit stays on the un-sampled scale (the
  re-calibration q = p / (p + (1 - p) / r)), and weights a head's labelled negatives (a
  click without a like, for the like head: kept for sure) by r, so that all of the head's
  negatives count as kept with the rate the offset assumes. Predictions are un-sampled in
  both modes; progressive validation weights unlabelled samples by 1/r so its metrics are
  those of the un-sampled stream.
- Delayed feedback (``fn_weighting``, Ktena et al., RecSys 2019, generalised): the joiner
  emits a sample when its window closes and, for a label that arrives later, a
  FLAG_LATE_CORRECTION positive for an impression already trained as a negative. If a
  fraction rho of positives arrives late, the stream shows positives with probability
  p / (1 + p rho) and negatives with (1 - p + p rho) / (1 + p rho), so the importance
  weights are  w+ = 1 + p rho  and  w- = (1 - p)(1 + p rho) / (1 - p + p rho)  with p the
  model's (detached) prediction; rho = 1 gives the paper's (1 + p) and (1 - p)(1 + p).
  rho is estimated per head from the stream (late positives / all positives).
- A late correction is a positive for its late labels only: its other heads get weight 0
  (that impression was already counted as their negative).
- Negatives flagged FLAG_ACTION_STALL (emitted while the action stream stalled) are
  suspect: weight ``stall_negative_weight``.
"""

from __future__ import annotations

import numpy as np
import torch

from schemas import FLAG_ACTION_STALL, FLAG_LATE_CORRECTION
from schemas.contracts import sampling_logit_offset, unsampling_weight
from trainer.batch import Batch
from trainer.config import TrainerConfig


class LossWeighting:
    def __init__(self, cfg: TrainerConfig, num_heads: int):
        self.cfg = cfg
        self.late_pos = np.zeros(num_heads)
        self.all_pos = np.zeros(num_heads)

    @property
    def rho(self) -> np.ndarray:
        """Estimated fraction of positives that arrive as late corrections, per head."""
        return self.late_pos / np.maximum(self.all_pos, 1.0)

    def observe(self, batch: Batch) -> None:
        late = (batch.flags & FLAG_LATE_CORRECTION) != 0
        self.all_pos += batch.labels.sum(0)
        self.late_pos += batch.labels[late].sum(0)

    def base(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(eval_weights, train_weights_before_fn) both (B, H), float32."""
        y = batch.labels
        labelled = batch.labelled if batch.labelled is not None else y.sum(1) > 0
        importance = np.ones(len(batch), np.float32)
        if self.cfg.neg_sampling != "none":
            importance = unsampling_weight(batch.sample_rate, labelled).astype(np.float32)
        mask = np.ones_like(y)
        late = (batch.flags & FLAG_LATE_CORRECTION) != 0
        mask[late] = y[late]
        w = batch.weights[:, None] * mask
        eval_w = w * importance[:, None]
        if self.cfg.neg_sampling == "weight":
            train_w = w * importance[:, None]
        elif self.cfg.neg_sampling == "logit":  # a head's labelled negatives were kept for sure
            train_w = w * np.where(labelled[:, None] & (y == 0), batch.sample_rate[:, None], 1.0)
        else:
            train_w = w
        stall = (batch.flags & FLAG_ACTION_STALL) != 0
        train_w = np.where(stall[:, None] & (y == 0), train_w * self.cfg.stall_negative_weight, train_w)
        return eval_w.astype(np.float32), train_w.astype(np.float32)

    def logit_offset(self, batch: Batch) -> np.ndarray:
        """(B, 1) added to the logit in the loss (``logit`` mode), else zeros."""
        if self.cfg.neg_sampling != "logit":
            return np.zeros((len(batch), 1), np.float32)
        return sampling_logit_offset(batch.sample_rate).astype(np.float32)[:, None]

    def fake_negative(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, H) importance weights for delayed feedback (ones when disabled)."""
        if self.cfg.delayed_feedback != "fn_weighting":
            return torch.ones_like(probs)
        rho = torch.as_tensor(self.rho, dtype=probs.dtype, device=probs.device)
        p = probs.detach().clamp(1e-6, 1 - 1e-6)
        w_pos = 1 + p * rho
        w_neg = (1 - p) * (1 + p * rho) / (1 - p + p * rho)
        return torch.where(labels > 0.5, w_pos, w_neg)
