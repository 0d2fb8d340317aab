"""An independent computation of the feature spec's values over a Taobao-style event table,
with pandas/numpy (no code shared with streaming.features): dedup by key inside the TTL,
then for every kept impression the counts in [t - w, t), smoothed CTRs and last-N items."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["user_id", "item_id", "category_id", "behavior", "unix_ts"]


def load_taobao(path) -> pd.DataFrame:
    """One row per event: kind (pv|cart|fav|buy), user, item, t (ms), request_id."""
    df = pd.read_csv(path, names=COLUMNS)
    df = df.rename(columns={"user_id": "user", "item_id": "item", "behavior": "kind"})
    df["t"] = df["unix_ts"].astype("int64") * 1000
    df["request_id"] = df["user"].astype(str) + ":" + df["item"].astype(str)
    return df[["kind", "user", "item", "t", "request_id"]].reset_index(drop=True)


def dedup(df: pd.DataFrame, ttl_ms: int) -> pd.DataFrame:
    """Keep an event unless one of its key (request id + item [+ action type]) was kept less
    than ttl_ms earlier (events of one key in time order)."""
    df = df.sort_values("t", kind="stable")
    keep = np.zeros(len(df), dtype=bool)
    last: dict[tuple, int] = {}
    for n, (rid, item, kind, t) in enumerate(zip(df["request_id"], df["item"], df["kind"], df["t"])):
        key = (rid, item) if kind == "pv" else (rid, item, kind)
        prev = last.get(key)
        if prev is None or t - prev >= ttl_ms:
            last[key] = t
            keep[n] = True
    return df[keep].reset_index(drop=True)


def window_counts(events: pd.DataFrame, imps: pd.DataFrame, entity: str, kind: str,
                  window_ms: int) -> np.ndarray:
    """For each impression, events of ``kind`` of the same entity with t - w <= time < t."""
    ev = events[events["kind"] == kind]
    codes, uniques = pd.factorize(pd.concat([ev[entity], imps[entity]]), sort=True)
    ev_codes, imp_codes = codes[:len(ev)], codes[len(ev):]
    base = min(ev["t"].min() if len(ev) else 0, imps["t"].min()) - 10 * window_ms
    shift = np.int64(1) << 42
    ev_key = np.sort(ev_codes.astype(np.int64) * shift + (ev["t"].to_numpy() - base))
    imp_t = imps["t"].to_numpy() - base
    hi = imp_codes.astype(np.int64) * shift + imp_t
    lo = imp_codes.astype(np.int64) * shift + np.maximum(imp_t - window_ms, 0)
    return np.searchsorted(ev_key, hi, "left") - np.searchsorted(ev_key, lo, "left")


def expected_features(df: pd.DataFrame, windows, action_types, ctr_action, prior, strength,
                      last_n, ttl_ms) -> pd.DataFrame:
    """One row per kept impression: request_id, t, user, item, <entity>_<kind>_<w>..., last_items."""
    kept = dedup(df, ttl_ms)
    imps = kept[kept["kind"] == "pv"].reset_index(drop=True)
    out = imps[["request_id", "t", "user", "item"]].copy()
    for entity in ("user", "item"):
        for w in windows:
            label = _label(w)
            counts = {}
            for kind in ("pv", *action_types):
                name = "imp" if kind == "pv" else kind
                counts[kind] = window_counts(kept, imps, entity, kind, w)
                out[f"{entity}_{name}_{label}"] = counts[kind].astype(float)
            out[f"{entity}_ctr_{label}"] = (counts[ctr_action] + prior * strength) / (counts["pv"] + strength)
    acts = kept[kept["kind"] != "pv"].sort_values(["user", "t", "item"])
    by_user = {u: (g["t"].to_numpy(), g["item"].to_numpy())
               for u, g in acts.groupby("user", sort=False)}
    horizon = max(windows)
    lasts = []
    for u, t in zip(imps["user"], imps["t"]):
        items: list[int] = []
        if u in by_user:
            ts, its = by_user[u]
            lo, hi = np.searchsorted(ts, t - horizon, "left"), np.searchsorted(ts, t, "left")
            for item in its[lo:hi][::-1]:
                if len(items) < last_n and int(item) not in items:
                    items.append(int(item))
        lasts.append(items)
    out["last_items"] = lasts
    return out


def _label(ms: int) -> str:
    return {300_000: "5m", 3_600_000: "1h", 86_400_000: "1d"}[ms]
