"""The end of a ``streamtrain up`` run (and of ``make demo``): ``summary.json``, three PNG plots
and a printed verdict a first-time user can read, from the rows the observer sampled during
the run (``streamtrain.cli.observe``) and the replicas' freshness logs.

    report = RunReport(rows, freshness_records, stages, target_rate)
    summary = report.summary()      # -> summary.json
    report.plots(out_dir)           # quality.png, served_ctr.png, freshness_cdf.png
    print(report.verdict_text())
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

HEADS = ("click", "like", "conversion")
STAGE_PARTS = ("join_wait", "sample_to_trained", "trained_to_published", "published_to_applied")


def read_freshness(paths: Iterable[Path]) -> list[dict]:
    """The replicas' freshness records (``serve.freshness_log``: one JSON line per traced
    action, ``<stage>_s`` seconds per stage; a torn last line is skipped)."""
    out: list[dict] = []
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _last(rows: list[dict], key: str) -> Any:
    for row in reversed(rows):
        if row.get(key) is not None:
            return row[key]
    return None


def _windowed_ctr(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(t, the traffic source's windowed expected CTR of ``key``: served | random | oracle)."""
    return [(r["t"], r[f"{key}_window_ctr"]) for r in rows if r.get(f"{key}_window_ctr") is not None]


class RunReport:
    def __init__(self, rows: list[dict], freshness: list[dict], stages: dict[str, dict],
                 target_rate: float) -> None:
        self.rows = rows
        self.freshness = freshness
        self.stages = stages  # name -> {"restarts", "exit", "rss_mb": [(t, mb)]}
        self.target_rate = target_rate

    # -- figures -----------------------------------------------------------------------------
    def _freshness_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"traced_actions": len(self.freshness)}
        for part in ("end_to_end", *STAGE_PARTS):
            vals = [float(r[f"{part}_s"]) for r in self.freshness if r.get(f"{part}_s") is not None]
            out[part] = {"p50_s": _pct(vals, 50), "p99_s": _pct(vals, 99)}
        return out

    def _rates(self) -> dict[str, Any]:
        if len(self.rows) < 2:
            return {}
        first, last = self.rows[0], self.rows[-1]
        dt = last["t"] - first["t"]
        out: dict[str, Any] = {"seconds": dt}
        for key in [k for k in last if k.endswith("_total")]:
            if first.get(key) is not None and last.get(key) is not None and dt > 0:
                role = key.removesuffix("_total")
                out[role] = {"records": last[key], "per_s": (last[key] - first[key]) / dt}
        return out

    def _stability(self) -> dict[str, Any]:
        """Lag and memory in the first vs the second half of the run (after a warm-up third)."""
        n = len(self.rows)
        if n < 6:
            return {}
        mid, warm = self.rows[n // 3: 2 * n // 3], self.rows[2 * n // 3:]
        lag = lambda rows: max((r.get("trainer_lag") or 0) for r in rows)  # noqa: E731
        out: dict[str, Any] = {"trainer_lag_max_middle": lag(mid), "trainer_lag_max_end": lag(warm)}
        mem: dict[str, Any] = {}
        for name, s in self.stages.items():
            series = s.get("rss_mb") or []
            if len(series) >= 6:
                k = len(series)
                mem[name] = {"middle_mb": float(np.mean([m for _, m in series[k // 3: 2 * k // 3]])),
                             "end_mb": float(np.mean([m for _, m in series[2 * k // 3:]]))}
        out["rss"] = mem
        return out

    def summary(self) -> dict[str, Any]:
        last = self.rows[-1] if self.rows else {}
        quality = {head: {m: _last(self.rows, f"{head}_{m}") for m in ("auc", "ne", "calibration")}
                   for head in HEADS}
        oracle = {head: {m: _last(self.rows, f"oracle_{head}_{m}") for m in ("auc", "ne", "calibration")}
                  for head in HEADS}
        served_quality = {who: {m: _last(self.rows, f"served_{who}_click_{m}") for m in ("auc", "ne", "calibration")}
                          for who in ("model", "oracle")}
        ctr = {p: _last(self.rows, f"{p}_ctr") for p in ("served", "random", "oracle")}
        ctr |= {f"{p}_window": _last(self.rows, f"{p}_window_ctr") for p in ("served", "random", "oracle")}
        ctr |= {f"{p}_impressions": _last(self.rows, f"{p}_impressions") for p in ("served", "explore", "fallback")}
        return {
            "rates": self._rates(),
            "target_impressions_per_s": self.target_rate,
            "dead_letters": last.get("dead_letters", {}),
            "joiner": {k: last.get(k) for k in ("late_corrections", "orphans", "joined_labels", "window_occupancy")},
            "trained_samples": _last(self.rows, "trained_samples"),
            "progressive": quality, "oracle": oracle, "served_click_quality": served_quality,
            "served_ctr": ctr,
            "replicas": last.get("replicas", {}),
            "published_version": _last(self.rows, "published_version"),
            "freshness": self._freshness_summary(),
            "stability": self._stability(),
            "stages": {k: {kk: v for kk, v in s.items() if kk != "rss_mb"} for k, s in self.stages.items()},
            "checks": self.checks(),
        }

    def checks(self) -> dict[str, bool]:
        # the served model on the impressions it ranked, beside the oracle on the same ones:
        # out of sample by construction. The trainer's progressive figures are too, but on an
        # early-emit stream they judge batches of one label at a time (positives one by one,
        # negatives in bursts), so they do not say how good the served model is
        # (bench/pacing_replay.py measures it against predictions as served)
        auc, o_auc = _last(self.rows, "served_model_click_auc"), _last(self.rows, "served_oracle_click_auc")
        ne = _last(self.rows, "served_model_click_ne")
        served, rnd = _last(self.rows, "served_ctr"), _last(self.rows, "random_ctr")
        versions = [r.get("version") for r in (self.rows[-1].get("replicas", {}) if self.rows else {}).values()]
        rate = self._rates().get("impressions", {}).get("per_s")
        return {
            "samples trained": bool(_last(self.rows, "trained_samples")),
            "replicas serve a trained version": bool(versions) and all((v or 0) > 0 for v in versions),
            "freshness traced": bool(self.freshness),
            "served model: click NE below 1": ne is not None and ne < 1,
            "served model: click AUC at least 90% of the oracle's": auc is not None and o_auc is not None
            and auc >= 0.9 * o_auc,
            "served CTR above random": served is not None and rnd is not None and served > rnd,
            "traffic at the target rate (within 5%)": rate is not None and rate >= 0.95 * self.target_rate,
            "no stage restarted": all(not s.get("restarts") for s in self.stages.values()),
        }

    def verdict_text(self) -> str:
        s = self.summary()
        q, o, f = s["progressive"]["click"], s["oracle"]["click"], s["freshness"]["end_to_end"]
        sm, so = s["served_click_quality"]["model"], s["served_click_quality"]["oracle"]
        rate = s["rates"].get("impressions", {}).get("per_s")
        lines = [
            f"traffic: {_fmt(rate, '{:.0f}')} impressions/s (target {self.target_rate:.0f}); "
            f"samples trained {_fmt(s['trained_samples'], '{:.0f}')}; "
            f"model version {_fmt(s['published_version'], '{:.0f}')}",
            f"served model, click on what it ranked (scored at position 0): AUC {_fmt(sm['auc'])} "
            f"(oracle at the rank shown {_fmt(so['auc'])}), "
            f"NE {_fmt(sm['ne'])} (oracle {_fmt(so['ne'])}), calibration {_fmt(sm['calibration'])}",
            f"trainer, progressive click (not a fair judge on an early-emit stream: bench/pacing_replay.py): "
            f"AUC {_fmt(q['auc'])} (oracle on all shown {_fmt(o['auc'])}), "
            f"NE {_fmt(q['ne'])}, calibration {_fmt(q['calibration'])}",
            "served CTR {} vs random {} vs oracle {}".format(*(_fmt(s["served_ctr"][p], "{:.4f}")
                                                             for p in ("served", "random", "oracle"))),
            f"freshness (action produced -> served by a model trained on it): p50 {_fmt(f['p50_s'], '{:.1f}s')} "
            f"p99 {_fmt(f['p99_s'], '{:.1f}s')} over {s['freshness']['traced_actions']} traced actions",
            "  by stage (p50): " + ", ".join(f"{p} {_fmt(s['freshness'][p]['p50_s'], '{:.1f}s')}" for p in STAGE_PARTS),
            "dead letters: " + (", ".join(f"{k} {v}" for k, v in s["dead_letters"].items()) or "none"),
        ]
        lines += [f"  [{'ok' if ok else 'NO'}] {name}" for name, ok in s["checks"].items()]
        return "\n".join(lines)

    # -- plots -------------------------------------------------------------------------------
    def plots(self, out_dir: Path) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = self.rows[0]["t"] if self.rows else 0.0
        paths = []
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        series = (("served_model_", "-", "served model"), ("served_oracle_", "--", "oracle"),
                  ("", ":", "trainer (progressive)"))
        for ax, metric in zip(axes, ("auc", "ne", "calibration"), strict=True):
            for prefix, style, label in series:
                pts = [(r["t"] - t0, r[f"{prefix}click_{metric}"]) for r in self.rows
                       if r.get(f"{prefix}click_{metric}") is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, label=label)
            ax.set_title(f"click {metric} (last window)")
            ax.set_xlabel("seconds")
            _legend(ax)
        paths.append(_save(fig, out_dir / "quality.png"))
        fig, ax = plt.subplots(figsize=(7, 4))
        for policy in ("served", "random", "oracle"):
            pts = _windowed_ctr(self.rows, policy)
            if pts:
                ax.plot([t - t0 for t, _ in pts], [c for _, c in pts], label=policy)
        ax.set_title("expected CTR of what each policy shows")
        ax.set_xlabel("seconds")
        _legend(ax)
        paths.append(_save(fig, out_dir / "served_ctr.png"))
        fig, ax = plt.subplots(figsize=(7, 4))
        vals = sorted(float(r["end_to_end_s"]) for r in self.freshness if r.get("end_to_end_s") is not None)
        if vals:
            ax.plot(vals, np.arange(1, len(vals) + 1) / len(vals))
        ax.set_title("freshness: action produced -> served by a model trained on it")
        ax.set_xlabel("seconds")
        ax.set_ylabel("fraction of actions")
        paths.append(_save(fig, out_dir / "freshness_cdf.png"))
        return paths


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _fmt(x: Any, fmt: str = "{:.3f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)
