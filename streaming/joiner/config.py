"""Configuration of the join core (``[joiner]`` section). The Flink job adds its own
``[joiner_job]`` section (``streaming/joiner/job.py``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

from streamtrain.config import check

Policy = Literal["wait", "early"]
StallPolicy = Literal["hold", "flag", "off"]
POLICIES: tuple[Policy, ...] = get_args(Policy)
STALL_POLICIES: tuple[StallPolicy, ...] = get_args(StallPolicy)


@dataclass(frozen=True)
class JoinerConfig:
    """How impressions and actions are joined.

    window_ms: how long an impression waits for its actions (event time).
    policy: ``wait`` emits the final sample when the window closes (Facebook-style);
        ``early`` emits it at the first positive (Monolith-style, fresher).
    max_entries / max_bytes: memory bound of the window for the whole job (0 =
        unbounded); impressions pushed out by the bound are finalized early and go to the
        KV fallback. ``max_entries`` also bounds, separately, the actions waiting for
        their impression (pushed out: orphan check at once). The job runs one core per
        key bucket (``joiner_job.buckets``, spread over the subtasks), and each core gets
        ``bound // buckets`` (``per_core``): the cores of all subtasks together never hold
        more than the bound, whatever the parallelism (a subtask holds its buckets' share).
    kv_path / kv_ttl_ms: the rocksdict fallback holding impressions that left the window,
        so a late action still finds its features; entries live ``kv_ttl_ms`` of event time.
    orphan_wait_ms: an action whose impression is not known yet waits this long (event
        time) for it before it becomes an orphan (dead letter), measured on the impression
        clock (how far the impression input is known complete; ``clocks.py``), from the
        later of that clock and the action's event time: the action input running ahead
        cannot end the wait. Leave room for the impression input's disorder.
    negative_sample_rate: keep rate of negatives (1.0 = keep all); carried in the sample.
    stall_policy: what to do while the action stream is stalled (``hold`` the windows,
        ``flag`` the samples, ``off``); a stall is ``stall_after_ms`` of event time and at
        least ``stall_min_impressions`` impressions without any action. ``max_hold_ms``
        bounds how long past its deadline a held impression may wait.
    max_dedup_entries: bound of the memory of label types accounted for after the window
        (late corrections and orphans), used to drop their duplicates; for the whole job,
        split among the buckets like ``max_entries``.
    """

    window_ms: int = 600_000
    policy: Policy = "wait"
    max_entries: int = 1_000_000
    max_bytes: int = 1 << 30
    kv_path: str = ""
    kv_ttl_ms: int = 3 * 86_400_000
    orphan_wait_ms: int = 60_000
    negative_sample_rate: float = 1.0
    stall_policy: StallPolicy = "hold"
    stall_after_ms: int = 300_000
    stall_min_impressions: int = 1000
    max_hold_ms: int = 3_600_000
    max_dedup_entries: int = 1_000_000
    kv_purge_every_ms: int = 60_000

    def __post_init__(self) -> None:
        check(self.window_ms > 0, "joiner.window_ms", self.window_ms, "> 0 (milliseconds)")
        check(self.policy in POLICIES, "joiner.policy", self.policy, f"one of {POLICIES}")
        check(self.max_entries >= 0, "joiner.max_entries", self.max_entries, ">= 0 (0 = unbounded)")
        check(self.max_bytes >= 0, "joiner.max_bytes", self.max_bytes, ">= 0 (0 = unbounded)")
        check(self.kv_ttl_ms > 0, "joiner.kv_ttl_ms", self.kv_ttl_ms, "> 0 (milliseconds)")
        check(self.orphan_wait_ms >= 0, "joiner.orphan_wait_ms", self.orphan_wait_ms, ">= 0")
        check(0.0 < self.negative_sample_rate <= 1.0, "joiner.negative_sample_rate",
              self.negative_sample_rate, "in (0, 1]")
        check(self.stall_policy in STALL_POLICIES, "joiner.stall_policy", self.stall_policy,
              f"one of {STALL_POLICIES}")
        check(self.stall_after_ms > 0, "joiner.stall_after_ms", self.stall_after_ms, "> 0")
        check(self.stall_min_impressions >= 0, "joiner.stall_min_impressions",
              self.stall_min_impressions, ">= 0")
        check(self.max_hold_ms >= 0, "joiner.max_hold_ms", self.max_hold_ms, ">= 0")
        check(self.max_dedup_entries >= 0, "joiner.max_dedup_entries", self.max_dedup_entries,
              ">= 0 (0 = unbounded)")
        check(self.kv_purge_every_ms > 0, "joiner.kv_purge_every_ms", self.kv_purge_every_ms, "> 0")

    def per_core(self, cores: int) -> JoinerConfig:
        """The settings of one of ``cores`` join cores that share this job-wide config:
        each memory bound divided among them (at least 1 each; 0 stays unbounded), so
        together they hold at most the bound (when the bound is >= ``cores``; the job
        checks that)."""
        def share(bound: int) -> int:
            return max(1, bound // cores) if bound else 0

        return replace(self, max_entries=share(self.max_entries), max_bytes=share(self.max_bytes),
                       max_dedup_entries=share(self.max_dedup_entries))
