"""The history store (request-time features) against the feature job's core on the Taobao
replay: at any time t it gives what the job attaches to an impression at t, windows aged to
t; the snapshot store (FeatureUpdates) does not. Restart and replayed copies."""

from __future__ import annotations

from bisect import bisect_left
from itertools import groupby

import numpy as np
import pandas as pd
import pytest

from schemas import Impression
from streaming.features.history_store import HistoryStore
from streaming.features.pipeline import FeaturePipeline
from tests.helpers import features_reference as reference
from tests.helpers.features_taobao import TAOBAO_SPEC

NOW_MS = 1_800_000_000_000
SPEC = TAOBAO_SPEC
WIDTH = SPEC.dense_width()


@pytest.fixture(scope="module")
def first_hours(taobao_events):
    """The job core's outputs on the replay's first hour, in event-time order."""
    cutoff = min(ev.timestamp_ms for ev in taobao_events) + 3_600_000
    pipe = FeaturePipeline(SPEC, out_of_orderness_ms=5000)
    for ev in taobao_events:
        if ev.timestamp_ms < cutoff:
            pipe.update(ev.topic, ev.value, NOW_MS)
    pipe.finish()
    assert pipe.enriched and pipe.actions
    outputs = sorted(pipe.enriched + pipe.actions, key=lambda r: r.event_time_ms)
    return pipe, outputs


def _base(imp: Impression) -> tuple[list[float], list[int], list[int]]:
    """What a caller sends: the impression without what the job attached."""
    n = len(imp.slots) - imp.slots.count(SPEC.last_n_slot)
    return list(imp.dense[:-WIDTH]), list(imp.slots[:n]), list(imp.ids[:n])


def test_history_store_completes_like_the_job_at_each_impression_time(first_hours, tmp_path):
    _, outputs = first_hours
    store = HistoryStore(tmp_path / "h", SPEC)
    checked = 0
    for t, group in groupby(outputs, key=lambda r: r.event_time_ms):
        recs = list(group)
        for imp in recs:  # the store holds every event before t (none at or after it)
            if isinstance(imp, Impression):
                dense, slots, ids, _ = store.complete(imp.user_id, imp.item_id, t, *_base(imp))
                assert (dense, slots, ids) == (imp.dense, imp.slots, imp.ids), imp.request_id
                checked += 1
        store.update_many(recs)
    assert checked > 1000 and store.applied == len(outputs) and store.duplicates == 0
    store.close()


def test_history_store_ages_windows_to_request_time_like_the_reference(first_hours, taobao_expected,
                                                                         tmp_path):
    """Requests after the stream, 1 s to 25 h later (windows partly or wholly expired): the
    values equal the independent pandas computation for a probe impression at that time."""
    pipe, outputs = first_hours
    store = HistoryStore(tmp_path / "h", SPEC)
    store.update_many(outputs)
    end = outputs[-1].event_time_ms
    df = taobao_expected[0]
    df = df[df["t"] <= end]
    # distinct users and items: one probe never counts in another's windows
    pairs = df.drop_duplicates("user").drop_duplicates("item")[["user", "item"]].to_numpy()[:30]
    deltas = [1, 1000, 240_000, 1_800_000, 3_599_999, 7_200_000, 82_800_000, 90_000_000]
    probes = pd.DataFrame([{"kind": "pv", "user": int(u), "item": int(i), "t": end + deltas[k % len(deltas)],
                            "request_id": f"probe-{k}"} for k, (u, i) in enumerate(pairs)])
    expected = reference.expected_features(pd.concat([df, probes], ignore_index=True), SPEC.windows_ms,
                                           SPEC.action_types, SPEC.ctr_action, SPEC.ctr_prior,
                                           SPEC.ctr_strength, SPEC.last_n, SPEC.dedup_ttl_ms)
    expected = expected[expected["request_id"].str.startswith("probe-")]
    assert len(expected) == len(probes)
    for row in expected.itertuples(index=False):
        u_vals, last, u_seen = store.as_of(("user", row.user), row.t)
        i_vals, _, i_seen = store.as_of(("item", row.item), row.t)
        assert u_seen and i_seen
        want = [getattr(row, n) for n in SPEC.names("user") + SPEC.names("item")]
        np.testing.assert_allclose(u_vals + i_vals, want, rtol=1e-12, atol=0)
        assert last == row.last_items
    # the windows did age: some probe sees fewer events than the last impression did
    assert any(r.user_imp_1d == 0 for r in expected.itertuples(index=False))
    store.close()


def test_snapshot_store_values_are_stale_at_request_time(first_hours):
    """Why serving does not read FeatureUpdates: the newest snapshot before t (values as of
    the entity's previous impression) differs from what an impression at t gets."""
    pipe, _ = first_hours
    versions: dict[tuple[str, int], list[tuple[int, list[float]]]] = {}
    for fu in pipe.features:
        versions.setdefault((fu.entity_type, fu.entity_id), []).append((fu.event_time_ms, fu.values))
    for v in versions.values():
        v.sort(key=lambda x: x[0])
    stale = total = 0
    for imp in pipe.enriched:
        v = versions[("user", imp.user_id)]
        k = bisect_left(v, imp.event_time_ms, key=lambda x: x[0]) - 1  # newest strictly before t
        if k < 0:
            continue
        total += 1
        attached = imp.dense[len(imp.dense) - WIDTH:][:WIDTH // 2]
        stale += SPEC.attach_values("user", v[k][1]) != attached
    assert total > 100 and stale > total // 2


def test_history_store_resumes_after_a_restart_and_drops_replayed_copies(first_hours, tmp_path):
    _, outputs = first_hours
    half = len(outputs) // 2
    store = HistoryStore(tmp_path / "h", SPEC)
    store.update_many(outputs[:half], {("impressions-enriched", 0): 17, ("actions-deduped", 1): 5})
    store.close()
    store = HistoryStore(tmp_path / "h", SPEC)  # reopened: offsets and clock restored
    assert store.offsets("impressions-enriched") == {0: 17} and store.offsets("actions-deduped") == {1: 5}
    assert store.newest_ms == outputs[half - 1].event_time_ms
    store.update_many(outputs[half - 50:])  # the job's at-least-once replay of 50 records
    assert store.duplicates == 50
    whole = HistoryStore(tmp_path / "w", SPEC)
    whole.update_many(outputs)
    t = outputs[-1].event_time_ms + 1
    for rec in outputs[::97]:
        for key in (("user", rec.user_id), ("item", rec.item_id)):
            assert store.as_of(key, t) == whole.as_of(key, t)  # type: ignore[arg-type]
    store.close()
    whole.close()


def test_history_store_gives_a_new_entity_what_the_job_gives_one(tmp_path):
    store = HistoryStore(tmp_path / "h", SPEC)
    values, last, seen = store.as_of(("user", 12345), NOW_MS)
    assert not seen and last == []
    assert values == [0.0 if n.split("_")[1] != "ctr" else SPEC.ctr_prior for n in SPEC.names("user")]
    dense, slots, ids, missed = store.complete(12345, 678, NOW_MS, [0.5], [0], [9])
    assert missed == 2 and dense[0] == 0.5 and len(dense) == 1 + WIDTH and (slots, ids) == ([0], [9])
    store.close()
