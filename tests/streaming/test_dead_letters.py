"""The dead-letter reason keys (streaming.dead_letters) against the reasons the producers
write: the record gates (validation, codec) and the joiner's core. A new reason lands in
"other" until REASONS names it, and this test says which."""

from __future__ import annotations

from schemas import Action, DeadLetter, Impression, codec_for
from schemas.validation import ValidationLimits
from streaming.dead_letters import REASONS, DeadLetterCounts, reason_key
from streaming.record_gate import RecordGate

NOW = 1_700_000_000_000


def _gate_reasons() -> dict[str, str]:
    """expected key -> a reason a record gate writes for such a record."""
    imp, act = codec_for(Impression), codec_for(Action)
    limits = ValidationLimits(action_types=("click",), max_past_ms=86_400_000)
    igate = RecordGate(Impression, "test", "impressions", limits)
    agate = RecordGate(Action, "test", "actions", limits)
    cases = {
        "undecodable": igate.update(b"junk", NOW),
        "missing_request_id": igate.update(imp.encode(Impression("", 3, 5, NOW)), NOW),
        "missing_user_id": igate.update(imp.encode(Impression("r", 0, 5, NOW)), NOW),
        "missing_item_id": igate.update(imp.encode(Impression("r", 3, 0, NOW)), NOW),
        "slots_ids_length_mismatch": igate.update(
            imp.encode(Impression("r", 3, 5, NOW, slots=[1, 2], ids=[7])), NOW),
        "absurd_timestamp": igate.update(imp.encode(Impression("r", 3, 5, 0)), NOW),
        "timestamp_in_the_future": igate.update(imp.encode(Impression("r", 3, 5, NOW + 10**9)), NOW),
        "timestamp_too_old": igate.update(imp.encode(Impression("r", 3, 5, NOW - 10**10)), NOW),
        "missing_action_type": agate.update(act.encode(Action("r", 3, 5, "", NOW)), NOW),
        "unknown_action_type": agate.update(act.encode(Action("r", 3, 5, "teleport", NOW)), NOW),
    }
    assert all(isinstance(dl, DeadLetter) for dl in cases.values()), cases
    return {key: dl.reason for key, dl in cases.items() if isinstance(dl, DeadLetter)}


def test_dead_letter_reason_keys_name_every_gate_reason():
    reasons = _gate_reasons()
    assert {key: reason_key(r) for key, r in reasons.items()} == {key: key for key in reasons}
    assert set(reasons) <= set(REASONS)


def test_dead_letter_reason_keys_name_the_joiners_reasons():
    # the joiner core's own reasons (streaming/joiner/core.py: _orphan, _invalid)
    assert reason_key("orphan action: no impression for request_id='r' item_id=5") == "orphan_action"
    assert reason_key("invalid: impression without request_id or with event_time_ms <= 0") == "invalid"


def test_dead_letter_counts_bound_the_keys():
    counts = DeadLetterCounts()
    for reason in [*_gate_reasons().values(), "something new: 42", "missing user_id (user_id=-7)"]:
        counts.add(reason)
    assert set(counts) <= set(REASONS)
    assert counts["other"] == 1 and counts["missing_user_id"] == 2 and counts.total() == 12
