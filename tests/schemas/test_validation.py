import pytest

from schemas import Action, Impression
from schemas.validation import ValidationLimits, validate_action, validate_impression

NOW = 1_800_000_000_000
LIMITS = ValidationLimits(max_future_ms=60_000, max_past_ms=86_400_000, action_types=("click", "like"))


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"request_id": ""}, "missing request_id"),
    ({"user_id": 0}, "missing user_id"),
    ({"item_id": -3}, "missing item_id"),
    ({"ids": [1, 2]}, "slots/ids length mismatch"),
    ({"event_time_ms": 1_700_000}, "absurd timestamp"),
    ({"event_time_ms": NOW + 61_000}, "timestamp in the future"),
    ({"event_time_ms": NOW - 86_400_001}, "timestamp too old"),
])
def test_validation_impression_reasons(changes, reason):
    imp = Impression(**{"request_id": "r", "user_id": 1, "item_id": 2, "event_time_ms": NOW,
                        "slots": [0], "ids": [9], **changes})
    got = validate_impression(imp, NOW, LIMITS)
    assert (got is None) if reason is None else got.startswith(reason)


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"action_type": ""}, "missing action_type"),
    ({"action_type": "purchase"}, "unknown action_type 'purchase'"),
    ({"user_id": 0}, "missing user_id"),
    ({"event_time_ms": 0}, "absurd timestamp"),
])
def test_validation_action_reasons(changes, reason):
    act = Action(**{"request_id": "r", "user_id": 1, "item_id": 2, "action_type": "click",
                    "event_time_ms": NOW, **changes})
    got = validate_action(act, NOW, LIMITS)
    assert (got is None) if reason is None else got.startswith(reason)


def test_validation_default_limits_accept_old_history_and_any_type():
    act = Action("r", 1, 2, "purchase", 1_510_000_000_000)
    assert validate_action(act, NOW, ValidationLimits()) is None
