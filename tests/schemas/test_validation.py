import dataclasses

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
    # the default accepts the declared types only (schemas/contracts.py); None accepts any
    act = Action("r", 1, 2, "purchase", 1_510_000_000_000)
    assert validate_action(act, NOW, ValidationLimits(action_types=None)) is None
    assert validate_action(dataclasses.replace(act, action_type="click"), NOW, ValidationLimits()) is None


NINETIES = 820_454_400_000  # 1996-01-01


@pytest.mark.parametrize("floor, when, accepted", [
    (ValidationLimits().min_event_time_ms, NINETIES, False),   # the default floor: 2000-01-01
    (ValidationLimits().min_event_time_ms, 946_684_800_000, True),
    (800_000_000_000, NINETIES, True),                           # lowered below the log
    (900_000_000_000, NINETIES, False),
    (0, NINETIES, True),                                         # 0: no floor
    (None, NINETIES, True),                                      # None: no floor
    (0, 1, True),
    (0, 0, False),                                               # ... but zero and negative stay absurd
    (None, -5, False),
])
def test_validation_event_time_floor_is_configurable(floor, when, accepted):
    limits = ValidationLimits(min_event_time_ms=floor)
    imp = Impression("r", 1, 2, when)
    act = Action("r", 1, 2, "click", when)
    for got in (validate_impression(imp, NOW, limits), validate_action(act, NOW, limits)):
        assert (got is None) == accepted, got
        if not accepted:
            assert got.startswith("absurd timestamp")


def test_validation_floor_reason_names_the_floor_and_how_to_lower_it():
    got = validate_impression(Impression("r", 1, 2, NINETIES), NOW, ValidationLimits())
    assert "1996-01-01" in got and "validation.min_event_time_ms=946684800000 (2000-01-01" in got
    assert "--set validation.min_event_time_ms=0" in got


def test_validation_floor_is_a_config_setting_checked_when_loaded():
    from streamtrain.config import ConfigError, load

    assert load(ValidationLimits, "validation", overrides=["validation.min_event_time_ms=0"],
                env={}).min_event_time_ms == 0
    assert load(ValidationLimits, "validation", overrides=["validation.min_event_time_ms=none"],
                env={}).min_event_time_ms is None
    assert load(ValidationLimits, "validation", env={}).min_event_time_ms == 946_684_800_000
    with pytest.raises(ConfigError, match=r"validation.min_event_time_ms=-1 is invalid: >= 0"):
        load(ValidationLimits, "validation", overrides=["validation.min_event_time_ms=-1"], env={})
