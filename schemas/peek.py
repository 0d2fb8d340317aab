"""Reading the leading fields of an Impression/Action message without a full decode, for
key selectors that run on every record (Flink ``key_by``). Both schemas start with
schema_version, request_id, user_id, item_id after the 10-byte single-object header.

>>> from schemas import Impression, codec_for
>>> raw = codec_for(Impression).encode(Impression("r1", user_id=7, item_id=42, event_time_ms=0))
>>> peek_ids(raw)                    # raises IndexError on truncated bytes
(b'r1', 7, b'T')
"""

from __future__ import annotations

from schemas.codec import HEADER_LEN

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1  # an Avro long, a Flink LONG key


def fits_long(value: int) -> bool:
    """Whether a peeked varint is an Avro long: a corrupt one (more than 64 bits) reads here
    as a larger Python int, while the Avro decoder silently wraps it."""
    return LONG_MIN <= value <= LONG_MAX


def varint_end(data: bytes, pos: int) -> int:
    """Position just past the varint starting at ``pos``."""
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def zigzag(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the zigzag varint (Avro int/long) at ``pos``."""
    shift = result = 0
    while True:
        b = data[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def length(data: bytes, pos: int) -> tuple[int, int]:
    """(length, next position) of the string/bytes length at ``pos``; IndexError for a
    negative one (corrupt bytes: a slice would count it from the end)."""
    n, pos = zigzag(data, pos)
    if n < 0:
        raise IndexError(f"negative length {n} at byte {pos}")
    return n, pos


def peek_ids(data: bytes) -> tuple[bytes, int, bytes]:
    """(request_id bytes, user_id, item_id's raw varint bytes) of an Impression/Action.
    user_id may exceed a long on corrupt bytes (``fits_long``). The JVM's twin:
    jvm/flink-ops' Peek (streaming/jvm_ops.py)."""
    pos = varint_end(data, HEADER_LEN)  # schema_version
    n, pos = length(data, pos)  # request_id
    rid = data[pos:pos + n]
    user_id, pos = zigzag(data, pos + n)
    return rid, user_id, data[pos:varint_end(data, pos)]


def peek_action_time(data: bytes) -> int:
    """event_time_ms of an Action message without a full decode (after schema_version,
    request_id, user_id, item_id, action_type).

    >>> from schemas import Action, codec_for
    >>> peek_action_time(codec_for(Action).encode(Action("r1", 7, 42, "click", event_time_ms=1234)))
    1234
    """
    pos = varint_end(data, HEADER_LEN)          # schema_version
    n, pos = length(data, pos)                   # request_id
    pos = varint_end(data, varint_end(data, pos + n))  # user_id, item_id
    n, pos = length(data, pos)                   # action_type
    return zigzag(data, pos + n)[0]


def peek_impression_time(data: bytes) -> int:
    """event_time_ms of an Impression message without a full decode (after schema_version,
    request_id, user_id, item_id).

    >>> from schemas import Impression, codec_for
    >>> peek_impression_time(codec_for(Impression).encode(Impression("r1", 7, 42, event_time_ms=99)))
    99
    """
    pos = varint_end(data, HEADER_LEN)          # schema_version
    n, pos = length(data, pos)                   # request_id
    pos = varint_end(data, varint_end(data, pos + n))  # user_id, item_id
    return zigzag(data, pos)[0]
