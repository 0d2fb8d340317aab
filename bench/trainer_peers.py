"""Peers on the same joined streams, in the same run, same samples in the same order:
streamtrain's trainer (``Trainer.train_batch``, the step the pipeline runs, default config
except the stream's slots/heads), Vowpal Wabbit (logistic loss, plain and with all
quadratic namespace interactions ``-q ::``), River's logistic regression with a tuned
optimizer, the base rate (every head predicts the running rate of the samples before it,
the Krichevsky-Trofimov estimate (positives + 1/2) / (samples + 1): a learner that learns
nothing else; always run, it costs nothing), and on the generator's stream the generator's
own true probabilities (the oracle). Every peer is scored before it learns each sample
(progressive validation) and judged by the same function on the same (label, weight)
pairs: AUC, logloss, normalized entropy (NE), calibration, samples/s, plus NE of the first
reported window, calibration after warm-up and AUC after 100k samples.

    .venv/bin/python -m bench.trainer_peers [--streams talkingdata,taobao,generator]
        [--generator 150000] [--peers streamtrain,vw,vw_q,river] [--tag NAME]
        [--set trainer.dense_lr=0.003 --set embedding.lr=0.1 ...]

Streams: ``bench.peer_streams`` (through the real join core). Per stream the primary head
(TalkingData ``conversion``, Taobao ``action``, generator ``click``) is what VW and River
learn; streamtrain learns every head and reports each. Writes
``bench/results/trainer_peers[_TAG].json``.

VW flags, and why: ``--loss_function logistic --link logistic`` (probabilities, log loss);
``-b 24`` (16M weights: collisions negligible for these vocabularies, so VW is not handicapped
by hashing); its defaults otherwise (adaptive, normalized, invariant updates, lr 0.5,
power_t 0.5), the configuration VW users run first; ``--vw-lr`` overrides the lr. Each slot is a
namespace (``-q ::`` crosses every pair of them); the dense values of the generator go to
one namespace ``x`` as numeric features. Weighted samples (down-sampled negatives, masked
heads of late corrections) carry their importance weight.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import string
import time

import numpy as np
import torch

from bench.common import write_result
from bench.peer_streams import STREAMS, PeerStream, build
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.embedding import EmbeddingTable
from trainer.metrics import EPS, auc
from trainer.trainer import Trainer
from trainer.weighting import LossWeighting

FIRST_WINDOW = 20480  # the first report of the default trainer: report_every_batches x batch_size
WARMUP = 20480
NAMESPACES = string.ascii_lowercase
WINDOW_MS = 600_000  # the join window build() uses by default


# -- judging --------------------------------------------------------------------------------
def summarize(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict:
    """AUC, logloss, NE, calibration of predictions ``p`` for labels ``y`` with weights ``w``."""
    keep = w > 0
    p, y, w = np.clip(p[keep].astype(np.float64), EPS, 1 - EPS), y[keep], w[keep]
    if not len(p) or w.sum() <= 0:
        return {"auc": None, "logloss": None, "ne": None, "calibration": None, "n": 0}
    ll = float((w * -(y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())
    rate = float((w * y).sum() / w.sum())
    base = -(rate * np.log(max(rate, EPS)) + (1 - rate) * np.log(max(1 - rate, EPS)))
    a = auc(p, y, w)
    return {"auc": None if a != a else round(a, 4), "logloss": round(ll, 5),
            "ne": round(ll / base, 4) if base > 0 else None,
            "calibration": round(float((w * p).sum() / (w * y).sum()), 4) if (w * y).sum() > 0 else None,
            "n": int(len(p))}


def judge(p: np.ndarray, y: np.ndarray, w: np.ndarray, steady_end: int | None = None) -> dict:
    """``steady_end``: where the drained tail starts (``steady_end``), left out of
    ``calibration_steady``."""
    out = summarize(p, y, w)
    out["ne_first_window"] = summarize(p[:FIRST_WINDOW], y[:FIRST_WINDOW], w[:FIRST_WINDOW])["ne"]
    out["calibration_after_warmup"] = summarize(p[WARMUP:], y[WARMUP:], w[WARMUP:])["calibration"]
    if steady_end is not None:
        sl = slice(WARMUP, steady_end)
        out["calibration_steady"] = summarize(p[sl], y[sl], w[sl])["calibration"]
    if len(p) > 100_000:
        out["after_100k"] = summarize(p[100_000:], y[100_000:], w[100_000:])
    return out


def labels_and_weights(stream: PeerStream, cfg: TrainerConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, H) labels, evaluation weights (the trainer's validator's) and training weights."""
    builder = BatchBuilder(ModelConfig(slots=stream.slots, dense_dim=stream.dense_dim, heads=stream.heads))
    batch = builder.build(stream.samples)
    ev, tr = LossWeighting(cfg, len(stream.heads)).base(batch)
    if cfg.neg_sampling == "none":  # judged on the un-sampled stream all the same (what serving faces)
        ev = LossWeighting(dataclasses.replace(cfg, neg_sampling="logit"), len(stream.heads)).base(batch)[0]
    if cfg.neg_sampling == "logit":  # the other peers have no logit offset: importance weights
        tr = LossWeighting(dataclasses.replace(cfg, neg_sampling="weight"), len(stream.heads)).base(batch)[1]
    return batch.labels, ev, tr


def steady_end(stream: PeerStream) -> int:
    """Index of the first sample emitted after the last impression's window closed: from
    there on the stream is the drain of a finite input (the actions still scheduled, up to
    hours late, all arrive as late corrections with no new impression between them), which
    no endless stream has. Calibration of a head with long delays is judged before it."""
    last = max(s.event_time_ms for s in stream.samples) + WINDOW_MS
    late = [k for k, s in enumerate(stream.samples) if s.emit_time_ms > last]
    return late[0] if late else len(stream.samples)


# -- peers ----------------------------------------------------------------------------------
def run_base_rate(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, H) predictions: per head, the Krichevsky-Trofimov estimate (sum(w y) + 1/2) /
    (sum(w) + 1) over the samples before each one, weighted as the other peers learn (``w``:
    the training weights). Its NE sits above 1 by the cost of learning the rate, ~0.5 ln(n)
    / (n H) over n samples of entropy H (minimum description length)."""
    y, w = np.asarray(y, np.float64), np.asarray(w, np.float64)
    pos, n = np.cumsum(w * y, axis=0) - w * y, np.cumsum(w, axis=0) - w  # sums before each sample
    return (pos + 0.5) / (n + 1.0)


def run_streamtrain(stream: PeerStream, model: ModelConfig, table: TableConfig, cfg: TrainerConfig,
                    embedding: EmbeddingTable | None = None) -> tuple:
    trainer = Trainer(model, table, cfg, embedding=embedding)
    builder = BatchBuilder(model)
    preds = []
    t0 = time.perf_counter()
    for at in range(0, len(stream.samples), cfg.batch_size):
        preds.append(trainer.train_batch(builder.build(stream.samples[at: at + cfg.batch_size])))
    dt = time.perf_counter() - t0
    return np.concatenate(preds), {"samples_per_s": round(len(stream.samples) / dt),
                                   "live_ids": trainer.table.num_live,
                                   "table_bytes": getattr(trainer.table, "memory_bytes", lambda: None)()}


def _vw_lines(stream: PeerStream) -> list[str]:
    """The feature part of each sample's VW example (everything after the label)."""
    slot_ns = {s: NAMESPACES[i] for i, s in enumerate(stream.slots)}
    lines = []
    for s in stream.samples:
        by_ns: dict[str, list[str]] = {}
        for slot, fid in zip(s.slots, s.ids):
            if slot in slot_ns:
                by_ns.setdefault(slot_ns[slot], []).append(f"f{fid & 0xFFFFFFFFFFFF:x}")
        parts = [f"|{ns} " + " ".join(v) for ns, v in by_ns.items()]
        if s.dense:
            parts.append("|x " + " ".join(f"d{k}:{v:.5g}" for k, v in enumerate(s.dense)))
        lines.append(" ".join(parts))
    return lines


def run_vw(stream: PeerStream, y: np.ndarray, w: np.ndarray, flags: str) -> tuple:
    from vowpalwabbit import Workspace

    vw = Workspace(f"--loss_function logistic --link logistic -b 24 --quiet {flags}")
    preds = np.zeros(len(y))
    t0 = time.perf_counter()
    lines = _vw_lines(stream)  # formatting counts toward VW's time: it is its input path
    for k, feats in enumerate(lines):
        ex = vw.parse(f"{1 if y[k] > 0.5 else -1} {w[k]:.6g} {feats}")
        preds[k] = vw.predict(ex)
        if w[k] > 0:
            vw.learn(ex)
        vw.finish_example(ex)
    dt = time.perf_counter() - t0
    vw.finish()
    return preds, {"samples_per_s": round(len(y) / dt), "flags": flags}


def run_river(stream: PeerStream, y: np.ndarray, w: np.ndarray, limit: int) -> tuple:
    """On the first ``limit`` samples only (River runs ~1k samples/s here)."""
    from river import linear_model, optim

    y, w = y[:limit], w[:limit]
    # tuned on TalkingData's first 20k (AdaGrad lr 0.05..0.5, intercept lr 0.01..0.1)
    model = linear_model.LogisticRegression(optimizer=optim.AdaGrad(0.1), intercept_lr=0.05, l2=0.0)
    preds = np.zeros(len(y))
    t0 = time.perf_counter()
    for k, s in enumerate(stream.samples[:limit]):
        x = {f"{slot}:{fid}": 1.0 for slot, fid in zip(s.slots, s.ids)}
        x.update({f"d{j}": v for j, v in enumerate(s.dense)})
        preds[k] = model.predict_proba_one(x)[True]
        if w[k] > 0:
            model.learn_one(x, bool(y[k] > 0.5), w=float(w[k]))
    dt = time.perf_counter() - t0
    return preds, {"samples_per_s": round(len(y) / dt)}


# -- the run --------------------------------------------------------------------------------
def parse_sets(pairs: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {"embedding": {}, "model": {}, "trainer": {}}
    for pair in pairs:
        key, _, value = pair.partition("=")
        section, _, name = key.partition(".")
        v: object = value
        for cast in (int, float):
            try:
                v = cast(value)
                break
            except ValueError:
                pass
        if "," in value:
            v = tuple(int(x) for x in value.split(",") if x)
        out[section][name] = v
    return out


def configs(stream: PeerStream, sets: dict[str, dict]) -> tuple[ModelConfig, TableConfig, TrainerConfig]:
    model = ModelConfig(**({"slots": stream.slots, "dense_dim": stream.dense_dim, "heads": stream.heads}
                           | sets["model"]))
    table = TableConfig(**({"dim": model.dim} | sets["embedding"]))
    cfg = TrainerConfig(**({"device": "cpu"} | sets["trainer"]))
    return model, table, cfg


def compare(stream: PeerStream, peers: list[str], sets: dict[str, dict], vw_lr: str,
            river_max: int = 20_000) -> dict:
    model, table, cfg = configs(stream, sets)
    y, ev_w, tr_w = labels_and_weights(stream, cfg)
    out: dict = {"samples": len(stream.samples), "heads": list(stream.heads),
                 "positives": y.sum(0).astype(int).tolist(), "joiner": stream.joiner}
    primary = 0
    end = steady_end(stream)
    out["steady_end"] = end
    oracle = stream.oracle_probs()
    if oracle is not None:
        out["oracle"] = {h: judge(oracle[:, k], y[:, k], ev_w[:, k], end) for k, h in enumerate(stream.heads)}
    p = run_base_rate(y, tr_w)
    heads = {h: judge(p[:, k], y[:, k], ev_w[:, k], end) for k, h in enumerate(stream.heads)}
    out["base_rate"] = {"heads": heads} | heads[stream.heads[primary]]
    for h, r in heads.items():
        print(f"{stream.name:12s} {'base_rate':12s} {h:10s} AUC={r['auc']}  NE={r['ne']}  "
              f"NE_first={r['ne_first_window']}  calib={r['calibration']}", flush=True)
    for peer in peers:
        if peer == "streamtrain":
            p, info = run_streamtrain(stream, model, table, cfg)
            info["config"] = {"model": model.to_dict(), "embedding": dataclasses.asdict(table),
                              "trainer": {k: getattr(cfg, k) for k in ("batch_size", "dense_lr")}}
            info["heads"] = {h: judge(p[:, k], y[:, k], ev_w[:, k], end) for k, h in enumerate(stream.heads)}
            out[peer] = info | info["heads"][stream.heads[primary]]
            out["streamtrain_preds"] = p[:, primary]
        elif peer in ("vw", "vw_q"):
            flags = ("-q :: " if peer == "vw_q" else "") + vw_lr
            p, info = run_vw(stream, y[:, primary], tr_w[:, primary], flags.strip())
            out[peer] = info | judge(p, y[:, primary], ev_w[:, primary], end)
        elif peer == "river":
            p, info = run_river(stream, y[:, primary], tr_w[:, primary], river_max)
            out[peer] = info | judge(p, y[:len(p), primary], ev_w[:len(p), primary])
            out[peer]["samples"] = len(p)
            if "streamtrain" in out:  # streamtrain over River's span, for a like-for-like figure
                span = out["streamtrain_preds"][:len(p)]
                out[f"streamtrain_first_{len(p)}"] = summarize(span, y[:len(p), primary], ev_w[:len(p), primary])
        else:
            raise ValueError(f"unknown peer {peer!r}")
        r = out[peer]
        print(f"{stream.name:12s} {peer:12s} AUC={r['auc']}  NE={r['ne']}  calib={r['calibration']}  "
              f"NE_first={r['ne_first_window']}  calib_warm={r['calibration_after_warmup']}  "
              f"{r['samples_per_s']:>8,} samples/s", flush=True)
    if oracle is not None:
        o = out["oracle"][stream.heads[primary]]
        print(f"{stream.name:12s} {'oracle':12s} AUC={o['auc']}  NE={o['ne']}  calib={o['calibration']}"
              + (f"  AUC_after_100k={o['after_100k']['auc']}" if "after_100k" in o else ""))
        if "streamtrain" in out and "after_100k" in out["streamtrain"]:
            print(f"{stream.name:12s} {'streamtrain':12s} AUC_after_100k={out['streamtrain']['after_100k']['auc']}")
    out.pop("streamtrain_preds", None)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default=",".join(STREAMS))
    p.add_argument("--generator", type=int, default=150_000, help="generator impressions")
    p.add_argument("--peers", default="streamtrain,vw,vw_q,river")
    p.add_argument("--river-max", type=int, default=20_000, help="River sees this many first samples")
    p.add_argument("--negative-sample-rate", type=float, default=1.0)
    p.add_argument("--vw-lr", default="", help="extra VW flags, e.g. '-l 0.1'")
    p.add_argument("--set", action="append", default=[], help="section.key=value for streamtrain")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)  # per-core figures for every peer (VW and River are single-threaded)
    sets = parse_sets(args.set)
    result: dict = {"torch_threads": 1, "sets": args.set, "negative_sample_rate": args.negative_sample_rate,
                    "command": "python -m bench.trainer_peers " + " ".join(argv or [])}
    for name in args.streams.split(","):
        stream = build(name, impressions=args.generator, negative_sample_rate=args.negative_sample_rate)
        result[name] = compare(stream, args.peers.split(","), sets, args.vw_lr, args.river_max)
    print(f"wrote {write_result('trainer_peers' + (f'_{args.tag}' if args.tag else ''), result)}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
