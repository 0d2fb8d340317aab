"""The first step of every streaming job: decode and validate raw Kafka bytes.

Engine-free (no Flink import): a Flink ProcessFunction wraps it, tests call it directly.
A usable record comes back decoded; anything else comes back as a DeadLetter with the
reason, and is counted by reason. Never raises on bad input.

    gate = RecordGate(Impression, stage="passthrough", topic="impressions")
    out = gate.update(raw_bytes, now_ms)      # Impression | DeadLetter
"""

from __future__ import annotations

from collections import Counter
from typing import Generic, TypeVar

from schemas import Action, DeadLetter, Impression, codec_for
from schemas.validation import ValidationLimits, validate_action, validate_impression

R = TypeVar("R", Impression, Action)

VALIDATORS = {Impression: validate_impression, Action: validate_action}


class RecordGate(Generic[R]):
    def __init__(self, record_type: type[R], stage: str, topic: str,
                 limits: ValidationLimits = ValidationLimits()):
        self.codec = codec_for(record_type)
        self.validate = VALIDATORS[record_type]
        self.stage, self.topic, self.limits = stage, topic, limits
        self.passed = 0
        self.rejected: Counter[str] = Counter()

    def update(self, raw: bytes, now_ms: int, partition: int = -1, offset: int = -1) -> R | DeadLetter:
        rec = self.codec.decode_or_dead_letter(raw, stage=self.stage, topic=self.topic,
                                               now_ms=now_ms, partition=partition, offset=offset)
        if not isinstance(rec, DeadLetter):
            reason = self.validate(rec, now_ms, self.limits)
            if reason is None:
                self.passed += 1
                return rec
            rec = DeadLetter(stage=self.stage, source_topic=self.topic, reason=reason,
                             time_ms=now_ms, raw=bytes(raw), partition=partition, offset=offset)
        self.rejected[rec.reason.split(":")[0]] += 1
        return rec

    def snapshot(self) -> dict:
        return {"passed": self.passed, "rejected": dict(self.rejected)}
