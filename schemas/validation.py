"""Semantic checks every stage applies after decoding: a record that decodes but cannot be
used (missing ids, absurd timestamps, unknown action type) gets a reason for the dead-letter
topic. Time is passed in (``now_ms``), never read from the clock here.

    reason = validate_impression(imp, now_ms, limits)   # None when the record is usable
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import Action, Impression

MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01: anything earlier is seconds-for-ms or a zero


@dataclass(frozen=True)
class ValidationLimits:
    max_future_ms: int = 3_600_000  # event time may run ahead of the processing clock by this
    max_past_ms: int | None = None  # None: replayed history of any age is fine
    action_types: tuple[str, ...] | None = None  # None: any non-empty type


def _time_reason(event_time_ms: int, now_ms: int, limits: ValidationLimits) -> str | None:
    if event_time_ms < MIN_EVENT_TIME_MS:
        return f"absurd timestamp: event_time_ms={event_time_ms} is before 2000-01-01"
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
        return f"unknown action_type {rec.action_type!r} (known: {', '.join(limits.action_types)})"
    return _time_reason(rec.event_time_ms, now_ms, limits)
