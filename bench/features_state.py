"""Micro-benchmark of one entity's keyed state, as the feature job handles it per record:
Flink (PyFlink thread mode, ``Types.PICKLED_BYTE_ARRAY``) unpickles the whole EntityState for
every record and timer and pickles it back. States of realistic sizes: an item after 3 min,
1 h and 24 h of 1.5 impressions/s with a 5% click rate, and a typical user (1 h at 0.1
impressions/s, 5% clicks, 10% of impressions repeated: dedup hits).

Per state: pickled bytes, the pickle round trip (dumps + loads), the step's own work per
event (``FeatureStep.on_impression`` + ``on_watermark`` of a new impression) and both
together (what one record costs the job in Python). With ``--ref REV`` the same figures for
``entity_state.py``/``dedup.py``/``spec.py`` as of git revision REV, measured in the same process, and
the ratios ref / current (the machine is shared: only ratios mean something).

    .venv/bin/python -m bench.features_state --ref HEAD

Writes bench/results/features_state.json.
"""

from __future__ import annotations

import argparse
import pickle
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable

from bench.common import write_result
from schemas import Action, Impression
from streaming.features import entity_state as current_module
from streaming.features.feature_step import FeatureStep
from streaming.features.spec import FeatureSpec
from streamtrain.paths import REPO_ROOT

T0 = 1_700_000_000_000
OOO_MS = 5000
SPEC = FeatureSpec()
SCENARIOS = {  # name: (entity, seconds, impressions/s)
    "item_3min": ("item", 180, 1.5), "item_1h": ("item", 3600, 1.5), "item_24h": ("item", 86_400, 1.5),
    "user_1h": ("user", 3600, 0.1),
}


def ref_modules(rev: str) -> tuple[types.ModuleType, FeatureSpec]:
    """entity_state.py (with its dedup.py) as of ``rev``, importable for pickle as ``_ref_*``,
    and the default FeatureSpec of spec.py as of ``rev``."""
    def load(name: str, path: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
        src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO_ROOT, check=True,
                             capture_output=True, text=True).stdout
        if replace:
            src = src.replace(*replace)
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
        return mod

    spec = load("_ref_spec", "streaming/features/spec.py").FeatureSpec()
    load("_ref_dedup", "streaming/features/dedup.py")
    return load("_ref_entity_state", "streaming/features/entity_state.py",
                ("from streaming.features.dedup import", "from _ref_dedup import")), spec


def build(module: types.ModuleType, spec: FeatureSpec, entity: str, seconds: int, rate: float,
          seed: int = 5):
    """(step, state, next impression time): the state after ``seconds`` of traffic fed as the
    job feeds it (watermark = newest - out-of-orderness - 1, timers at pending times)."""
    step = FeatureStep(spec, entity)  # type: ignore[arg-type]
    state = module.EntityState(spec.dedup_ttl_ms if entity == "user" else None)
    rng = random.Random(seed)
    t, newest, n = float(T0), T0, 0
    while t < T0 + seconds * 1000:
        n += 1
        at = int(t)
        repeat = entity == "user" and n > 1 and rng.random() < 0.1
        rid = f"req-{n - 1 if repeat else n:012d}"
        user, item = (7, rng.randrange(1, 50_000)) if entity == "user" else (rng.randrange(1, 10**6), 7)
        newest = max(newest, at)
        step.on_impression(state, Impression(rid, user, item, at, [1, 2], [11, 12], [0.5]), newest - OOO_MS - 1)
        if rng.random() < 0.05:
            click_at = at + rng.randrange(1000, 4000)
            step.on_action(state, Action(rid, user, item, "click", click_at), newest - OOO_MS - 1)
        wm = newest - OOO_MS - 1
        if state.pending and state.pending[0][0] <= wm:
            step.on_watermark(state, wm)
        t += rng.expovariate(rate) * 1000
    return step, state, int(t)


def best_us(fn: Callable[[], object], min_s: float = 0.3, repeat: int = 5) -> float:
    """Fastest of ``repeat`` timings of ``fn`` (per call, µs), each over >= min_s."""
    n, best = 1, float("inf")
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        el = time.perf_counter() - t0
        if el >= min_s / repeat:
            break
        n *= 2
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def measure(module: types.ModuleType, spec: FeatureSpec, name: str) -> dict:
    entity, seconds, rate = SCENARIOS[name]
    step, state, t_next = build(module, spec, entity, seconds, rate)
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    wm = t_next - OOO_MS - 1
    imp = Impression("req-new", 7, 7, t_next, [1, 2], [11, 12], [0.5])

    def roundtrip() -> None:
        pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    # one record and one timer (the oldest pending record's): each record is inserted once
    # and released once, so this is the step's work per event on average
    def step_only() -> None:  # a fresh state per call: its loads is subtracted below
        st = pickle.loads(blob)
        step.on_impression(st, Impression(imp.request_id, 7, 7, t_next, [1, 2], [11, 12], [0.5]), wm)
        step.on_watermark(st, st.pending[0][0])

    def per_event() -> None:  # what Flink does: value(), the step, update(); then the timer
        st = pickle.loads(blob)
        step.on_impression(st, Impression(imp.request_id, 7, 7, t_next, [1, 2], [11, 12], [0.5]), wm)
        st = pickle.loads(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL))
        step.on_watermark(st, st.pending[0][0])
        pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL)

    loads_us = best_us(lambda: pickle.loads(blob))
    rt_us = best_us(roundtrip)
    return {"entity": entity, "seconds": seconds, "impressions_per_s": rate,
            "times_held": sum(len(ts) for ts in state.times.values()), "pending": len(state.pending),
            "dedup_keys": len(state.dedup) if state.dedup is not None else 0,
            "pickled_bytes": len(blob), "pickle_roundtrip_us": round(rt_us, 2),
            "step_us": round(max(best_us(step_only) - loads_us, 0.0), 2),
            "per_event_us": round(best_us(per_event), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default="", help="git revision to compare against in the same process")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--tag", default="", help="suffix of the result file name")
    args = p.parse_args(argv)
    names = args.scenarios.split(",")
    result: dict = {"spec_windows_ms": list(SPEC.windows_ms), "out_of_orderness_ms": OOO_MS,
                    "timing": "best of 5 timings; per_event = loads, on_impression, dumps+loads, "
                              "on_watermark, dumps (one record and its timer, as Flink does)",
                    "current": {}}
    ref = ref_modules(args.ref) if args.ref else None
    for name in names:
        result["current"][name] = cur = measure(current_module, SPEC, name)
        print(f"current {name}: {cur}", flush=True)
        if ref is not None:
            old = result.setdefault("ref", {"rev": args.ref})[name] = measure(*ref, name)
            print(f"ref     {name}: {old}", flush=True)
            result.setdefault("ref_over_current", {})[name] = {
                k: round(old[k] / cur[k], 2) if cur[k] else None
                for k in ("pickled_bytes", "pickle_roundtrip_us", "step_us", "per_event_us")}
            print(f"ratio   {name}: {result['ref_over_current'][name]}", flush=True)
    path = write_result("features_state" + (f"_{args.tag}" if args.tag else ""), result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
