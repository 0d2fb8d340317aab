"""Typed Python records, one per `.avsc` file in `schemas/avro/` (the source of truth).

`tests/schemas/test_records.py` checks that every record has exactly its schema's field names
with matching Python types and defaults, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Sample.flags bits
FLAG_EARLY = 1  # emitted at the first positive, before the window closed (Monolith-style)
FLAG_LATE_CORRECTION = 2  # a label that arrived after the window closed, joined via the KV fallback
FLAG_ACTION_STALL = 4  # emitted while the action stream was stalled: its negative is suspect


@dataclass(slots=True)
class Impression:
    request_id: str
    user_id: int
    item_id: int
    event_time_ms: int
    slots: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    dense: list[float] = field(default_factory=list)
    schema_version: int = 1


@dataclass(slots=True)
class Action:
    request_id: str
    user_id: int
    item_id: int
    action_type: str
    event_time_ms: int
    value: float = 1.0
    schema_version: int = 1


@dataclass(slots=True)
class Sample:
    request_id: str
    user_id: int
    item_id: int
    event_time_ms: int
    emit_time_ms: int
    slots: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    dense: list[float] = field(default_factory=list)
    label_types: list[str] = field(default_factory=list)
    label_delays_ms: list[int] = field(default_factory=list)
    weight: float = 1.0
    # the joiner's negative keep rate r on every sample it emits, positives included
    # (schemas/contracts.py SAMPLE_RATE_CONTRACT)
    sample_rate: float = 1.0
    flags: int = 0
    schema_version: int = 1


@dataclass(slots=True)
class FeatureUpdate:
    entity_type: str
    entity_id: int
    event_time_ms: int
    names: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    last_items: list[int] = field(default_factory=list)
    schema_version: int = 1


@dataclass(slots=True)
class SparseDelta:
    model: str
    table: str
    version: int
    shard: int
    num_shards: int
    created_ms: int
    dim: int
    ids: list[int] = field(default_factory=list)
    values: bytes = b""
    tombstones: list[int] = field(default_factory=list)
    dtype: str = "fp32"
    part: int = 0
    num_parts: int = 1
    schema_version: int = 1


@dataclass(slots=True)
class DenseSnapshot:
    model: str
    version: int
    created_ms: int
    chunk: int
    num_chunks: int
    sha256: str
    payload: bytes
    format: str = "torch-state-dict"
    schema_version: int = 1


@dataclass(slots=True)
class DeadLetter:
    stage: str
    source_topic: str
    reason: str
    time_ms: int
    raw: bytes
    partition: int = -1
    offset: int = -1
    schema_version: int = 1


# record type -> schema file stem in schemas/avro/
SCHEMA_FILES: dict[type, str] = {
    Impression: "impression",
    Action: "action",
    Sample: "sample",
    FeatureUpdate: "feature_update",
    SparseDelta: "sparse_delta",
    DenseSnapshot: "dense_snapshot",
    DeadLetter: "dead_letter",
}
