"""Semantic checks every stage applies after decoding: a record that decodes but cannot be
used (missing ids, absurd timestamps, unknown action type) gets a reason for the dead-letter
topic. Time is passed in (``now_ms``), never read from the clock here. What is accepted is
``ValidationLimits`` (config section ``[validation]``).

>>> from schemas import Impression
>>> imp = Impression("r1", user_id=7, item_id=42, event_time_ms=1_700_000_000_000)
>>> validate_impression(imp, now_ms=1_700_000_000_000, limits=ValidationLimits()) is None
True
>>> validate_impression(imp, now_ms=1_600_000_000_000, limits=ValidationLimits())
'timestamp in the future: event_time_ms=1700000000000 is 100000000000 ms ahead'
>>> old = Impression("r2", user_id=7, item_id=42, event_time_ms=631_152_000_000)  # 1990-01-01
>>> print(validate_impression(old, now_ms=1_700_000_000_000, limits=ValidationLimits()))
... # doctest: +NORMALIZE_WHITESPACE
absurd timestamp: event_time_ms=631152000000 (1990-01-01 00:00:00 UTC) is before
validation.min_event_time_ms=946684800000 (2000-01-01 00:00:00 UTC); to accept older events
lower it, e.g. --set validation.min_event_time_ms=0 (no floor)
>>> validate_impression(old, 1_700_000_000_000, ValidationLimits(min_event_time_ms=0)) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.contracts import ACTION_TYPES
from schemas.records import Action, Impression

# the default floor, 2000-01-01: a live system's events are never older, and an earlier one
# is usually seconds taken for milliseconds; a replay of an older log lowers it
MIN_EVENT_TIME_MS = 946_684_800_000


@dataclass(frozen=True)
class ValidationLimits:
    """What every stage accepts; config section ``[validation]`` (the same for every job and
    for ``streamtrain replay``'s pre-flight check).

    min_event_time_ms: the earliest event time accepted (default 2000-01-01). Lower it to
        replay an older log (``--set validation.min_event_time_ms=0``): 0 or None = no floor,
        only a zero or negative timestamp is rejected then.
    max_future_ms: how far event time may run ahead of the processing clock.
    max_past_ms: how far it may lag behind it (None: history of any age is fine).
    action_types: the accepted action types: the declared list (``schemas/contracts.py``
        ACTION_TYPES by default; a log with its own types sets them here, e.g.
        ``--set validation.action_types=cart,fav,buy``); None: any non-empty type.
    """

    max_future_ms: int = 3_600_000
    max_past_ms: int | None = None
    action_types: tuple[str, ...] | None = ACTION_TYPES
    min_event_time_ms: int | None = MIN_EVENT_TIME_MS

    def __post_init__(self) -> None:
        # plain ValueError (schemas sits below streamtrain.config); config.load reports it as a ConfigError
        if self.min_event_time_ms is not None and self.min_event_time_ms < 0:
            raise ValueError(f"validation.min_event_time_ms={self.min_event_time_ms!r} is invalid: "
                             ">= 0 (0 or none = no floor)")
        if self.max_future_ms < 0:
            raise ValueError(f"validation.max_future_ms={self.max_future_ms!r} is invalid: >= 0")
        if self.max_past_ms is not None and self.max_past_ms <= 0:
            raise ValueError(f"validation.max_past_ms={self.max_past_ms!r} is invalid: > 0 (none = no limit)")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time_reason(event_time_ms: int, now_ms: int, limits: ValidationLimits) -> str | None:
    if event_time_ms <= 0:
        return f"absurd timestamp: event_time_ms={event_time_ms} is zero or negative"
    floor = limits.min_event_time_ms
    if floor and event_time_ms < floor:
        return (f"absurd timestamp: event_time_ms={event_time_ms} ({_utc(event_time_ms)}) is before "
                f"validation.min_event_time_ms={floor} ({_utc(floor)}); to accept older events "
                f"lower it, e.g. --set validation.min_event_time_ms=0 (no floor)")
    if event_time_ms > now_ms + limits.max_future_ms:
        return f"timestamp in the future: event_time_ms={event_time_ms} is {event_time_ms - now_ms} ms ahead"
    if limits.max_past_ms is not None and event_time_ms < now_ms - limits.max_past_ms:
        return f"timestamp too old: event_time_ms={event_time_ms} is {now_ms - event_time_ms} ms behind"
    return None


def _ids_reason(rec: Impression | Action) -> str | None:
    if not rec.request_id:
        return "missing request_id"
    if rec.user_id <= 0:
        return f"missing user_id (user_id={rec.user_id})"
    if rec.item_id <= 0:
        return f"missing item_id (item_id={rec.item_id})"
    return None


def validate_impression(rec: Impression, now_ms: int, limits: ValidationLimits) -> str | None:
    if reason := _ids_reason(rec):
        return reason
    if len(rec.slots) != len(rec.ids):
        return f"slots/ids length mismatch ({len(rec.slots)} != {len(rec.ids)})"
    return _time_reason(rec.event_time_ms, now_ms, limits)


def validate_action(rec: Action, now_ms: int, limits: ValidationLimits) -> str | None:
    if reason := _ids_reason(rec):
        return reason
    if not rec.action_type:
        return "missing action_type"
    if limits.action_types is not None and rec.action_type not in limits.action_types:
        return (f"unknown action_type {rec.action_type!r} (known: {', '.join(limits.action_types)}; "
                "declare a log's own types with validation.action_types)")
    return _time_reason(rec.event_time_ms, now_ms, limits)
