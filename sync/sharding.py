"""Which serving shard owns an embedding id.

A shard is a partition of ``model-deltas``: ``shard = mix64(id) % num_shards``. The id is
mixed first (splitmix64 finalizer) because feature ids are often structured (slot in the
high bits, sequential low bits) and a plain modulo would put whole slots on one shard.
The function is part of the wire contract: a serving system that routes lookups to shards
must use the same one (``shard_of`` here, or the formula in docs/sync.md).

>>> import numpy as np
>>> shard_of(np.array([1, 2, 3]), 4).tolist()
[1, 2, 0]
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(ids: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on the two's-complement bits of int64 ids; returns uint64."""
    z = np.asarray(ids, dtype=np.int64).view(np.uint64).copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def shard_of(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard of each id, int64 in [0, num_shards)."""
    if num_shards == 1:
        return np.zeros(len(ids), dtype=np.int64)
    return (mix64(ids) % np.uint64(num_shards)).astype(np.int64)
