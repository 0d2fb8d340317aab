"""The first step of every streaming job: decode and validate raw Kafka bytes.

Engine-free (no Flink import): a Flink ProcessFunction wraps it, tests call it directly.
A usable record comes back decoded; anything else comes back as a DeadLetter with the
reason, and is counted by reason. Never raises on bad input.

>>> from schemas import Impression, codec_for
>>> gate = RecordGate(Impression, stage="passthrough", topic="impressions")
>>> raw = codec_for(Impression).encode(Impression("r1", 7, 42, event_time_ms=1_700_000_000_000))
>>> gate.update(raw, 1_700_000_000_000).item_id        # an Impression ...
42
>>> gate.update(b"junk", 1_700_000_000_000).reason     # ... or a DeadLetter with the reason
'undecodable: not an Avro single-object message (missing C3 01 marker)'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from schemas import Action, DeadLetter, Impression, codec_for
from schemas.peek import fits_long, peek_ids, zigzag
from schemas.validation import ValidationLimits, validate_action, validate_impression

R = TypeVar("R", Impression, Action)

# record type -> its validator (each takes a record of its key's type)
VALIDATORS: dict[type, Callable[[Any, int, ValidationLimits], str | None]] = {
    Impression: validate_impression, Action: validate_action}


class RecordGate(Generic[R]):
    def __init__(self, record_type: type[R], stage: str, topic: str,
                 limits: ValidationLimits | None = None):
        # mypy does not see class objects as Hashable (python/mypy#11470); they are
        self.codec = codec_for(record_type)  # type: ignore[arg-type]
        self.validate: Callable[[R, int, ValidationLimits], str | None] = VALIDATORS[record_type]
        self.stage, self.topic = stage, topic
        self.limits = ValidationLimits() if limits is None else limits
        self.passed = 0
        self.rejected: Counter[str] = Counter()

    def update(self, raw: bytes, now_ms: int, partition: int = -1, offset: int = -1) -> R | DeadLetter:
        rec = self.codec.decode_or_dead_letter(raw, stage=self.stage, topic=self.topic,
                                               now_ms=now_ms, partition=partition, offset=offset)
        if not isinstance(rec, DeadLetter):
            reason = _peek_mismatch(raw, rec) or self.validate(rec, now_ms, self.limits)
            if reason is None:
                self.passed += 1
                return rec
            rec = DeadLetter(stage=self.stage, source_topic=self.topic, reason=reason,
                             time_ms=now_ms, raw=bytes(raw), partition=partition, offset=offset)
        self.rejected[rec.reason.split(":")[0]] += 1
        return rec

    def snapshot(self) -> dict:
        return {"passed": self.passed, "rejected": dict(self.rejected)}


def _peek_mismatch(raw: bytes, rec: Impression | Action) -> str | None:
    """Why the ids the key selectors peek (``schemas.peek``) differ from the decoded ones,
    or None. The Avro decoder wraps a varint longer than a long (corrupt bytes) where the
    peek reads it whole: the record was keyed by a value it does not carry."""
    try:
        _, user_id, item = peek_ids(raw)
        item_id = zigzag(item, 0)[0]
    except IndexError:
        return "undecodable: the leading ids cannot be read"
    if not (fits_long(user_id) and fits_long(item_id)) or (user_id, item_id) != (rec.user_id,
                                                                                  rec.item_id):
        return "undecodable: user_id or item_id is a varint longer than a long"
    return None
