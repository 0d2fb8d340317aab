"""Avro schemas (``schemas/avro/*.avsc``, the source of truth), typed records and their codec."""

from schemas.codec import Codec, codec_for
from schemas.errors import DecodeError, SchemaError
from schemas.records import (
    FLAG_ACTION_STALL,
    FLAG_EARLY,
    FLAG_LATE_CORRECTION,
    Action,
    DeadLetter,
    DenseSnapshot,
    FeatureUpdate,
    Impression,
    Sample,
    SparseDelta,
)

__all__ = [
    "FLAG_ACTION_STALL", "FLAG_EARLY", "FLAG_LATE_CORRECTION",
    "Action", "Codec", "DeadLetter", "DecodeError", "DenseSnapshot", "FeatureUpdate",
    "Impression", "Sample", "SchemaError", "SparseDelta", "codec_for",
]
