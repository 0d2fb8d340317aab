"""The sample streams the learning benchmarks replay: each log or generated stream goes
through the real join core (``streaming.joiner.JoinCore``: waiting window, late
corrections, negative down-sampling), so the labels are the ones the pipeline's joiner
produces, in the order it emits them.

    talkingdata  ../shared/data TalkingData (replay mapping ``talkingdata``): a click is an
                 impression, an install a delayed ``conversion``; head ``conversion``
    taobao       ../shared/data Taobao UserBehavior (mapping ``taobao``): a pv is an
                 impression, a later cart/fav/buy of the same (user, item) an action; the
                 three are rare, so the benchmark relabels any of them as one head ``action``
    generator    ``traffic.generator`` (drifting preferences, lognormal delays, duplicates,
                 late and malformed records), heads click/like/conversion; the generator's
                 own true probabilities (``TrafficGenerator.oracle``) ride along as the
                 oracle, keyed by request id

    stream = build("generator", impressions=100_000)
    stream.samples, stream.heads, stream.oracle   # list[Sample], tuple, {request_id: (H,)} | None

Streams are cached under ``$TMPDIR/streamtrain-bench-streams`` (pickles keyed by the
arguments), so a sweep joins each stream once.
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from schemas import Action, Impression, Sample, codec_for
from schemas.contracts import ACTION_TYPES
from streaming.joiner import END_OF_TIME, JoinCore, JoinerConfig
from streamtrain.paths import SHARED_DATA_DIR
from traffic.generator import Event, GeneratorConfig, TrafficGenerator
from traffic.replay import ReplayPlan

CACHE = Path(tempfile.gettempdir()) / "streamtrain-bench-streams"
STREAMS = ("talkingdata", "taobao", "generator")
WATERMARK_LAG_MS = 30_000  # the generator's out-of-order bound (out_of_order_max_s)


@dataclass
class PeerStream:
    name: str
    samples: list[Sample]
    heads: tuple[str, ...]
    slots: tuple[int, ...]
    dense_dim: int
    oracle: dict[str, np.ndarray] | None = None  # request_id -> true probability per head
    joiner: dict | None = None

    def oracle_probs(self) -> np.ndarray | None:
        """(N, H) true probabilities of the samples in order, or None (real logs)."""
        if self.oracle is None:
            return None
        return np.stack([self.oracle[s.request_id] for s in self.samples])


def join(events: list[Event], cfg: JoinerConfig, action_types: tuple[str, ...]) -> tuple[list[Sample], dict]:
    """Events in arrival order -> the samples the join core emits, in emission order. The
    watermark trails the newest event time by ``WATERMARK_LAG_MS``; malformed records and
    dead letters are counted and left out (the pipeline dead-letters them)."""
    imp_codec, act_codec = codec_for(Impression), codec_for(Action)
    skipped: Counter[str] = Counter()
    out: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        core = JoinCore(replace(cfg, kv_path=f"{tmp}/kv"), action_types=action_types)
        newest = 0

        def keep(outputs: list) -> None:
            for o in outputs:
                if isinstance(o, Sample):
                    out.append(o)
                else:
                    skipped["dead_letter"] += 1

        for k, ev in enumerate(events):
            if ev.key == b"malformed":
                skipped["malformed"] += 1
                continue
            try:
                rec = (imp_codec if ev.topic == "impressions" else act_codec).decode(ev.value)
            except Exception:  # noqa: BLE001 - undecodable bytes are dead letters in the pipeline
                skipped["undecodable"] += 1
                continue
            newest = max(newest, ev.timestamp_ms)
            wm = newest - WATERMARK_LAG_MS
            if isinstance(rec, Impression):
                keep(core.on_impression(rec, wm))
            else:
                keep(core.on_action(rec, wm))
            if k % 64 == 0:
                keep(core.advance(wm))
        keep(core.advance(END_OF_TIME))
        m = core.metrics
        stats = {"impressions": m.impressions, "actions": m.actions, "joined_labels": m.joined_labels,
                 "late_corrections": m.late_corrections, **skipped}
        core.close()
    return out, stats


def _relabel(samples: list[Sample], head: str) -> list[Sample]:
    for s in samples:
        if s.label_types:
            s.label_types = [head]
            s.label_delays_ms = s.label_delays_ms[:1]
    return samples


def build(name: str, impressions: int = 150_000, negative_sample_rate: float = 1.0,
          window_ms: int = 600_000, seed: int = 7) -> PeerStream:
    """One stream, joined (cached). ``impressions`` sizes the generator's stream only."""
    key = hashlib.sha1(repr((name, impressions, negative_sample_rate, window_ms, seed, 3)).encode()).hexdigest()[:12]
    path = CACHE / f"{name}-{key}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    cfg = JoinerConfig(window_ms=window_ms, negative_sample_rate=negative_sample_rate, stall_policy="off")
    if name == "talkingdata":
        events, _, _ = ReplayPlan.from_file("talkingdata").events(SHARED_DATA_DIR)
        samples, stats = join(events, cfg, ("conversion",))
        stream = PeerStream(name, samples, ("conversion",), tuple(range(5)), 0, joiner=stats)
    elif name == "taobao":
        events, _, _ = ReplayPlan.from_file("taobao").events(SHARED_DATA_DIR)
        samples, stats = join(events, cfg, ("cart", "fav", "buy"))
        stream = PeerStream(name, _relabel(samples, "action"), ("action",), tuple(range(3)), 0, joiner=stats)
    elif name == "generator":
        rate = 200.0
        gen = TrafficGenerator(GeneratorConfig(seed=seed, impressions_per_s=rate, duration_s=impressions / rate,
                                               start_ms=1_700_000_000_000), record_oracle=True)
        samples, stats = join(list(gen.events()), cfg, ACTION_TYPES)
        assert gen.oracle is not None
        stream = PeerStream(name, samples, ACTION_TYPES, tuple(range(8)), 3, oracle=gen.oracle, joiner=stats)
    else:
        raise ValueError(f"unknown stream {name!r}; one of {STREAMS}")
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(stream, protocol=5))
    return stream


def main(argv: list[str] | None = None) -> None:
    """Join the streams (or load them from the cache) and print what the joiner made of them."""
    import argparse

    from bench.common import write_result

    p = argparse.ArgumentParser(description="the joined benchmark streams")
    p.add_argument("--generator", type=int, default=150_000, help="generator impressions")
    args = p.parse_args(argv)
    result = {}
    for name in STREAMS:
        s = build(name, impressions=args.generator)
        labels = Counter(t for x in s.samples for t in x.label_types)
        result[name] = {"samples": len(s.samples), "labels": dict(labels), "joiner": s.joiner}
        print(f"{name:12s} {len(s.samples):>8,} samples  labels {dict(labels)}  joiner {s.joiner}")
    print(f"wrote {write_result('peer_streams', result)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
