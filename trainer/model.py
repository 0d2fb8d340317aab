"""The CTR model: pooled field embeddings + dense features -> interaction -> MLP -> heads.

    fields   (B, F, D)   sum of the embedding rows of each field's ids (zeros if none)
    dense    (B, Dd)  -> Linear+ReLU -> one more field (B, 1, D)      (when Dd > 0)
    interaction on the F' = F (+1) fields:
      "fm"   FM second-order terms kept apart: every pairwise inner product <v_i, v_j>,
             (B, F'(F'-1)/2), concatenated with the flattened fields (DLRM's dot interaction)
      "dcn"  DCN-v2 cross layers on the flattened fields x0: x_{l+1} = x0 * (W x_l + b) + x_l
    MLP (ReLU) -> one logit per head (an action type, e.g. click / like / conversion)

A serving replica rebuilds it from ``model_config`` and the dense state dict, pools the
rows it looked up with ``pool`` and calls ``score``; with the same rows and weights it
returns the trainer's predictions exactly.

    model = build_model(trainer.model_config())
    model.load_state_dict(trainer.dense_state_dict())
    probs = model.score(pool(values, batch), torch.from_numpy(batch.dense))   # (B, H)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from trainer.config import ModelConfig


class CTRModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
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
                self.register_buffer("pair_i", iu[0], persistent=False)
                self.register_buffer("pair_j", iu[1], persistent=False)
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

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits (B, H) from pooled field embeddings (B, F, D) and dense features (B, Dd)."""
        fields = emb
        if self.dense_proj is not None:
            fields = torch.cat([emb, self.dense_proj(dense).unsqueeze(1)], dim=1)  # (B, F', D)
        x0 = fields.flatten(1)  # (B, F'*D)
        if self.cfg.interaction == "fm":
            dots = torch.bmm(fields, fields.transpose(1, 2))  # (B, F', F')
            x = torch.cat([x0, dots[:, self.pair_i, self.pair_j]], dim=1)
        else:
            x = x0
            for layer in self.cross:
                x = x0 * layer(x) + x
        return self.heads(self.mlp(x))

    @torch.no_grad()
    def score(self, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities (B, H). The trainer corrects for negative down-sampling
        in the loss (log-odds offset), so these are on the un-sampled distribution."""
        return torch.sigmoid(self.forward(emb, dense))


def build_model(model_config: dict) -> CTRModel:
    """The module described by ``Trainer.model_config()`` (extra keys are ignored)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return CTRModel(ModelConfig.from_dict({k: v for k, v in model_config.items() if k in known}))


def pool(values: torch.Tensor, sample_index: np.ndarray | torch.Tensor,
         fields: np.ndarray | torch.Tensor, batch_size: int, num_fields: int) -> torch.Tensor:
    """Sum-pool per (sample, field): values (N, D) of the ids in a batch -> (B, F, D)."""
    dev = values.device
    si = torch.as_tensor(sample_index, device=dev)
    fi = torch.as_tensor(fields, device=dev)
    out = torch.zeros(batch_size * num_fields, values.shape[1], device=dev, dtype=values.dtype)
    out.index_add_(0, si * num_fields + fi, values)
    return out.view(batch_size, num_fields, values.shape[1])
