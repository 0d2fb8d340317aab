"""Reading the leading fields of an Impression/Action message without a full decode, for
key selectors that run on every record (Flink ``key_by``). Both schemas start with
schema_version, request_id, user_id, item_id after the 10-byte single-object header.

    rid, user_id, item_varint = peek_ids(raw)     # raises IndexError on truncated bytes
"""

from __future__ import annotations

from schemas.codec import HEADER_LEN


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


def peek_ids(data: bytes) -> tuple[bytes, int, bytes]:
    """(request_id bytes, user_id, item_id's raw varint bytes) of an Impression/Action."""
    pos = varint_end(data, HEADER_LEN)  # schema_version
    n, pos = zigzag(data, pos)  # request_id length
    rid = data[pos:pos + n]
    user_id, pos = zigzag(data, pos + n)
    return rid, user_id, data[pos:varint_end(data, pos)]
