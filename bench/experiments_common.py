"""Serving in event time, for the Monolith experiments that judge what was *served*
(``bench.experiments_sync``, ``_batch``, ``_delay``): the real trainer learns from the joined
samples as the joiner emits them, its changes travel to serving replicas through the real
sparse delta path, and every impression is scored, at its impression time, by each replica
as it stood then.

The timeline runs in ticks of event time (``SimConfig.tick_ms``). At tick T:

1. the trainer trains (``Trainer.train_batch``, batches of at most ``trainer.batch_size``)
   on every sample the joiner emitted up to T (``Sample.emit_time_ms <= T``): a trainer that
   cuts a partial batch when no full one came, as the pipeline's source does;
2. its touched and evicted rows (``Trainer.collect_updates``) become one version of
   ``SparseDelta`` messages (``sync.delta_builder.build_deltas``, one shard, fp32: the
   publisher's default dtype) queued on every replica; a replica whose interval divides
   T - start applies its queue (``sync.applier.DeltaApplier`` into a
   ``sync.store.MemoryRowStore``) and takes the dense weights (``sync.replica.ServingModel``)
   — the publisher, Kafka and the consumer are left out, the messages and their application
   are the ones serving runs;
3. each replica scores the impressions of (its previous sync, T] with the state it served
   then (``ServingModel.score`` over the applier's pinned view: the replica's code path).

Impressions are the final (non-correction) samples, sorted by event time, labelled with
every label their request eventually got (final sample and late corrections together):
what serving is judged on, whatever the training policy saw.

    sim = serve(stream, imps, SimConfig(replicas=(("5s", 5_000, None),)))
    sim.preds["5s"]    # (N, H), in the order of imps.samples
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch

from bench.peer_streams import CACHE, PeerStream, join
from bench.trainer_peers import configs, parse_sets
from schemas import FLAG_LATE_CORRECTION, Sample, SparseDelta
from schemas.contracts import ACTION_TYPES
from streaming.joiner import JoinerConfig
from streamtrain.paths import SHARED_DATA_DIR
from sync.applier import DeltaApplier
from sync.delta_builder import build_deltas
from sync.replica import ServingModel
from sync.store import MemoryRowStore
from traffic.generator import Event, GeneratorConfig, TrafficGenerator
from traffic.replay import ReplayPlan
from trainer.batch import BatchBuilder
from trainer.trainer import Trainer

START_MS = 1_700_000_000_000
HOUR_MS = 3_600_000
MODEL = "ctr"


# -- streams spanning hours or days ---------------------------------------------------------
@lru_cache(maxsize=2)
def _events(name: str, hours: float, rate: float, seed: int) -> tuple[list[Event], dict | None]:
    if name == "talkingdata":
        events, _, _ = ReplayPlan.from_file("talkingdata").events(SHARED_DATA_DIR)
        return events, None
    gen = TrafficGenerator(GeneratorConfig(seed=seed, impressions_per_s=rate, duration_s=hours * 3600,
                                           start_ms=START_MS), record_oracle=True)
    events = list(gen.events())
    return events, gen.oracle


def span_stream(name: str, hours: float = 0.0, rate: float = 0.0, window_ms: int = 600_000,
                seed: int = 7) -> PeerStream:
    """The generator's drifting stream over ``hours`` of event time at ``rate`` impressions/s
    (its other settings the defaults), or the TalkingData log (3 days; ``hours``/``rate``
    unused), joined by the real join core with a ``window_ms`` window (cached)."""
    if name == "talkingdata":
        hours, rate = 0.0, 0.0  # one log, whatever the generator's span
    key = hashlib.sha1(repr((name, hours, rate, window_ms, seed, 1)).encode()).hexdigest()[:12]
    path = CACHE / f"span-{name}-{key}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    events, oracle = _events(name, hours, rate, seed)
    cfg = JoinerConfig(window_ms=window_ms, stall_policy="off")
    if name == "talkingdata":
        samples, stats = join(events, cfg, ("conversion",))
        stream = PeerStream(name, samples, ("conversion",), tuple(range(5)), 0, joiner=stats)
    else:
        samples, stats = join(events, cfg, ACTION_TYPES)
        stream = PeerStream(name, samples, ACTION_TYPES, tuple(range(8)), 3, oracle=oracle, joiner=stats)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(stream, protocol=5))
    return stream


def without_late(stream: PeerStream) -> PeerStream:
    """The stream with its late corrections left out (a label after the window is lost)."""
    kept = [s for s in stream.samples if not s.flags & FLAG_LATE_CORRECTION]
    return replace(stream, samples=kept)


@dataclass
class Impressions:
    """What serving scores: one sample per impression, by event time, with final labels."""

    samples: list[Sample]
    labels: np.ndarray  # (N, H) every label the request eventually got
    event_ms: np.ndarray  # (N,)
    oracle: np.ndarray | None  # (N, H) the generator's true probabilities, or None

    def since(self, start_ms: int) -> np.ndarray:
        return self.event_ms >= start_ms


def impressions(stream: PeerStream) -> Impressions:
    final = sorted((s for s in stream.samples if not s.flags & FLAG_LATE_CORRECTION),
                   key=lambda s: s.event_time_ms)
    got: dict[str, set[str]] = {}
    for s in stream.samples:
        got.setdefault(s.request_id, set()).update(s.label_types)
    y = np.array([[h in got[s.request_id] for h in stream.heads] for s in final], np.float32)
    oracle = (np.stack([stream.oracle[s.request_id] for s in final]) if stream.oracle is not None else None)
    return Impressions(final, y, np.array([s.event_time_ms for s in final], np.int64), oracle)


# -- replicas fed through the delta path ----------------------------------------------------
class Replica:
    """A serving replica that applies the queued deltas and takes the dense weights every
    ``interval_ms`` of event time, and never after ``until_ms`` (frozen) when set."""

    def __init__(self, name: str, interval_ms: int, until_ms: int | None = None) -> None:
        self.name, self.interval_ms, self.until_ms = name, interval_ms, until_ms
        self.store = MemoryRowStore()
        self.applier = DeltaApplier(self.store, MODEL)
        self.applier.start_at(None, range(1))
        self.queue: list[SparseDelta] = []
        self.model: ServingModel | None = None
        self.scored = 0  # impressions scored so far (a prefix of the impressions)
        self.syncs = 0

    def frozen(self, now_ms: int) -> bool:
        return self.until_ms is not None and now_ms > self.until_ms

    def receive(self, deltas: list[SparseDelta], now_ms: int) -> None:
        if not self.frozen(now_ms):
            self.queue.extend(deltas)

    def due(self, now_ms: int, start_ms: int) -> bool:
        return not self.frozen(now_ms) and (now_ms - start_ms) % self.interval_ms == 0

    def sync(self, version: int, model_config: dict, dense: dict[str, torch.Tensor]) -> None:
        for d in self.queue:
            self.applier.apply(d)
        self.queue.clear()
        self.model = ServingModel(version, model_config, dense)
        self.syncs += 1

    def score(self, samples: list[Sample]) -> np.ndarray:
        assert self.model is not None  # every replica syncs at the start
        with self.applier.view.snapshot() as snap:
            return self.model.score(self.model.builder.build(samples),
                                    snap.lookup)


@dataclass(frozen=True)
class SimConfig:
    """``replicas``: (name, sync interval ms, frozen after this much event time or None)."""

    tick_ms: int = 5_000
    replicas: tuple[tuple[str, int, int | None], ...] = (("5s", 5_000, None),)
    sets: tuple[str, ...] = ()  # section.key=value for the trainer, as bench.trainer_peers


@dataclass
class SimResult:
    preds: dict[str, np.ndarray]  # replica -> (N, H) served predictions, impression order
    progressive: dict  # the trainer's own report (scored before trained, on what it trained)
    trained: int
    ticks: int
    versions: int
    seconds: float
    syncs: dict[str, int] = field(default_factory=dict)


def _batches(samples: list[Sample], start: int, stop: int, size: int) -> Iterator[list[Sample]]:
    for at in range(start, stop, size):
        yield samples[at: min(stop, at + size)]


def serve(stream: PeerStream, imps: Impressions, cfg: SimConfig, start_ms: int | None = None) -> SimResult:
    """Run the timeline (module docstring) from ``start_ms`` (the first impression's time
    rounded down to a tick) to the last impression."""
    torch.manual_seed(0)
    model, table, tcfg = configs(stream, parse_sets(list(cfg.sets)))
    trainer = Trainer(model, table, tcfg)
    builder = BatchBuilder(model)
    samples = stream.samples
    emit = np.array([s.emit_time_ms for s in samples], np.int64)
    emit = np.maximum.accumulate(emit)  # emission order is what counts; times never go back
    start = start_ms if start_ms is not None else int(imps.event_ms[0]) // cfg.tick_ms * cfg.tick_ms
    end = int(imps.event_ms[-1]) + cfg.tick_ms
    reps = [Replica(n, iv, None if until is None else start + until) for n, iv, until in cfg.replicas]
    preds = {r.name: np.zeros((len(imps.samples), len(model.heads)), np.float32) for r in reps}
    model_config = trainer.model_config()
    done, version, ticks = 0, 0, 0
    t0 = time.perf_counter()
    for now in range(start, end + cfg.tick_ms, cfg.tick_ms):
        ticks += 1
        upto = int(np.searchsorted(emit, now, side="right"))
        for chunk in _batches(samples, done, upto, tcfg.batch_size):
            trainer.train_batch(builder.build(chunk))
        trained = upto > done
        done = upto
        if trained or version == 0:
            version += 1
            deltas = [d for _, d in build_deltas(MODEL, version, trainer.collect_updates(), 1, "fp32",
                                                 900_000, now)]
            for r in reps:
                r.receive(deltas, now)
        # a replica whose state would not change has nothing to do (it scores later, same state)
        due = [r for r in reps if r.model is None or (r.due(now, start) and r.model.version != version)]
        if not due:
            continue
        dense = trainer.dense_state_dict()
        upto_imp = int(np.searchsorted(imps.event_ms, now, side="left"))  # event time < now
        for r in due:
            if r.model is not None and upto_imp > r.scored:
                preds[r.name][r.scored:upto_imp] = r.score(imps.samples[r.scored:upto_imp])
                r.scored = upto_imp
            r.sync(version, model_config, dense)
    for r in reps:  # what is left: scored by the last state each replica served
        for at in range(r.scored, len(imps.samples), 20_000):
            chunk = imps.samples[at: at + 20_000]
            preds[r.name][at: at + len(chunk)] = r.score(chunk)
        r.scored = len(imps.samples)
    return SimResult(preds, trainer.validator.report(), done, ticks, version,
                     round(time.perf_counter() - t0, 1), {r.name: r.syncs for r in reps})


def save_figure(fig, axes, path, legend_size: int = 8, grid_axis: str = "both") -> None:
    """Every experiment plot ends the same way: a legend and grid on each axis, then the
    PNG written and the figure closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.legend(fontsize=legend_size)
        ax.grid(alpha=0.3, axis=grid_axis)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_only(name: str, argv: list[str] | None) -> None:
    """``streamtrain bench experiments_<name> [args]`` = ``streamtrain bench experiments --only <name> [args]``."""
    from bench.experiments import main as run_experiments

    run_experiments(["--only", name, *(argv or [])])
