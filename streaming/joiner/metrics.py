"""Counters and gauges of the join core, read by the Flink job (as Flink metrics) and
logged periodically as one key=value line."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields


@dataclass
class JoinerMetrics:
    impressions: int = 0
    duplicate_impressions: int = 0
    actions: int = 0
    duplicate_actions: int = 0
    joined_labels: int = 0        # labels attached to an impression inside its window
    late_corrections: int = 0     # labels joined through the KV fallback after the window
    orphans: int = 0              # actions with no impression anywhere (dead-lettered)
    invalid: int = 0              # records rejected by validation (dead-lettered)
    unknown_action_types: int = 0  # actions of an undeclared type (dead-lettered)
    final_samples: int = 0
    positive_samples: int = 0
    negative_samples: int = 0
    dropped_negatives: int = 0    # removed by negative down-sampling
    early_samples: int = 0
    evicted: int = 0              # pushed out of the window by the memory bound
    stall_flagged: int = 0        # final samples emitted with FLAG_ACTION_STALL
    stall_episodes: int = 0
    stalled: int = 0              # gauge: 1 while the action stream is stalled
    window_occupancy: int = 0     # gauge: impressions waiting in the window
    window_bytes: int = 0         # gauge
    pending_actions: int = 0      # gauge: actions waiting for their impression
    kv_size: int = 0              # gauge: impressions in the KV fallback
    kv_unconfirmed: int = 0       # KV rows outside the checkpointed history (after a
                                  # restore): the action waited for its impression first
    time_skewed: int = 0          # records whose Kafka timestamp (the watermark's clock)
                                  # is over a minute from their event_time_ms
    # event-time wait from a label's action to the sample carrying it (last 10k labels)
    label_wait_ms: deque = field(default_factory=lambda: deque(maxlen=10_000), repr=False)

    def counters(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "label_wait_ms"}

    def joined_pct(self) -> float:
        """Share of distinct actions that found their impression (in window or late)."""
        distinct = self.actions - self.duplicate_actions - self.pending_actions
        joined = self.joined_labels + self.late_corrections
        return 100.0 * joined / distinct if distinct > 0 else 0.0

    def label_wait_percentile(self, q: float) -> int:
        if not self.label_wait_ms:
            return 0
        data = sorted(self.label_wait_ms)
        return data[min(len(data) - 1, int(q / 100.0 * len(data)))]

    def log_line(self) -> str:
        c = self.counters()
        parts = [f"{k}={v}" for k, v in c.items()]
        parts.append(f"joined_pct={self.joined_pct():.2f}")
        parts.append(f"label_wait_p50_ms={self.label_wait_percentile(50)}")
        parts.append(f"label_wait_p99_ms={self.label_wait_percentile(99)}")
        return " ".join(parts)

    def merge(self, other: JoinerMetrics) -> None:
        """Add another core's counters and gauges into this one (one line per subtask)."""
        for name in self.counters():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.label_wait_ms.extend(other.label_wait_ms)
