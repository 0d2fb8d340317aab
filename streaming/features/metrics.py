"""Counters and gauges of one step of the feature job (user or item), engine-free: the Flink
function of the step updates them and exports each as a Flink counter (streaming.flink_metrics) under
``features.<entity>`` (exported by the Prometheus reporter, ``flink.metrics_port``; names in
docs/operations.md). The step's own counters (``FeatureStep.counters``: accepted
``impressions`` / ``actions``, ``duplicate_*``, ``late_impressions``, ``enriched``) are
registered next to these.

    m = FeatureMetrics()
    m.impressions_in += 1                 # a record read
    m.on_outputs(outs)                    # what the step emitted
    m.dead_letters.add(dl.reason)         # by reason key (streaming.dead_letters)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from schemas import Action, FeatureUpdate, Impression
from streaming.dead_letters import DeadLetterCounts


@dataclass
class FeatureMetrics:
    impressions_in: int = 0    # records read: the impressions topic (user step), or the user step's
    actions_in: int = 0        # impressions passed on (item step); the same for actions
    impressions_out: int = 0   # user step: to the item step; item step: to impressions-enriched
    actions_out: int = 0       # user step: to the item step; item step: to actions-deduped
    feature_updates: int = 0   # FeatureUpdates to the features topic
    entities_created: int = 0  # keys whose state this task created (a new user or item)
    entities_dropped: int = 0  # keys whose history aged out (state cleared)
    dead_letters: DeadLetterCounts = field(default_factory=DeadLetterCounts, repr=False)

    def counters(self) -> dict[str, int]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dead_letters"}
        out["dead_letters"] = self.dead_letters.total()
        out["entities"] = self.entities
        return out

    @property
    def entities(self) -> int:
        """Keys holding state in this task: exact from a fresh start; after a restore the
        restored keys are not counted until they are dropped (floored at 0)."""
        return max(0, self.entities_created - self.entities_dropped)

    def on_outputs(self, outs: Iterable[Impression | Action | FeatureUpdate]) -> None:
        for o in outs:
            if isinstance(o, Impression):
                self.impressions_out += 1
            elif isinstance(o, Action):
                self.actions_out += 1
            else:
                self.feature_updates += 1
