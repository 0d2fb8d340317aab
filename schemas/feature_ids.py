"""Turning raw feature values into the 64-bit sparse ids carried in Impression/Sample.

An id encodes (slot, value) so equal raw values in different slots never share a row:
integers go through splitmix64, strings through blake2b. Deterministic across processes and
machines (serving computes the same ids as training).

>>> feature_id(3, 12345), feature_id(0, "android")
(3248991505913717303, -484459315406349648)
>>> feature_id(0, 12345) != feature_id(3, 12345)
True
"""

from __future__ import annotations

import hashlib

MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= (1 << 63) else x


def feature_id(slot: int, value: int | str) -> int:
    """The signed 64-bit id of ``value`` in ``slot`` (Avro longs are signed)."""
    if isinstance(value, int):
        return _signed(_splitmix64((slot << 56) ^ (value & MASK64)))
    digest = hashlib.blake2b(f"{slot}\x1f{value}".encode(), digest_size=8).digest()
    return _signed(int.from_bytes(digest, "little"))


def entity_id(value: str) -> int:
    """A positive 63-bit id for a raw user/item key: the integer itself when the key is a
    positive integer, else a hash of the string."""
    try:
        as_int = int(value)
        if 0 < as_int < (1 << 63):
            return as_int
    except ValueError:
        pass
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") & ((1 << 63) - 1)) or 1
