"""The Taobao feature spec the feature tests run (as a FeatureSpec and as ``--set`` flags) and
the check that enriched impressions carry the reference values."""

from __future__ import annotations

import numpy as np

from schemas.feature_ids import feature_id
from streaming.features.spec import FeatureSpec

TAOBAO_SPEC = FeatureSpec(windows_ms=(300_000, 3_600_000, 86_400_000),
                          action_types=("cart", "fav", "buy"), ctr_action="buy", last_n=5)
TAOBAO_SETTINGS = ["features.windows_ms=300000,3600000,86400000", "features.action_types=cart,fav,buy",
                   "features.ctr_action=buy", "features.last_n=5"]


def check_enriched(enriched, expected, spec):
    """Every enriched impression carries exactly the reference values (as float32 in dense)."""
    names = spec.names("user") + spec.names("item")
    by_key = {(r.request_id, r.t): r for r in expected.itertuples(index=False)}
    assert len(enriched) == len(expected)
    for imp in enriched:
        row = by_key[(imp.request_id, imp.event_time_ms)]
        raw = [getattr(row, n) for n in names]
        want = spec.attach_values("user", raw[:len(names) // 2]) + spec.attach_values("item", raw[len(names) // 2:])
        got = imp.dense[-len(names):]
        assert np.allclose(got, np.float32(want), rtol=1e-6, atol=1e-6), (imp.request_id, names, got, want)
        last = row.last_items
        assert imp.ids[len(imp.ids) - len(last):] == [feature_id(spec.last_n_slot, i) for i in last] \
            if last else spec.last_n_slot not in imp.slots
