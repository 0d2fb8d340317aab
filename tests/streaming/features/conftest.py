"""Taobao replay events and the independent reference computation, shared by the unit and
the integration tests of the feature job."""

from __future__ import annotations

import pytest

from tests.helpers import features_reference as reference
from tests.helpers.features_taobao import TAOBAO_SPEC
from traffic.replay import ReplayPlan


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
