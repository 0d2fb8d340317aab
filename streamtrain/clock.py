"""The one wall clock of the system, injectable.

Logic takes time as an argument; the edges (Flink callbacks, Kafka loops, the publisher)
read it here so that a test can pass its own clock instead.

>>> fixed = FixedClock(1_700_000_000_000)
>>> fixed.now_ms()
1700000000000
>>> fixed.advance(500).now_ms()
1700000000500
>>> now_ms() > 1_600_000_000_000
True
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the time in epoch milliseconds."""

    def now_ms(self) -> int: ...


class WallClock:
    """The system clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FixedClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ms: int) -> None:
        self._now = int(start_ms)

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> FixedClock:
        self._now += int(ms)
        return self


WALL = WallClock()


def now_ms() -> int:
    """Epoch milliseconds from the wall clock."""
    return WALL.now_ms()
