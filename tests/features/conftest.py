"""Taobao replay events and the independent reference computation, shared by the unit and
the integration tests of the feature job."""

from __future__ import annotations

import pytest

from streaming.features.spec import FeatureSpec
from tests.features import reference
from traffic.replay import ReplayPlan

TAOBAO_SPEC = FeatureSpec(windows_ms=(300_000, 3_600_000, 86_400_000),
                          action_types=("cart", "fav", "buy"), ctr_action="buy", last_n=5)
TAOBAO_SETTINGS = ["features.windows_ms=300000,3600000,86400000", "features.action_types=cart,fav,buy",
                   "features.ctr_action=buy", "features.last_n=5"]


@pytest.fixture(scope="session")
def taobao_events(shared_data):
    events, dead, _ = ReplayPlan.from_file("taobao").events(shared_data)
    assert not dead
    return events


@pytest.fixture(scope="session")
def taobao_expected(shared_data):
    s = TAOBAO_SPEC
    df = reference.load_taobao(shared_data / "taobao_user_behavior_sample.csv")
    exp = reference.expected_features(df, s.windows_ms, s.action_types, s.ctr_action, s.ctr_prior,
                                      s.ctr_strength, s.last_n, s.dedup_ttl_ms)
    return df, exp
