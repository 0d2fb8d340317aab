"""Request-time features at the replica, without Kafka: the completion rule, the 400s, the
counters; the app's checks of user_id/item_id and unknown keys."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from schemas import Action, Impression
from schemas.feature_ids import feature_id
from streaming.features.spec import FeatureSpec
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from sync.api import RequestError, parse_predict
from sync.app import make_app
from sync.config import ReplicaConfig
from sync.request_features import RequestFeatures, needs_completion
from tests.helpers.serving_fakes import OfflineReplica

SPEC = FeatureSpec(windows_ms=(60_000,), action_types=("click",), last_n_slot=9)
W = SPEC.dense_width()  # 6
DIM = 2 + W


def _inst(**kw):
    return {"user_id": 7, "item_id": 3, "slots": [0, 1], "ids": [11, 12], "dense": [0.5, 1.5]} | kw


@pytest.fixture
def features(tmp_path):
    f = RequestFeatures(SPEC, ReplicaConfig(), KafkaConfig(), TopicsConfig(), tmp_path / "f")
    yield f
    f.close()


def test_request_features_rule_completes_base_width_and_keeps_full_width():
    assert needs_completion(_inst(), DIM, W, 9)
    assert not needs_completion(_inst(dense=[0.0] * DIM), DIM, W, 9)  # an old caller's full features
    no_ids = {"slots": [0], "ids": [1], "dense": [0.0, 0.0]}
    assert not needs_completion(no_ids, DIM, W, 9)  # no user/item: as sent (the model checks it)


@pytest.mark.parametrize("inst, message", [
    ({"user_id": 7, "slots": [], "ids": [], "dense": [0.0, 0.0]}, "go together"),
    (_inst(dense=[0.0] * 5), "dense has 5 values"),
    (_inst(item_id=0), "item_id must be a positive"),
    (_inst(user_id="7"), "user_id must be a positive"),
    (_inst(user_id=True), "user_id must be a positive"),
    (_inst(slots=[0, 9], ids=[1, 2]), "slot 9"),
])
def test_request_features_rule_refuses_what_it_cannot_complete(inst, message):
    with pytest.raises(RequestError, match=message) as err:
        needs_completion(inst, DIM, W, 9)
    assert err.value.status == 400


def test_request_features_rule_refuses_ids_when_the_model_has_no_room_for_the_features():
    with pytest.raises(RequestError, match="takes 2"):
        needs_completion(_inst(dense=[0.0]), 2, W, 9)


def test_request_features_complete_appends_user_then_item_values_and_last_n(features):
    t = 1_700_000_000_000
    features.store.update_many([Impression("r1", 7, 3, t - 5000), Action("r1", 7, 3, "click", t - 4000),
                                Impression("r2", 8, 3, t - 120_000)])
    out = features.complete(_inst(), t, DIM)
    assert out["dense"][:2] == [0.5, 1.5] and len(out["dense"]) == DIM
    user, item = out["dense"][2:2 + W // 2], out["dense"][2 + W // 2:]
    assert user == SPEC.attach_values("user", [1.0, 1.0, (1 + 1.0) / 21])
    assert item == SPEC.attach_values("item", [1.0, 1.0, (1 + 1.0) / 21])  # r2 is outside the 1 m window
    assert out["slots"] == [0, 1, 9] and out["ids"] == [11, 12, feature_id(9, 3)]
    assert out["user_id"] == 7  # the rest of the instance is kept
    full = _inst(dense=[0.0] * DIM)
    assert features.complete(full, t, DIM) is full
    new = features.complete(_inst(user_id=99, item_id=98), t, DIM)
    assert new["dense"][2:] == SPEC.attach_values("user", [0, 0, 0.05]) + SPEC.attach_values("item", [0, 0, 0.05])
    s = features.stats()
    assert (s["feature_lookups"], s["feature_misses"], s["feature_completions"]) == (4, 2, 2)
    assert s["feature_events_applied"] == 3 and s["features_lag_records"] == -1


@pytest.mark.parametrize("instance, message", [
    ({"slots": [0], "ids": [1], "colour": "red"}, "unknown keys \\['colour'\\]"),
    ({"slots": [0], "ids": [1], "user_id": 1.5, "item_id": 2}, "user_id must be a positive"),
    ({"slots": [0], "ids": [1], "user_id": 1, "item_id": 2**63}, "item_id must be a positive"),
    ({"slots": [0], "ids": [1], "user_id": -4, "item_id": 2}, "user_id must be a positive"),
])
def test_parse_predict_refuses_unknown_keys_and_bad_entity_ids(instance, message):
    import json

    with pytest.raises(RequestError, match=message):
        parse_predict(json.dumps({"instances": [instance]}).encode(), max_batch=8)


def test_app_answers_bad_entity_ids_with_400_not_500():
    with TestClient(make_app(OfflineReplica())) as c:
        r = c.post("/predict", json={"instances": [{"slots": [0], "ids": [1], "user_id": "u"}]})
    assert r.status_code == 400 and "user_id" in r.json()["error"]
