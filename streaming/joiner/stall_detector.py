"""Detects a stall of the action stream while impressions keep flowing (an upstream
outage), from event times passed in.

Stalled when the newest impression is more than ``after_ms`` ahead of the newest action
AND at least ``min_impressions`` impressions came since the last action (so a quiet
stream of rare actions, e.g. conversions, is not mistaken for an outage). Recovered when
the actions catch up to within ``after_ms`` again.

    stall = StallDetector(after_ms=300_000, min_impressions=1000)
    stall.on_impression(t); stall.on_action(t)
    stall.stalled, stall.action_time_ms
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class StallDetector:
    __slots__ = ("after_ms", "min_impressions", "impression_time_ms", "action_time_ms",
                 "since_action", "stalled", "episodes")

    def __init__(self, after_ms: int, min_impressions: int) -> None:
        self.after_ms = after_ms
        self.min_impressions = min_impressions
        self.impression_time_ms: int | None = None
        self.action_time_ms: int | None = None  # newest action seen (start of stream before)
        self.since_action = 0
        self.stalled = False
        self.episodes = 0

    def on_impression(self, event_time_ms: int) -> None:
        if self.impression_time_ms is None or event_time_ms > self.impression_time_ms:
            self.impression_time_ms = event_time_ms
        if self.action_time_ms is None:
            self.action_time_ms = event_time_ms  # the clock of actions starts with the stream
        self.since_action += 1
        if (not self.stalled and self.since_action >= self.min_impressions
                and self.lag_ms() > self.after_ms):
            self.stalled = True
            self.episodes += 1
            log.warning("action stream stalled lag_ms=%d impressions_since_action=%d",
                        self.lag_ms(), self.since_action)

    def on_action(self, event_time_ms: int) -> None:
        if self.action_time_ms is None or event_time_ms > self.action_time_ms:
            self.action_time_ms = event_time_ms
        self.since_action = 0
        if self.stalled and self.lag_ms() <= self.after_ms:
            self.stalled = False
            log.warning("action stream recovered lag_ms=%d", self.lag_ms())

    def lag_ms(self) -> int:
        if self.impression_time_ms is None or self.action_time_ms is None:
            return 0
        return self.impression_time_ms - self.action_time_ms
