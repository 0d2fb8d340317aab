"""Configs of the trainer, one frozen dataclass per part, loaded once at the edge.

    [embedding]  TableConfig   collisionless table: dim, admission, expiry, sparse optimizer
    [model]      ModelConfig   slots -> fields, dense width, heads, interaction, MLP
    [trainer]    TrainerConfig batching, dense optimizer, loss corrections, validation,
                               checkpoints, bounds (max samples, idle timeout)
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.contracts import ACTION_TYPES
from streamtrain.config import check
from streamtrain.kafka_io import ISOLATION_LEVELS

INTERACTIONS = ("fm", "dcn")
POOLINGS = ("mean", "sum")
SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adagrad")
NEG_SAMPLING = ("logit", "weight", "none")
DELAYED_FEEDBACK = ("fn_weighting", "none")


@dataclass(frozen=True)
class TableConfig:
    """One collisionless embedding table (section ``[embedding]``)."""

    dim: int = 16
    admit_count: int = 1          # an id gets a trainable row once seen this many times
    admit_prob: float = 1.0       # ... and then with this probability per sighting
    expiry_ms: int = 0            # event-time TTL since last sighting; 0 = never expire
    init_std: float = 0.01
    optimizer: str = "rowwise_adagrad"
    lr: float = 0.1
    eps: float = 1e-8
    # > 0 so that a row's first steps scale with its gradient (with 0 the first Adagrad step
    # is lr whatever the gradient: a rare head's ids seen once in a negative all dropped by lr,
    # which biased predictions low). Row gradients are of the batch-mean loss, ~1e-3..1e-5,
    # so 1e-7 sits between a negative's and a positive's squared gradient (bench.trainer_peers)
    initial_accumulator: float = 1e-7
    initial_capacity: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        check(1 <= self.dim <= 4096, "embedding.dim", self.dim, "1..4096")
        check(self.admit_count >= 1, "embedding.admit_count", self.admit_count, ">= 1")
        check(0.0 < self.admit_prob <= 1.0, "embedding.admit_prob", self.admit_prob, "(0, 1]")
        check(self.expiry_ms >= 0, "embedding.expiry_ms", self.expiry_ms, ">= 0 (0 = never)")
        check(self.init_std >= 0.0, "embedding.init_std", self.init_std, ">= 0")
        check(self.optimizer in SPARSE_OPTIMIZERS, "embedding.optimizer", self.optimizer,
              " | ".join(SPARSE_OPTIMIZERS))
        check(self.lr > 0.0, "embedding.lr", self.lr, "> 0")
        check(self.eps > 0.0, "embedding.eps", self.eps, "> 0")
        check(self.initial_accumulator >= 0.0, "embedding.initial_accumulator",
              self.initial_accumulator, ">= 0")
        check(self.initial_capacity >= 2, "embedding.initial_capacity", self.initial_capacity, ">= 2")


@dataclass(frozen=True)
class ModelConfig:
    """The CTR model (section ``[model]``). ``slots`` lists the Sample slot numbers that
    become fields, in field order; ids of other slots are ignored (and counted). The
    defaults fit the traffic generator's samples (8 slots, 3 dense values, one head per
    declared action type: ``schemas/contracts.py`` ACTION_TYPES); a sample whose dense width
    differs goes to the dead-letter topic."""

    slots: tuple[int, ...] = tuple(range(8))
    dim: int = 16
    dense_dim: int = 3
    heads: tuple[str, ...] = ACTION_TYPES
    interaction: str = "fm"
    cross_layers: int = 2
    hidden: tuple[int, ...] = (256, 128)
    # first-order (wide) term: component 0 of each field's embedding is also that field's
    # linear weight, summed into every head's logit (DeepFM's first-order part, no extra table)
    wide: bool = True
    # how a field with several ids in one sample (the last-N items) becomes one vector: the
    # mean of their rows, or the sum (a user with 10 recent items then weighs 10x in that
    # field's wide weight and interactions; on two demo runs replayed, bench/pacing_replay.py,
    # mean gave served click AUC +0.012 and +0.016 over sum). Fields of one id are the same
    # either way
    pooling: str = "mean"
    # what an id without a row (unseen, not yet admitted, evicted) reads, in the trainer and
    # in every replica alike: zeros, or for the slots listed here the slot's *mean row*, a
    # running mean of its rows that the trainer keeps as a row of the table under
    # ``trainer.scoring.default_row_id(slot)`` and publishes like any row (new rows of the
    # slot start there too). For slots whose new ids are like the old ones (time buckets):
    # the generator's hour slot (6) read as zeros in each hour's first ~10 minutes, before its
    # samples reached the trainer, served conversion at 12x its rate. Not for ids whose
    # newness predicts (TalkingData's ips: served AUC -0.006 with every slot); docs/sync.md
    field_mean_slots: tuple[int, ...] = ()
    # every head's bias starts at logit(init_rate): a rare-event prior instead of p = 0.5
    init_rate: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        check(len(self.slots) >= 1, "model.slots", self.slots, "at least one slot")
        check(len(set(self.slots)) == len(self.slots), "model.slots", self.slots, "distinct slots")
        check(1 <= self.dim <= 4096, "model.dim", self.dim, "1..4096")
        check(self.dense_dim >= 0, "model.dense_dim", self.dense_dim, ">= 0")
        check(len(self.heads) >= 1 and len(set(self.heads)) == len(self.heads), "model.heads",
              self.heads, "one or more distinct action types")
        check(self.interaction in INTERACTIONS, "model.interaction", self.interaction,
              " | ".join(INTERACTIONS))
        check(self.pooling in POOLINGS, "model.pooling", self.pooling, " | ".join(POOLINGS))
        mean_slots = set(self.field_mean_slots)
        check(mean_slots <= set(self.slots) and len(mean_slots) == len(self.field_mean_slots),
              "model.field_mean_slots", self.field_mean_slots, "distinct slots of model.slots")
        check(0 <= self.cross_layers <= 8, "model.cross_layers", self.cross_layers, "0..8")
        check(all(h >= 1 for h in self.hidden), "model.hidden", self.hidden, "positive widths")
        check(0.0 < self.init_rate < 1.0, "model.init_rate", self.init_rate, "a probability in (0, 1)")

    def to_dict(self) -> dict:
        return {"slots": list(self.slots), "dim": self.dim, "dense_dim": self.dense_dim,
                "heads": list(self.heads), "interaction": self.interaction,
                "cross_layers": self.cross_layers, "hidden": list(self.hidden), "wide": self.wide,
                "pooling": self.pooling, "field_mean_slots": list(self.field_mean_slots),
                "init_rate": self.init_rate, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        for k in ("slots", "heads", "hidden", "field_mean_slots"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop (section ``[trainer]``)."""

    batch_size: int = 1024
    # while the model has seen fewer than batch_size samples, a batch is trained in steps of
    # at most max(this, samples seen before the step): 128, 128, 256, 512, then whole batches,
    # so the first labels move the model before the next samples are scored; 0 = off
    warmup_step_samples: int = 128
    max_wait_ms: int = 200          # flush a partial batch after this long without a full one
    prefetch_batches: int = 4
    device: str = "auto"            # auto | cpu | cuda
    dense_lr: float = 1e-3
    neg_sampling: str = "logit"     # correction for sample_rate < 1
    delayed_feedback: str = "fn_weighting"
    stall_negative_weight: float = 0.1
    expire_every_batches: int = 50
    # base-rate tracking: after each batch every head's bias moves by the log ratio of the
    # observed to the predicted positives of the last ~this many samples (decayed sums of
    # the progressive scores, so it uses only labels already scored); 0 = off
    bias_tracking_samples: int = 20000
    # model.field_mean_slots: each such slot's mean row moves toward the mean of the slot's
    # rows in each step (distinct ids, after the update) with gain 1 - exp(-B / this)
    field_mean_samples: int = 20000
    # negative pacing (trainer/pacing.py): labelled samples train at once, negatives are held
    # and released in the stream's proportion. Off: on a live early-emit run replayed in the
    # order it reached the trainer (bench/pacing_replay.py), the served model was worse with it
    # (click AUC 0.651 vs 0.663, calibration 1.47 vs 1.00): held negatives bias it high
    pacing: bool = False
    pacing_max_hold_ms: int = 10000  # a negative waits at most this long (wall clock)
    pacing_max_held: int = 50000     # ... and at most this many wait
    pacing_samples: int = 20000      # the proportion: decayed counts over about this many samples
    window: int = 20000             # progressive-validation sliding window, samples
    report_every_batches: int = 20
    # reports the validator keeps for the plot, per trainer process (each holds every head):
    # the newest half in full, older ones thinned to evenly spaced points (the first kept)
    history_points: int = 1000
    metrics_path: str = ""          # JSON lines; "" = none
    plot_path: str = ""             # PNG written at close; "" = none
    metrics_port: int = 0           # Prometheus /metrics on this port (trainer.prometheus); 0 = off
    metrics_host: str = "0.0.0.0"   # address the metrics port listens on
    checkpoint_dir: str = ""        # "" = no checkpoints
    checkpoint_every_batches: int = 100
    keep_checkpoints: int = 2
    max_samples: int = 0            # stop after this many samples; 0 = run forever
    idle_timeout_s: float = 0.0     # stop after this long without a sample; 0 = never
    idle_warn_s: float = 30.0       # warn (once per idle period) after this long without one; 0 = never
    # read_committed: only samples of committed transactions (what joiner exactly_once
    # relies on); read_uncommitted also trains on samples of aborted ones
    isolation_level: str = "read_committed"
    group_id: str = "streamtrain-trainer"
    model_name: str = "ctr"
    seed: int = 0
    # freshness traces (trainer.freshness) kept per published version, a uniform sample of
    # the actions trained on; they travel to the replicas in a header (sync.freshness); 0 = off
    freshness_traces: int = 64

    def __post_init__(self) -> None:
        check(1 <= self.batch_size <= 1 << 20, "trainer.batch_size", self.batch_size, "1..1048576")
        check(self.max_wait_ms >= 1, "trainer.max_wait_ms", self.max_wait_ms, ">= 1")
        check(self.prefetch_batches >= 1, "trainer.prefetch_batches", self.prefetch_batches, ">= 1")
        check(self.device in ("auto", "cpu", "cuda"), "trainer.device", self.device, "auto | cpu | cuda")
        check(self.dense_lr > 0, "trainer.dense_lr", self.dense_lr, "> 0")
        check(self.neg_sampling in NEG_SAMPLING, "trainer.neg_sampling", self.neg_sampling,
              " | ".join(NEG_SAMPLING))
        check(self.delayed_feedback in DELAYED_FEEDBACK, "trainer.delayed_feedback",
              self.delayed_feedback, " | ".join(DELAYED_FEEDBACK))
        check(0.0 <= self.stall_negative_weight <= 1.0, "trainer.stall_negative_weight",
              self.stall_negative_weight, "0..1")
        check(self.expire_every_batches >= 1, "trainer.expire_every_batches",
              self.expire_every_batches, ">= 1")
        check(self.warmup_step_samples >= 0, "trainer.warmup_step_samples", self.warmup_step_samples,
              ">= 0 (0 = off)")
        check(self.bias_tracking_samples >= 0, "trainer.bias_tracking_samples",
              self.bias_tracking_samples, ">= 0 (0 = off)")
        check(self.field_mean_samples >= 1, "trainer.field_mean_samples", self.field_mean_samples, ">= 1")
        check(self.window >= 100, "trainer.window", self.window, ">= 100")
        check(self.pacing_max_hold_ms >= 0, "trainer.pacing_max_hold_ms", self.pacing_max_hold_ms, ">= 0")
        check(self.pacing_max_held >= 0, "trainer.pacing_max_held", self.pacing_max_held, ">= 0")
        check(self.pacing_samples >= 100, "trainer.pacing_samples", self.pacing_samples, ">= 100")
        check(self.report_every_batches >= 1, "trainer.report_every_batches",
              self.report_every_batches, ">= 1")
        check(self.checkpoint_every_batches >= 1, "trainer.checkpoint_every_batches",
              self.checkpoint_every_batches, ">= 1")
        check(self.keep_checkpoints >= 1, "trainer.keep_checkpoints", self.keep_checkpoints, ">= 1")
        check(self.max_samples >= 0, "trainer.max_samples", self.max_samples, ">= 0 (0 = unbounded)")
        check(self.idle_timeout_s >= 0, "trainer.idle_timeout_s", self.idle_timeout_s, ">= 0 (0 = never)")
        check(self.idle_warn_s >= 0, "trainer.idle_warn_s", self.idle_warn_s, ">= 0 (0 = never)")
        check(0 <= self.metrics_port <= 65535, "trainer.metrics_port", self.metrics_port, "0..65535 (0 = off)")
        check(self.history_points >= 10, "trainer.history_points", self.history_points, ">= 10")
        check(self.isolation_level in ISOLATION_LEVELS, "trainer.isolation_level",
              self.isolation_level, " | ".join(ISOLATION_LEVELS))
        check(0 <= self.freshness_traces <= 1024, "trainer.freshness_traces",
              self.freshness_traces, "0..1024 traces per published version (0 = off)")
