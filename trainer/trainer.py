"""The incremental trainer: one step per batch — score (progressive validation), weight,
backpropagate, sparse row-wise update of the batch's rows, Adam on the dense net (a new
model's first batch in growing steps: ``warmup_cuts``) — plus expiry, checkpoints with
Kafka positions, and the hooks sync/ publishes from.

    trainer = Trainer(ModelConfig(), TableConfig(), TrainerConfig(batch_size=1024))
    trainer.train_batch(batch)             # -> progressive predictions (B, H)
    trainer.predict(batch)                 # (B, H), no side effects
    updates = trainer.collect_updates()    # [TableUpdate] since the last call
    rows, actions = trainer.traces.take()  # freshness traces since the last call (trainer.freshness)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.batch import Batch, take
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.embedding import EmbeddingTable, make_table
from trainer.errors import CheckpointError, TrainerError
from trainer.freshness import ActionTraces
from trainer.metrics import MetricsWriter, ProgressiveValidator
from trainer.model import BaseRateTracker, build_model, model_config_from_dict
from trainer.scoring import (
    TABLE_NAME,
    BatchIds,
    default_fields,
    default_ids,
    distinct_ids,
    field_defaults,
    pool_rows,
    score_batch,
)
from trainer.updates import TableUpdate
from trainer.weighting import LossWeighting

log = logging.getLogger(__name__)
MEAN_BATCH_DECAY = 0.02  # of the running mean batch size (~50 batches)
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


OracleFn = Callable[[Batch], np.ndarray | None]


class Trainer:
    """``oracle``: optional ``batch -> (B, H)`` true probabilities (a generator that knows
    them, ``traffic.generator.TrafficGenerator.true_probabilities`` by request id), or None
    for a batch it cannot answer; progressive validation then reports the oracle's metrics
    on the same samples and weights beside the model's (``report[head]["oracle"]``)."""

    def __init__(self, model: ModelConfig, table: TableConfig, cfg: TrainerConfig,
                 embedding: EmbeddingTable | None = None, oracle: OracleFn | None = None) -> None:
        if model.dim != table.dim:
            raise TrainerError(f"model.dim={model.dim} and embedding.dim={table.dim} must agree")
        self.model_cfg, self.table_cfg, self.cfg = model, table, cfg
        self.device = resolve_device(cfg.device) if embedding is None else embedding.device
        self.model = build_model(model).to(self.device)
        self.table = embedding if embedding is not None else make_table(TABLE_NAME, table, self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.dense_lr)
        self.weighting = LossWeighting(cfg, len(model.heads))
        self.validator = ProgressiveValidator(model.heads, cfg.window, cfg.history_points)
        self.oracle = oracle
        self.oracle_validator = (ProgressiveValidator(model.heads, cfg.window, 10)
                                 if oracle is not None else None)
        self.bias_tracker = (BaseRateTracker(len(model.heads), cfg.bias_tracking_samples)
                             if cfg.bias_tracking_samples else None)
        # model.field_mean_slots: the (K,) ids of their mean rows (trainer.scoring), and for
        # each of the F fields its position among them, -1 for a field that reads zeros
        self.default_ids = default_ids(model) if model.field_mean_slots else None
        self.default_index = torch.full((len(model.slots),), -1, dtype=torch.int64)
        self.default_index[torch.tensor(default_fields(model))] = torch.arange(len(model.field_mean_slots))
        self.table.track_admitted = self.default_ids is not None
        self.writer = MetricsWriter(cfg.metrics_path, cfg.plot_path)
        self.step = 0
        self.samples = 0
        self.positions: dict[int, int] = {}
        self.watermark_ms = np.iinfo(np.int64).min
        self.last_checkpoint_step = -1
        self.checkpoints_saved, self.checkpoint_seconds = 0, 0.0  # count, total time
        self.last_loss = float("nan")
        # samples per label type that is no model head (they train as negatives), and the
        # types already warned about in this process
        self.unknown_actions: Counter[str] = Counter()
        self._warned_unknown: set[str] = set()
        # freshness traces of the actions trained on, taken by the publisher at each push
        self.traces = ActionTraces(cfg.freshness_traces, seed=cfg.seed)
        self.skipped_batches = self.skipped_samples = 0  # non-finite loss: not trained on (_skip)
        self.mean_batch = 0.0  # running mean batch size, the loss's normalizer (train_batch)
        # samples a pacing source consumed but holds (trainer.pacing): its snapshot goes into
        # each checkpoint beside the positions, restored into ``held_input`` for the next source
        self.input_snapshot: Callable[[], list[Batch]] | None = None
        self.held_input: list[Batch] | None = None

    # -- one step --------------------------------------------------------------------
    def lookup(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, D) rows of distinct ``ids`` (zeros for unknown ones) and (U,) found; no side
        effects. The ``RowLookup`` of ``trainer.scoring``."""
        rows = self.table.rows_for(ids, train=False)
        return self.table.gather(rows), rows > 0

    def _dense(self, batch: Batch) -> torch.Tensor:
        return torch.from_numpy(batch.dense).to(self.device)

    def predict(self, batch: Batch) -> np.ndarray:
        """(B, H) probabilities; reads rows only (no counting, admission or training)."""
        return score_batch(self.model, batch, self.lookup)

    def train_batch(self, batch: Batch) -> np.ndarray:
        """Score the batch, record the scores, then train on it. Returns the (B, H) scores.
        One step, except while the model is young (``warmup_cuts``): then the batch is
        trained in pieces, each scored after the pieces before it were learnt."""
        if len(batch) == 0:
            self.positions.update(batch.positions)
            return np.zeros((0, len(self.model_cfg.heads)), np.float32)
        self.weighting.observe(batch)
        self._count_unknown(batch)
        # per sample, not per batch: the loss is the sum over the batch divided by the running
        # mean batch size (the batch mean when batches are of one size, as before). A live
        # stream's batches are cut by time and come label-sorted (the joiner releases a
        # window's negatives together, early positives one by one); with the batch mean, a
        # batch of 5 clicks moved the weights as far as one of 500 negatives and the model
        # drifted to over-predict clicks ~5x (a live run; a fixed-size replay of the same
        # samples was calibrated). Warm-up pieces are normalised by it too.
        self.mean_batch += MEAN_BATCH_DECAY * (len(batch) - self.mean_batch) if self.mean_batch else len(batch)
        cuts = warmup_cuts(self.samples, len(batch), self.cfg.warmup_step_samples, self.cfg.batch_size)
        trained = self.samples
        if len(cuts) == 2:
            scores = self._learn(batch)
        else:
            scores = np.concatenate([self._learn(take(batch, np.arange(lo, hi))) for lo, hi in zip(cuts, cuts[1:])])
        self.positions.update(batch.positions)
        if self.samples == trained:  # every piece skipped: no step
            return scores
        self.step += 1
        if self.step % self.cfg.expire_every_batches == 0:
            self.table.expire(self.watermark_ms)
        return scores

    def _learn(self, batch: Batch) -> np.ndarray:
        """One optimisation step on ``batch`` (scored first: progressive); its (B, H) scores."""
        ids = distinct_ids(batch)  # the steps of trainer.scoring.score_batch, with gradients
        now = int(batch.event_time_ms.max())
        rows = self.table.rows_for(ids.uniq, now_ms=now, train=True, counts=ids.counts())
        found = defaults = fields = None
        if self.default_ids is not None:
            found, defaults, fields = self._default_rows(batch, ids, rows)
        leaf = self.table.gather(rows).detach().requires_grad_(True)  # (U, D)
        emb = pool_rows(batch, ids, leaf, len(self.model_cfg.slots), self.model_cfg.pooling == "mean",
                        found, defaults)  # (B, F, D)
        logits = self.model(emb, self._dense(batch))  # (B, H), before any update: progressive
        probs = torch.sigmoid(logits.detach())
        labels = torch.from_numpy(batch.labels).to(self.device)
        eval_w, train_w = self.weighting.base(batch)
        weights = torch.from_numpy(train_w).to(self.device) * self.weighting.fake_negative(probs, labels)
        offset = torch.from_numpy(self.weighting.logit_offset(batch)).to(self.device)
        loss = F.binary_cross_entropy_with_logits(logits + offset, labels, weight=weights,
                                                  reduction="sum") / self.mean_batch
        if not bool(torch.isfinite(loss)) or not bool(torch.isfinite(probs).all()):
            return self._skip(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        assert leaf.grad is not None  # leaf requires grad and feeds the loss
        self.table.apply_gradients(rows, leaf.grad)
        if fields is not None:
            self._track_field_means(rows, fields, now, len(batch))
        scores = probs.cpu().numpy()
        self.validator.update(scores, batch.labels, eval_w)
        if self.oracle_validator is not None and self.oracle is not None:
            truth = self.oracle(batch)
            if truth is not None:
                self.oracle_validator.update(np.asarray(truth), batch.labels, eval_w)
        if self.bias_tracker is not None:
            now_scores = self.predict(batch) if self.bias_tracker.early else None  # after the step
            shift = self.bias_tracker.update(scores, batch.labels, eval_w, now_scores)
            with torch.no_grad():
                self.model.heads.bias.add_(torch.as_tensor(shift, dtype=torch.float32, device=self.device))
        self.samples += len(batch)
        self.watermark_ms = max(self.watermark_ms, int(batch.event_time_ms.max()))
        self.last_loss = float(loss.detach())
        self.traces.observe(batch)  # the step is done (the loss is on the host): trained_ms = now
        return scores

    def _default_rows(self, batch: Batch, ids: BatchIds, rows: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``model.field_mean_slots``: an id of such a slot without a row reads the slot's mean
        row (trainer.scoring), and a row admitted in this step starts there (plus the
        table's random init). Returns (U,) found, the (F, D) default rows (zeros for the
        other fields, or while a slot has none yet) and (U,) the field of each distinct id."""
        assert self.default_ids is not None
        fields = torch.zeros(len(ids.uniq), dtype=torch.int64)
        fields[torch.from_numpy(ids.codes)] = torch.as_tensor(batch.fields, dtype=torch.int64)
        fields = fields.to(self.device)
        defaults = field_defaults(self.model_cfg, self.table.gather(self.table.rows_for(self.default_ids)))  # (F, D)
        new = self.table.take_admitted()
        if len(new):
            start = torch.isin(rows, new)
            self.table.add_to_rows(rows[start], defaults.index_select(0, fields[start]))
        return rows > 0, defaults, fields

    @torch.no_grad()
    def _track_field_means(self, rows: torch.Tensor, fields: torch.Tensor, now_ms: int, n: int) -> None:
        """Move each mean row toward the mean of its slot's rows in this step (distinct ids,
        after the update) by 1 - exp(-n / trainer.field_mean_samples); a slot's first mean
        is taken whole."""
        assert self.default_ids is not None
        k = self.default_index.to(fields.device)[fields]  # (U,) position among the mean rows, -1: none
        known = (rows > 0) & (k >= 0)
        if not bool(known.any()):
            return
        f = k[known]
        values = self.table.gather(rows[known])  # (n', D)
        num = len(self.default_ids)
        sums = torch.zeros(num, values.shape[1], device=values.device, dtype=values.dtype).index_add_(0, f, values)
        counts = torch.bincount(f, minlength=num)
        has = (counts > 0).cpu().numpy()
        mean = sums[has] / counts[has].unsqueeze(1).to(values.dtype)  # (K', D)
        held = self.table.rows_for(self.default_ids[has])
        old = self.table.gather(held)
        gain = 1.0 - math.exp(-n / self.cfg.field_mean_samples)
        self.table.put(self.default_ids[has], torch.where((held > 0).unsqueeze(1), old + gain * (mean - old), mean),
                       now_ms)

    def _skip(self, batch: Batch) -> np.ndarray:
        """A batch whose loss or scores are not finite is not trained on (one step would turn
        every weight into NaN for good): its positions advance, it is counted and logged."""
        self.skipped_batches += 1
        self.skipped_samples += len(batch)
        log.warning("skipped a batch of %d samples: non-finite loss or scores (extreme dense values "
                    "or weights?); %d batches skipped so far", len(batch), self.skipped_batches)
        return np.full((len(batch), len(self.model_cfg.heads)), np.nan, np.float32)

    def _count_unknown(self, batch: Batch) -> None:
        if not batch.unknown_labels:
            return
        self.unknown_actions.update(batch.unknown_labels)
        for t in sorted(set(batch.unknown_labels) - self._warned_unknown):
            self._warned_unknown.add(t)
            log.warning("action type %r is not a model head (model.heads=%s): the label is "
                        "ignored, so a sample with no other label trains as a negative for every "
                        "head; add it to model.heads or fix the producer (counted per type in the "
                        "metrics: unknown_action_types)",
                        t, ",".join(self.model_cfg.heads))

    def unknown_action_types(self) -> list[dict]:
        """``[{"type": t, "samples": n}]`` by type, for the metrics line: a list, because
        readers of the line (the demo) take every dict-valued entry for a head."""
        return [{"type": t, "samples": n} for t, n in sorted(self.unknown_actions.items())]

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
                          f"rows of one (sample, slot) are {self.model_cfg.pooling}-pooled; unknown ids read "
                          "zeros, those of field_mean_slots their slot's mean row (trainer.scoring.default_row_id)",
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
            "unknown_actions": dict(self.unknown_actions),
            "bias_tracker": self.bias_tracker.state() if self.bias_tracker is not None else None,
            "held_input": self.input_snapshot() if self.input_snapshot is not None else None,
        }

    def save_checkpoint(self) -> None:
        if not self.cfg.checkpoint_dir or self.last_checkpoint_step == self.step:
            return
        started = time.perf_counter()
        checkpoint.save(self.cfg.checkpoint_dir, self.state(), self.step, self.cfg.keep_checkpoints)
        self.last_checkpoint_step = self.step
        self.checkpoints_saved += 1  # with checkpoint_seconds: read by trainer.prometheus
        self.checkpoint_seconds += time.perf_counter() - started

    def restore(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT or model_config_from_dict(state["model_config"]) != self.model_cfg:
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
        self.unknown_actions = Counter(state.get("unknown_actions", {}))  # absent before it was kept
        self.held_input = state.get("held_input")  # for the source (trainer.pacing): trained after restart
        if self.bias_tracker is not None and state.get("bias_tracker") is not None:
            self.bias_tracker.load_state(state["bias_tracker"])
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
    def run(self, source: BatchSource, on_batch: Callable[[Batch, Trainer], None] | None = None,
            on_idle: Callable[[Trainer], None] | None = None,
            stop: threading.Event | None = None) -> dict:
        """Train until ``max_samples`` (checked at batch boundaries), ``idle_timeout_s``
        without a batch, the end of a finite source, or ``stop`` is set (checked between
        steps: a signal handler sets it, the step in progress finishes and the stop is clean);
        with none of these, forever.
        ``on_batch`` runs after every step, ``on_idle`` whenever a wait for a batch came back
        empty (so a publisher can still push on time when the stream is slow).
        Checkpoints every ``checkpoint_every_batches`` and at a clean stop (not on an
        exception: a crash resumes from the last checkpoint). Returns the final report."""
        cfg = self.cfg
        self.input_snapshot = getattr(source, "snapshot", None)  # consumed, not yet trained: checkpointed
        started, idle_since, trained_here = time.monotonic(), time.monotonic(), 0
        try:
            while not (cfg.max_samples and self.samples >= cfg.max_samples):
                if stop is not None and stop.is_set():
                    log.info("stop requested, stopping at step=%d samples=%d", self.step, self.samples)
                    break
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
                if not len(batch):  # only positions moved (a pacing source held all of it)
                    continue
                trained_here += len(batch)
                if on_batch is not None:
                    on_batch(batch, self)
                if self.step % cfg.report_every_batches == 0:
                    self._report(trained_here / max(time.monotonic() - started, 1e-9))
                if self.step % cfg.checkpoint_every_batches == 0:
                    self.save_checkpoint()
            drain = getattr(source, "drain", None)  # a pacing source's held negatives: a clean stop trains them
            rest = drain() if drain is not None else None
            if rest is not None:
                self.train_batch(rest)
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
                                    live_ids=self.table.num_live,
                                    unknown_action_types=self.unknown_action_types())
        if self.oracle_validator is not None:
            truth = self.oracle_validator.report()
            for h in self.model_cfg.heads:
                rep[h]["oracle"] = truth[h]  # the ceiling, on the same samples and weights
        self.writer.write(rep)
        if self.validator.history.total % 10 == 0:  # keep the plot fresh (bounded points)
            self.writer.plot(self.validator.history, self.model_cfg.heads)
        aucs = " ".join(f"auc_{h}={_fmt(rep[h]['window']['auc'])}" for h in self.model_cfg.heads)
        log.info("step=%d samples=%d samples_per_s=%.0f live_ids=%d %s", self.step, self.samples,
                 rate, self.table.num_live, aucs)
        return rep


def warmup_cuts(seen: int, n: int, first: int, full: int) -> list[int]:
    """Where a batch of ``n`` samples is cut into steps after the model has seen ``seen``:
    while fewer than ``full`` (the batch size) were seen, a step takes at most max(``first``,
    samples seen before it), so the steps of a new model grow 128, 128, 256, 512 and each is
    scored after the ones before it were learnt; then the whole batch is one step. ``first``
    0: always one step.

    >>> warmup_cuts(0, 1024, 128, 1024), warmup_cuts(1024, 1024, 128, 1024)
    ([0, 128, 256, 512, 1024], [0, 1024])
    """
    cuts = [0]
    while cuts[-1] < n:
        at = cuts[-1]
        young = first and seen + at < full
        cuts.append(min(n, at + max(first, seen + at)) if young else n)
    return cuts


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.4f}"
