"""MetricMirror (streaming/flink_metrics.py): the counters it keeps follow the operator's
figures, including the last records of a burst after which nothing comes (its processing-time
timer syncs them); the operator's own (event-time) timers are not taken for it."""

from __future__ import annotations

from pyflink.datastream.time_domain import TimeDomain

from streaming.flink_metrics import MetricMirror
from tests.helpers.flink_fakes import FakeMetricGroup


class Timers:
    def __init__(self) -> None:
        self.now = 1_000
        self.registered: list[int] = []

    def current_processing_time(self) -> int:
        return self.now

    def register_processing_time_timer(self, at: int) -> None:
        self.registered.append(at)


class Ctx:
    def __init__(self, timers: Timers, domain: TimeDomain = TimeDomain.PROCESSING_TIME) -> None:
        self.timers, self.domain = timers, domain

    def timer_service(self) -> Timers:
        return self.timers

    def time_domain(self) -> TimeDomain:
        return self.domain


def test_a_burst_then_silence_shows_the_bursts_last_record() -> None:
    group, figures, timers = FakeMetricGroup(), {"records": 0}, Timers()
    mirror = MetricMirror(group, lambda: dict(figures), every_s=60.0)
    for _ in range(5):  # a burst well inside every_s: each record syncs before its own change
        mirror.maybe_sync(Ctx(timers))
        figures["records"] += 1
    assert group.counters["records"].count == 0  # synced once, at the first record
    assert timers.registered == [61_000]  # one timer for the burst, every_s ahead
    assert not mirror.fired(Ctx(timers, TimeDomain.EVENT_TIME))  # the operator's own timer
    assert group.counters["records"].count == 0
    assert mirror.fired(Ctx(timers))
    assert group.counters["records"].count == 5
    figures["records"] -= 2  # a gauge going down
    mirror.maybe_sync(Ctx(timers))
    assert len(timers.registered) == 2  # the next record keeps a timer pending again
    assert mirror.fired(Ctx(timers)) and group.counters["records"].count == 3


def test_without_a_context_no_timer_is_registered() -> None:
    group, figures = FakeMetricGroup(), {"n": 1}
    mirror = MetricMirror(group, lambda: dict(figures), every_s=0.0)
    figures["n"] = 4
    mirror.maybe_sync()
    assert group.counters["n"].count == 4
