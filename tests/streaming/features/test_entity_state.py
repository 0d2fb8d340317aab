"""The compact entity state (arrays, digests of dedup keys): same answers as the list/dict
form it replaced, for any order of events, and a state pickled by that form (a checkpoint
taken before the change) restores and goes on as it would have."""

from __future__ import annotations

import base64
import pickle
from bisect import bisect_left, insort

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Action, Impression
from streaming.features.dedup import DedupFilter
from streaming.features.entity_state import EntityState
from streaming.features.feature_step import FeatureStep
from streaming.features.spec import FeatureSpec

T0 = 1_700_000_000_000
SPEC = FeatureSpec(windows_ms=(300_000, 3_600_000), action_types=("click", "buy"), ctr_action="click")
# pickle.dumps(state) of the list/dict form (commit f0e0ec2), state built by _old_calls
V1_STATE = (
    "gAWVVgQAAAAAAACMH3N0cmVhbWluZy5mZWF0dXJlcy5lbnRpdHlfc3RhdGWUjAtFbnRpdHlTdGF0ZZSTlCmBlCh9lCiMA2ltcJRdlCiKBgBo5c+LAYoG6Gvlz4sBigbQb+XPiwGKBrhz5c+LAYoGoHflz4sBigaIe+XPiwFljAVjbGlja5RdlIoG3G3lz4sBYYwDYnV5lF2UigYoi+XPiwFhdV2UKIoG3G3lz4sBS2WGlIoGKIvlz4sBS2iGlGVdlCiKBgBo5c+LAYwPc2NoZW1hcy5yZWNvcmRzlIwKSW1wcmVzc2lvbpSTlCmBlE59lCiMCnJlcXVlc3RfaWSUjAJyMJSMB3VzZXJfaWSUSyqMB2l0ZW1faWSUS2SMDWV2ZW50X3RpbWVfbXOUigYAaOXPiwGMBXNsb3RzlF2USwFhjANpZHOUXZRLBWGMBWRlbnNllF2URz/gAAAAAAAAYYwOc2NoZW1hX3ZlcnNpb26USwF1hpRihpSKBuhr5c+LAWgRKYGUTn2UKGgUjAJyMZRoFksqaBdLZWgYigboa+XPiwFoGV2USwFhaBtdlEsFYWgdXZRHP+AAAAAAAABhaB9LAXWGlGKGlIoG3G3lz4sBaA+MBkFjdGlvbpSTlCmBlE59lChoFIwCcjGUaBZLKmgXS2WMC2FjdGlvbl90eXBllGgHaBiKBtxt5c+LAYwFdmFsdWWURz/wAAAAAAAAaB9LAXWGlGKGlIoG0G/lz4sBaBEpgZROfZQoaBSMAnIylGgWSypoF0tmaBiKBtBv5c+LAWgZXZRLAWFoG12USwVhaB1dlEc/4AAAAAAAAGFoH0sBdYaUYoaUiga4c+XPiwFoESmBlE59lChoFIwCcjOUaBZLKmgXS2RoGIoGuHPlz4sBaBldlEsBYWgbXZRLBWFoHV2URz/gAAAAAAAAYWgfSwF1hpRihpSKBqB35c+LAWgRKYGUTn2UKGgUjAJyNJRoFksqaBdLZWgYigagd+XPiwFoGV2USwFhaBtdlEsFYWgdXZRHP+AAAAAAAABhaB9LAXWGlGKGlIoGiHvlz4sBaBEpgZROfZQoaBSMAnI1lGgWSypoF0tmaBiKBoh75c+LAWgZXZRLAWFoG12USwVhaB1dlEc/4AAAAAAAAGFoH0sBdYaUYoaUigYoi+XPiwFoKymBlE59lChoFIwCcjSUaBZLKmgXS2hoL2gJaBiKBiiL5c+LAWgwRz/wAAAAAAAAaB9LAXWGlGKGlGWMGHN0cmVhbWluZy5mZWF0dXJlcy5kZWR1cJSMC0RlZHVwRmlsdGVylJOUKYGUSsAnCQB9lChoFUtkhpSKBgBo5c+LAWgkS2WGlIoG6Gvlz4sBaDVLZoaUigbQb+XPiwFoPUtkhpSKBrhz5c+LAWhFS2WGlIoGoHflz4sBaE1LZoaUigaIe+XPiwFoLktlaAeHlIoG3G3lz4sBaFVLaGgJh5SKBiiL5c+LAXVLAYeUYnSUYi4="
)


def _old_calls(step: FeatureStep, state: EntityState) -> list:
    out = []
    for i in range(6):
        imp = Impression(f"r{i}", 42, 100 + i % 3, T0 + i * 1000, [1], [5], [0.5])
        out += step.on_impression(state, imp, T0 + i * 1000 - 5001)
    out += step.on_action(state, Action("r1", 42, 101, "click", T0 + 1500), T0)
    out += step.on_impression(state, Impression("r2", 42, 102, T0 + 2000), T0)  # a duplicate
    out += step.on_action(state, Action("r4", 42, 104, "buy", T0 + 9000), T0 + 3000)
    return out


def _go_on(step: FeatureStep, state: EntityState) -> list:
    """What follows the checkpoint: a duplicate, a late action, then the watermark."""
    out = step.on_impression(state, Impression("r3", 42, 100, T0 + 3000, [1], [5], [0.5]), T0 + 3000)
    out += step.on_action(state, Action("r0", 42, 100, "buy", T0 + 500), T0 + 3000)
    return out + step.on_watermark(state, T0 + 4_000_000)


def test_entity_state_restores_a_checkpoint_of_the_list_form():
    step = FeatureStep(SPEC, "user")
    fresh = step.new_state()
    assert _old_calls(step, fresh) == []
    restored = pickle.loads(base64.b64decode(V1_STATE))
    assert isinstance(restored, EntityState) and restored.dedup is not None
    assert restored.dedup.duplicates == fresh.dedup.duplicates == 1
    assert len(restored.dedup) == len(fresh.dedup) == 8
    assert restored.acted == fresh.acted and restored.pending == fresh.pending
    assert {ev: list(ts) for ev, ts in restored.times.items()} == {ev: list(ts) for ev, ts in fresh.times.items()}
    again = pickle.loads(pickle.dumps(restored, protocol=pickle.HIGHEST_PROTOCOL))  # and in the new form
    want = _go_on(step, fresh)
    assert step.counters["duplicate_impressions"] == 2  # r3/100 was kept before the checkpoint
    assert _go_on(step, restored) == want and _go_on(step, again) == want
    assert step.counters["duplicate_impressions"] == 4  # ... and the restored states know it
    assert len(want) == 2 * 6 + 3 and fresh.empty()


class _DictDedup:
    """The dict form DedupFilter replaced (the reference of its semantics, expiry order too)."""

    def __init__(self, ttl_ms: int):
        self.ttl_ms, self.kept, self.sweep_at = ttl_ms, {}, 64

    def update(self, key, t: int, wm: int) -> bool:
        horizon = wm - self.ttl_ms
        while self.kept and next(iter(self.kept.values())) <= horizon:
            del self.kept[next(iter(self.kept))]
        if len(self.kept) >= self.sweep_at:
            self.kept = {k: v for k, v in self.kept.items() if v > horizon}
            self.sweep_at = max(64, 2 * len(self.kept))
        prev = self.kept.get(key)
        if prev is not None and abs(t - prev) < self.ttl_ms:
            return False
        self.kept.pop(key, None)
        self.kept[key] = t
        return True


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3_000), st.integers(0, 400)),
                min_size=1, max_size=300))
def test_dedup_filter_decides_as_the_dict_form(records):
    """Any interleaving of keys, event times and watermark steps (out-of-order inserts leave
    expired keys behind the front until a sweep): the same verdicts, pickled or not."""
    new, ref = DedupFilter(ttl_ms=500), _DictDedup(500)
    wm = 0
    for n, (k, t, step) in enumerate(records):
        wm += step
        key = (f"r{k}", k % 7)
        assert new.update(key, t, wm) == ref.update(key, t, wm)
        assert len(new) == len(ref.kept)
        if n % 17 == 0:
            new = pickle.loads(pickle.dumps(new))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["imp", "click"]), st.integers(0, 2_000),
                          st.one_of(st.none(), st.integers(1, 5))), min_size=1, max_size=200),
       st.integers(0, 2_500))
def test_entity_state_counts_and_last_items_as_sorted_lists(events, t):
    """Events in any order (ties in time and item): counts and last-N items as bisecting
    sorted lists of times and of (time, item) pairs gives them; prune keeps them."""
    spec = FeatureSpec(windows_ms=(1_000,), action_types=("click",), last_n=3)
    state, times, acted = EntityState(), {"imp": [], "click": []}, []
    for ev, at, item in events:
        state.add(ev, at, item)
        insort(times[ev], at)
        if item is not None:
            insort(acted, (at, item))
    state.prune(spec, t - 1)
    for ev, ts in times.items():
        assert state.count(ev, t - 1_000, t) == bisect_left(ts, t) - bisect_left(ts, t - 1_000)
    window = [i for at, i in acted if t - 1_000 <= at < t][::-1]
    assert state.last_items(spec, t) == list(dict.fromkeys(window))[:3]
    assert list(zip(*state.acted)) == [p for p in acted if p[0] >= t - 1 - 1_000]
