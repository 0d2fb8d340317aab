"""The live view of a running stack (``streamtrain up`` on a terminal): one screen, redrawn
every second from ``Observer.sample`` rows; ``status_line`` is the one-line form written to
the log when the output is not a terminal (``up.view = log``) and by ``streamtrain status``.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def _f(x: Any, fmt: str = "{:.3f}", none: str = "-") -> str:
    return none if x is None else fmt.format(x)


def _rate(row: dict, role: str) -> str:
    return _f(row.get(f"{role}_per_s"), "{:.0f}/s")


def _flow(row: dict) -> Table:
    t = Table(title="flow (records/s into each topic; lag = records not yet consumed)", expand=True)
    for col in ("stage", "in", "out", "lag / state"):
        t.add_column(col)
    up = row.get("up", {})
    mark = lambda name: "[green]up[/]" if up.get(name) else "[red]down[/]"  # noqa: E731
    t.add_row(f"traffic {mark('traffic')}", "", f"imps {_rate(row, 'impressions')}  acts {_rate(row, 'actions')}",
              f"behind {_f(row.get('traffic_behind_s'), '{:.1f}s')}")
    t.add_row(f"features {mark('features')}", f"{_rate(row, 'impressions')}",
              f"enriched {_rate(row, 'impressions_enriched')}  deduped {_rate(row, 'actions_deduped')}  "
              f"features {_rate(row, 'features')}", "")
    t.add_row(f"join {mark('join')}", _rate(row, "impressions_enriched"), f"samples {_rate(row, 'samples')}",
              f"window {_f(row.get('window_occupancy'), '{:.0f}')}  late {_f(row.get('late_corrections'), '{:.0f}')}"
              f"  orphans {_f(row.get('orphans'), '{:.0f}')}")
    t.add_row(f"train {mark('train')}", _f(row.get("trainer_samples_per_s"), "{:.0f}/s"),
              f"deltas {_rate(row, 'model_deltas')}  version {_f(row.get('published_version'), '{:.0f}')}",
              f"lag {_f(row.get('trainer_lag'), '{:.0f}')}")
    for name, r in sorted(row.get("replicas", {}).items()):
        t.add_row(f"{name} {mark(name)}", "", f"version {_f(r.get('version'), '{:.0f}')}  "
                  f"age {_f(r.get('version_age_s'), '{:.1f}s')}", f"lag {_f(r.get('lag'), '{:.0f}')}")
    return t


def _quality(row: dict) -> Table:
    t = Table(title="quality (last window): the trainer's progressive validation per head, and the "
              "served model on what it ranked; the oracle beside each", expand=True)
    for col in ("", "AUC", "oracle AUC", "NE", "oracle NE", "calibration"):
        t.add_column(col)
    for head in ("click", "like", "conversion"):
        t.add_row(f"trainer {head}", _f(row.get(f"{head}_auc")), _f(row.get(f"oracle_{head}_auc")),
                  _f(row.get(f"{head}_ne")), _f(row.get(f"oracle_{head}_ne")),
                  _f(row.get(f"{head}_calibration")))
    t.add_row("served click", _f(row.get("served_model_click_auc")), _f(row.get("served_oracle_click_auc")),
              _f(row.get("served_model_click_ne")), _f(row.get("served_oracle_click_ne")),
              _f(row.get("served_model_click_calibration")))
    return t


def _outcome(row: dict) -> Text:
    fresh = (f"freshness action -> served: p50 {_f(row.get('freshness_p50_s'), '{:.1f}s')} "
             f"p99 {_f(row.get('freshness_p99_s'), '{:.1f}s')} ({_f(row.get('freshness_count'), '{:.0f}')} traced)")
    ctr = (f"served CTR {_f(row.get('served_ctr'), '{:.4f}')}   random {_f(row.get('random_ctr'), '{:.4f}')}   "
           f"oracle {_f(row.get('oracle_ctr'), '{:.4f}')}   (expected clicks per shown impression)")
    dead = row.get("dead_letters") or {}
    dl = "dead letters: " + (", ".join(f"{k} {v}" for k, v in sorted(dead.items(), key=lambda kv: -kv[1]))
                             if dead else "none")
    return Text("\n".join((ctr, fresh, dl)))


def render(row: dict, header: str, events: list[str]) -> Panel:
    parts: list[Any] = [_flow(row), _quality(row), _outcome(row)]
    if events:
        parts.append(Text("events: " + " | ".join(events[-4:]), style="yellow"))
    return Panel(Group(*parts), title=header, subtitle=time.strftime("%H:%M:%S"))


def status_line(row: dict) -> str:
    reps = " ".join(f"{n}=v{_f(r.get('version'), '{:.0f}')}" for n, r in sorted(row.get("replicas", {}).items()))
    return (f"imps {_rate(row, 'impressions')} samples {_rate(row, 'samples')} "
            f"trained {_f(row.get('trained_samples'), '{:.0f}')} served click AUC "
            f"{_f(row.get('served_model_click_auc'))} (oracle {_f(row.get('served_oracle_click_auc'))}) "
            f"NE {_f(row.get('served_model_click_ne'))} trainer AUC {_f(row.get('click_auc'))} "
            f"CTR served/random/oracle {_f(row.get('served_ctr'), '{:.4f}')}/{_f(row.get('random_ctr'), '{:.4f}')}/"
            f"{_f(row.get('oracle_ctr'), '{:.4f}')} fresh p50/p99 {_f(row.get('freshness_p50_s'), '{:.1f}')}/"
            f"{_f(row.get('freshness_p99_s'), '{:.1f}')}s {reps}")
