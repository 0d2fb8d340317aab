"""The incremental trainer: one step per batch — score (progressive validation), weight,
backpropagate, sparse row-wise update of the batch's rows, Adam on the dense net — plus
expiry, checkpoints with Kafka positions, and the hooks sync/ publishes from.

    trainer = Trainer(ModelConfig(), TableConfig(), TrainerConfig(batch_size=1024))
    trainer.train_batch(batch)             # -> progressive predictions (B, H)
    trainer.predict(batch)                 # (B, H), no side effects
    updates = trainer.collect_updates()    # [TableUpdate] since the last call
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.batch import Batch
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.embedding import EmbeddingTable, make_table
from trainer.errors import CheckpointError, TrainerError
from trainer.metrics import MetricsWriter, ProgressiveValidator
from trainer.model import CTRModel, pool
from trainer.updates import TableUpdate
from trainer.weighting import LossWeighting

log = logging.getLogger(__name__)
TABLE_NAME = "emb"
CHECKPOINT_FORMAT = 1


class BatchSource(Protocol):
    def next_batch(self, timeout_s: float) -> Batch | None: ...
    def close(self) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainerError("trainer.device=cuda but CUDA is not available; use auto or cpu")
    return torch.device(name)


class Trainer:
    def __init__(self, model: ModelConfig, table: TableConfig, cfg: TrainerConfig,
                 embedding: EmbeddingTable | None = None):
        if model.dim != table.dim:
            raise TrainerError(f"model.dim={model.dim} and embedding.dim={table.dim} must agree")
        self.model_cfg, self.table_cfg, self.cfg = model, table, cfg
        self.device = resolve_device(cfg.device) if embedding is None else embedding.device
        self.model = CTRModel(model).to(self.device)
        self.table = embedding if embedding is not None else make_table(TABLE_NAME, table, self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.dense_lr)
        self.weighting = LossWeighting(cfg, len(model.heads))
        self.validator = ProgressiveValidator(model.heads, cfg.window)
        self.writer = MetricsWriter(cfg.metrics_path, cfg.plot_path)
        self.step = 0
        self.samples = 0
        self.positions: dict[int, int] = {}
        self.watermark_ms = np.iinfo(np.int64).min
        self.last_checkpoint_step = -1
        self.last_loss = float("nan")

    # -- one step --------------------------------------------------------------------
    def _embed(self, batch: Batch, train: bool):
        """Pooled field embeddings (B, F, D), the leaf (U, D) to take gradients of, rows."""
        codes, uniq = pd.factorize(batch.ids)
        codes = np.asarray(codes, dtype=np.int64)
        uniq = np.asarray(uniq, dtype=np.int64)
        counts = np.bincount(codes, minlength=len(uniq)) if train else None
        now = int(batch.event_time_ms.max()) if train and len(batch) else None
        rows = self.table.rows_for(uniq, now_ms=now, train=train, counts=counts)
        leaf = self.table.gather(rows)  # (U, D)
        if train:
            leaf = leaf.detach().requires_grad_(True)
        per_id = leaf.index_select(0, torch.from_numpy(codes).to(self.device))  # (N, D)
        emb = pool(per_id, batch.sample_index, batch.fields, len(batch), len(self.model_cfg.slots))
        return emb, leaf, rows

    def _dense(self, batch: Batch) -> torch.Tensor:
        return torch.from_numpy(batch.dense).to(self.device)

    @torch.no_grad()
    def predict(self, batch: Batch) -> np.ndarray:
        """(B, H) probabilities; reads rows only (no counting, admission or training)."""
        emb, _, _ = self._embed(batch, train=False)
        return self.model.score(emb, self._dense(batch)).cpu().numpy()

    def train_batch(self, batch: Batch) -> np.ndarray:
        """Score the batch, record the scores, then train on it. Returns the (B, H) scores."""
        if len(batch) == 0:
            self.positions.update(batch.positions)
            return np.zeros((0, len(self.model_cfg.heads)), np.float32)
        self.weighting.observe(batch)
        emb, leaf, rows = self._embed(batch, train=True)
        logits = self.model(emb, self._dense(batch))  # (B, H), before any update: progressive
        probs = torch.sigmoid(logits.detach())
        labels = torch.from_numpy(batch.labels).to(self.device)
        eval_w, train_w = self.weighting.base(batch)
        weights = torch.from_numpy(train_w).to(self.device) * self.weighting.fake_negative(probs, labels)
        offset = torch.from_numpy(self.weighting.logit_offset(batch)).to(self.device)
        loss = F.binary_cross_entropy_with_logits(logits + offset, labels, weight=weights,
                                                  reduction="sum") / len(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.table.apply_gradients(rows, leaf.grad)
        scores = probs.cpu().numpy()
        self.validator.update(scores, batch.labels, eval_w)
        self.step += 1
        self.samples += len(batch)
        self.positions.update(batch.positions)
        self.watermark_ms = max(self.watermark_ms, int(batch.event_time_ms.max()))
        if self.step % self.cfg.expire_every_batches == 0:
            self.table.expire(self.watermark_ms)
        self.last_loss = float(loss.detach())
        return scores

    # -- hooks for sync ----------------------------------------------------------------
    def collect_updates(self) -> list[TableUpdate]:
        """Rows touched and ids evicted since the last call, per table; then resets."""
        return [self.table.collect_updates()]

    def full_dump(self) -> list[TableUpdate]:
        return [self.table.full_dump()]

    def dense_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def model_config(self) -> dict:
        """JSON-serialisable; ``trainer.model.build_model`` rebuilds the module from it."""
        return self.model_cfg.to_dict() | {
            "model_name": self.cfg.model_name, "tables": {TABLE_NAME: {"dim": self.table.dim}},
            "id_mapping": "every id of every model slot -> table 'emb', key = the id itself; "
                          "rows of one (sample, slot) are summed; unknown ids read zeros",
            "neg_sampling": self.cfg.neg_sampling}

    # -- checkpoints -----------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "model_config": self.model_cfg.to_dict(),
            "step": self.step, "samples": self.samples, "positions": dict(self.positions),
            "watermark_ms": self.watermark_ms, "table": self.table.snapshot(),
            "dense": self.dense_state_dict(), "opt": self.opt.state_dict(),
            "validator": self.validator.state(),
            "fn_counts": (self.weighting.late_pos.copy(), self.weighting.all_pos.copy()),
        }

    def save_checkpoint(self) -> None:
        if not self.cfg.checkpoint_dir or self.last_checkpoint_step == self.step:
            return
        checkpoint.save(self.cfg.checkpoint_dir, self.state(), self.step, self.cfg.keep_checkpoints)
        self.last_checkpoint_step = self.step

    def restore(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or state["model_config"] != self.model_cfg.to_dict():
            raise CheckpointError("checkpoint does not match the configured model (format or "
                                  "[model] section differ); start with the config it was written with")
        self.table.restore(state["table"])
        self.model.load_state_dict(state["dense"])
        self.opt.load_state_dict(state["opt"])
        self.validator.load_state(state["validator"])
        self.weighting.late_pos, self.weighting.all_pos = (a.copy() for a in state["fn_counts"])
        self.step, self.samples = state["step"], state["samples"]
        self.positions = dict(state["positions"])
        self.watermark_ms = state["watermark_ms"]
        self.last_checkpoint_step = self.step

    def restore_latest(self) -> bool:
        """Restore from the newest checkpoint in checkpoint_dir; False when there is none."""
        path = checkpoint.latest(self.cfg.checkpoint_dir) if self.cfg.checkpoint_dir else None
        if path is None:
            return False
        self.restore(checkpoint.load(path))
        log.info("restored checkpoint=%s step=%d samples=%d positions=%s", path, self.step,
                 self.samples, self.positions)
        return True

    # -- the loop --------------------------------------------------------------------
    def run(self, source: BatchSource, on_batch: Callable[[Batch, "Trainer"], None] | None = None,
            on_idle: Callable[["Trainer"], None] | None = None) -> dict:
        """Train until ``max_samples`` (checked at batch boundaries), ``idle_timeout_s``
        without a batch, or the end of a finite source; with neither bound set, forever.
        ``on_batch`` runs after every step, ``on_idle`` whenever a wait for a batch came back
        empty (so a publisher can still push on time when the stream is slow).
        Checkpoints every ``checkpoint_every_batches`` and at a clean stop (not on an
        exception: a crash resumes from the last checkpoint). Returns the final report."""
        cfg = self.cfg
        started, idle_since, trained_here = time.monotonic(), time.monotonic(), 0
        try:
            while not (cfg.max_samples and self.samples >= cfg.max_samples):
                batch = source.next_batch(timeout_s=0.5)
                if batch is None:
                    if on_idle is not None:
                        on_idle(self)
                    if getattr(source, "exhausted", False):
                        break
                    if cfg.idle_timeout_s and time.monotonic() - idle_since >= cfg.idle_timeout_s:
                        log.info("idle for %.1fs, stopping", cfg.idle_timeout_s)
                        break
                    continue
                idle_since = time.monotonic()
                self.train_batch(batch)
                trained_here += len(batch)
                if on_batch is not None:
                    on_batch(batch, self)
                if self.step % cfg.report_every_batches == 0:
                    self._report(trained_here / max(time.monotonic() - started, 1e-9))
                if self.step % cfg.checkpoint_every_batches == 0:
                    self.save_checkpoint()
            self.save_checkpoint()
        finally:
            source.close()
        rate = trained_here / max(time.monotonic() - started, 1e-9)
        final = self._report(rate)
        self.writer.plot(self.validator.history, self.model_cfg.heads)
        return final

    def _report(self, rate: float) -> dict:
        rep = self.validator.report(step=self.step, samples=self.samples,
                                    watermark_ms=int(self.watermark_ms), samples_per_s=round(rate, 1),
                                    live_ids=self.table.num_live)
        self.writer.write(rep)
        if len(self.validator.history) % 10 == 0:  # keep the plot fresh on long runs
            self.writer.plot(self.validator.history, self.model_cfg.heads)
        aucs = " ".join(f"auc_{h}={_fmt(rep[h]['window']['auc'])}" for h in self.model_cfg.heads)
        log.info("step=%d samples=%d samples_per_s=%.0f live_ids=%d %s", self.step, self.samples,
                 rate, self.table.num_live, aucs)
        return rep


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.4f}"
