"""Negative down-sampling end to end, by the one contract of ``Sample.sample_rate``
(``schemas/contracts.py``): a stream with a known click rate (0.05, a like on a fifth of the
clicks) -> the joiner's Flink function (gate, JoinCore per bucket, Sample encoding; driven
directly, no MiniCluster) with ``joiner.negative_sample_rate=0.1`` -> Sample bytes -> the
trainer (default ``neg_sampling="logit"``) -> the serving side (the trainer's rows as
SparseDelta messages through the replica's applier, its dense weights through the wire
format, scored by ``sync.replica.ServingModel`` with ``trainer.scoring.score_batch``).

Before the contract, positives carried 1.0 and the logit correction depended on the label:
the model predicted a 0.05 click rate near 0.085 (calibration ~1.7), and a head whose
negatives include labelled samples (like: a click without a like) was off the other way."""

import numpy as np
import pytest

from schemas import Action, DenseSnapshot, Impression, Sample, SparseDelta, codec_for
from schemas.contracts import ACTION_TYPES, SAMPLE_RATE_CONTRACT
from schemas.feature_ids import feature_id
from streaming.event_time import END_OF_TIME
from streaming.joiner.config import JoinerConfig
from streaming.joiner.join_function import JoinFunction, join_bucket
from sync.applier import DeltaApplier
from sync.delta_builder import build_deltas
from sync.dense import DenseAssembler, chunk_dense, decode_dense, encode_dense
from sync.replica import ServingModel
from sync.store import MemoryRowStore
from tests.helpers.flink_fakes import KeyedHarness
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.source import ListSource
from trainer.trainer import Trainer

CTR, LIKE_GIVEN_CLICK, RATE = 0.05, 0.2, 0.1
T0, STEP_MS, WINDOW_MS = 1_700_000_000_000, 10, 60_000
USERS, ITEMS, BUCKETS = 2000, 300, 8
MODEL = ModelConfig(slots=(0, 1, 2), dim=8, dense_dim=0, hidden=(16,), heads=("click", "like"))


def _traffic(n: int, seed: int, first: int = 0):
    """(impressions, actions, truth) for ``n`` impressions with a fixed click probability."""
    rng = np.random.default_rng(seed)
    imps, acts, truth = [], [], []
    users, items = rng.integers(1, USERS + 1, n), rng.integers(1, ITEMS + 1, n)
    clicks = rng.random(n) < CTR
    likes = clicks & (rng.random(n) < LIKE_GIVEN_CLICK)
    delays = rng.integers(1_000, 30_000, n)
    for k in range(n):
        i, t = first + k, T0 + (first + k) * STEP_MS
        u, it = int(users[k]), int(items[k])
        ids = [feature_id(0, u), feature_id(1, it), feature_id(2, it % 20)]
        imps.append(Impression(f"q{i}", u, it, t, [0, 1, 2], ids, []))
        if clicks[k]:
            acts.append(Action(f"q{i}", u, it, "click", t + int(delays[k])))
        if likes[k]:
            acts.append(Action(f"q{i}", u, it, "like", t + int(delays[k]) + 500))
        truth.append((bool(clicks[k]), bool(likes[k])))
    return imps, acts, np.asarray(truth)


def _join(imps, acts, tmp_path) -> list[Sample]:
    """Every record through JoinFunction in event-time order (watermark = event time), then
    the end of the input; returns the decoded samples."""
    fn = JoinFunction(JoinerConfig(window_ms=WINDOW_MS, negative_sample_rate=RATE,
                                   stall_policy="off", orphan_wait_ms=5_000),
                      str(tmp_path / "kv"), "impressions", "actions", BUCKETS, timer_tick_ms=1000,
                      log_interval_s=1e9)
    h = KeyedHarness(fn)
    events = sorted([(r.event_time_ms, 0, 1, codec_for(Impression).encode(r)) for r in imps]
                    + [(r.event_time_ms, 1, 2, codec_for(Action).encode(r)) for r in acts])
    out = []
    for t, _, input_no, raw in events:
        out += h.element(input_no, raw, key=join_bucket(raw, BUCKETS), timestamp=t, watermark=t - 1)
    out += h.advance(END_OF_TIME)
    h.close()
    main, side = h.split(out)
    assert not side, "nothing of this stream is a dead letter"
    return [codec_for(Sample).decode(raw) for raw in main]


class _Replica:
    """The serving side without Kafka: the trainer's touched rows as SparseDelta messages
    (encoded, decoded, applied atomically per version by the replica's applier), its dense
    weights as DenseSnapshot chunks, scored by ``ServingModel`` (``score_batch``)."""

    def __init__(self) -> None:
        self.applier = DeltaApplier(MemoryRowStore(), "ctr")
        self.applier.start_at(None, range(2))
        self.dense = DenseAssembler("ctr")
        self.model: ServingModel | None = None
        self.version = 0

    def publish(self, trainer: Trainer) -> None:
        self.version += 1
        delta, snap = codec_for(SparseDelta), codec_for(DenseSnapshot)
        for _, msg in build_deltas("ctr", self.version, trainer.collect_updates(), 2, "fp32", 900_000, 0):
            self.applier.apply(delta.decode(delta.encode(msg)))
        assert self.applier.version == self.version
        payload = encode_dense(trainer.dense_state_dict(), trainer.model_config())
        for chunk in chunk_dense("ctr", self.version, 0, payload, chunk_bytes=4096):
            done = self.dense.add(snap.decode(snap.encode(chunk)))
        assert done is not None and done[0] == self.version
        self.model = ServingModel(done[0], *decode_dense(done[1]))

    def predict(self, imps: list[Impression]) -> np.ndarray:
        assert self.model is not None
        batch = self.model.batch([{"slots": i.slots, "ids": i.ids, "dense": i.dense} for i in imps])
        with self.applier.view.snapshot() as snap:
            return self.model.score(batch, snap.lookup)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train on the joined stream; over its second half, publish a version every 10 batches
    and serve a slice of fresh (un-sampled) traffic with each, as a replica would."""
    imps, acts, truth = _traffic(100_000, seed=1)
    samples = _join(imps, acts, tmp_path_factory.mktemp("join"))
    trainer = Trainer(MODEL, TableConfig(dim=8), TrainerConfig(batch_size=64, window=7000,
                                                               device="cpu", dense_lr=1e-2))
    fresh, _, fresh_truth = _traffic(22_000, seed=2, first=10**6)
    replica, served, slices = _Replica(), [], iter(range(0, len(fresh), 2000))
    source = ListSource(samples, MODEL, 64)
    while not source.exhausted:
        trainer.train_batch(source.next_batch())
        if source.at > len(samples) // 2 and trainer.step % 10 == 0:
            replica.publish(trainer)
            lo = next(slices)
            part = fresh[lo:lo + 2000]
            probs = replica.predict(part)
            np.testing.assert_allclose(probs, trainer.predict(BatchBuilder(MODEL).build(
                [Sample(i.request_id, i.user_id, i.item_id, i.event_time_ms, 0, i.slots, i.ids)
                 for i in part])), rtol=1e-4, atol=1e-6)  # the replica scores like the trainer
            served.append((probs, fresh_truth[lo:lo + 2000]))
    return samples, truth, trainer, trainer.validator.report(), served


def test_seam_every_joined_sample_carries_the_policy_rate(trained):
    samples, truth, _, _, _ = trained
    assert "EVERY sample" in SAMPLE_RATE_CONTRACT
    pos = [s for s in samples if s.label_types]
    neg = [s for s in samples if not s.label_types]
    assert len(pos) == int(truth[:, 0].sum())  # positives are all kept ...
    assert abs(len(neg) / (len(truth) - len(pos)) - RATE) < 0.01  # ... negatives at r
    assert {s.sample_rate for s in samples} == {np.float32(RATE)}  # ... and every one says r


def test_seam_progressive_validation_is_calibrated_on_the_unsampled_stream(trained):
    _, truth, _, report, _ = trained
    click, like = report["click"]["window"], report["like"]["window"]
    assert abs(click["calibration"] - 1) < 0.05, click
    assert abs(like["calibration"] - 1) < 0.12, like
    # un-sampled: the observed rates are the stream's, not the down-sampled stream's (~0.34)
    assert abs(click["pos_rate"] / CTR - 1) < 0.1 and abs(like["pos_rate"] / (CTR * LIKE_GIVEN_CLICK) - 1) < 0.2


def test_seam_serving_predictions_match_the_known_rate(trained):
    """Mean prediction over everything the replica served (all its versions) / the rate."""
    served = trained[4]
    assert len(served) >= 8
    probs = np.concatenate([p for p, _ in served])
    observed = np.concatenate([t for _, t in served]).mean(0)
    click, like = probs.mean(0)
    assert abs(click / CTR - 1) < 0.05, click
    assert abs(like / (CTR * LIKE_GIVEN_CLICK) - 1) < 0.1, like
    assert abs(click / observed[0] - 1) < 0.08 and abs(like / observed[1] - 1) < 0.15, observed
    assert MODEL.heads == ACTION_TYPES[:2]
