"""Duplicate detection inside a bounded event-time TTL.

A record is a duplicate when a record with the same key was kept less than ``ttl_ms`` away
from it in event time. Keys are forgotten once the watermark passes ``kept + ttl_ms``, so
memory is bounded by the keys of the last TTL; a duplicate arriving later than that (behind
the watermark by more than the TTL) passes, which is the documented bound.

Compact, because the filter lives in Flink keyed state and is (un)pickled with every record:
a key is kept as its 8-byte digest (blake2b of its ``repr``: stable across processes, so a
restored checkpoint finds its keys) in one ``bytearray``, its kept time in a parallel
``array('q')``, both in insertion order; both pickle as one bytes blob each. Two distinct keys
of one entity's last TTL collide with probability ~n²/2⁶⁵ (n = 1000 keys: 3e-14), which
would drop the second record as a duplicate. Keys must have a deterministic ``repr``
(str, int, tuples of them).

>>> d = DedupFilter(ttl_ms=600_000)
>>> d.update(("r1", 7), event_time_ms=1000, watermark_ms=0)   # first: keep
True
>>> d.update(("r1", 7), event_time_ms=1000, watermark_ms=0)   # duplicate: drop
False
>>> d.update(("r1", 7), event_time_ms=601_000, watermark_ms=0), len(d)   # TTL apart: keep
(True, 1)
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable
from hashlib import blake2b

_DIGEST = 8  # bytes per kept key
_STATE_VERSION = 2  # (2, ttl_ms, digests, times, duplicates); version 1: (ttl_ms, {key: time}, duplicates)


def key_digest(key: Hashable) -> bytes:
    """The 8 bytes a key is kept as (stable across processes: not Python's salted ``hash``)."""
    return blake2b(repr(key).encode(), digest_size=_DIGEST).digest()


class DedupFilter:
    __slots__ = ("ttl_ms", "_keys", "_times", "duplicates", "_sweep_at")

    def __init__(self, ttl_ms: int):
        self.ttl_ms = ttl_ms
        self._keys = bytearray()  # 8-byte digests of the kept keys, in insertion order
        self._times = array("q")  # event time of each kept record (parallel to _keys)
        self.duplicates = 0
        self._sweep_at = 64

    def update(self, key: Hashable, event_time_ms: int, watermark_ms: int) -> bool:
        """True when the record is the first of its key inside the TTL (keep it)."""
        self.expire(watermark_ms)
        digest = key_digest(key)
        i = self._find(digest)
        if i >= 0:
            if abs(event_time_ms - self._times[i]) < self.ttl_ms:
                self.duplicates += 1
                return False
            # re-insert at the end: the order stays roughly by kept time
            del self._keys[i * _DIGEST:(i + 1) * _DIGEST]
            del self._times[i]
        self._keys += digest
        self._times.append(event_time_ms)
        return True

    def _find(self, digest: bytes) -> int:
        keys = self._keys
        at = keys.find(digest)
        while at > 0 and at % _DIGEST:  # a match straddling two digests: look further
            at = keys.find(digest, at + 1)
        return at // _DIGEST if at >= 0 else -1

    def expire(self, watermark_ms: int) -> None:
        """Forget keys whose TTL the watermark has passed: drops from the front (oldest
        inserted) and sweeps everything once the table doubled since the last sweep."""
        times, horizon = self._times, watermark_ms - self.ttl_ms
        n = 0
        for t in times:
            if t > horizon:
                break
            n += 1
        if n:
            del times[:n]
            del self._keys[:n * _DIGEST]
        if len(times) >= self._sweep_at:
            keep = [i for i, t in enumerate(times) if t > horizon]
            if len(keep) < len(times):
                keys = self._keys
                self._keys = bytearray().join(keys[i * _DIGEST:(i + 1) * _DIGEST] for i in keep)
                self._times = array("q", [times[i] for i in keep])
            self._sweep_at = max(64, 2 * len(keep))

    def __len__(self) -> int:
        return len(self._times)

    def __getstate__(self):
        return (_STATE_VERSION, self.ttl_ms, self._keys, self._times, self.duplicates)

    def __setstate__(self, state) -> None:
        if len(state) == 3:  # version 1 (a checkpoint from before the compact form)
            self.ttl_ms, kept, self.duplicates = state
            self._keys = bytearray().join(key_digest(k) for k in kept)
            self._times = array("q", kept.values())
        else:
            _, self.ttl_ms, self._keys, self._times, self.duplicates = state
        self._sweep_at = max(64, 2 * len(self._times))
