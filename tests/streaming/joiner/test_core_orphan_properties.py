"""Property: actions that reach the joiner before their impressions are never orphans, whatever
the watermark does, as long as each impression comes before the impression input is past
its action's time + ``orphan_wait_ms``.

The core is driven as the Flink job drives it: the watermark (any monotone sequence, as far
ahead as an input running ahead, or stamped with wall-clock times, takes it) closes windows;
the subtask's ``ImpressionClock`` ends the actions' waits. The impressions keep the
watermark's contract among themselves (none more than ``out_of_orderness_ms`` behind an
earlier one). Every action precedes its impression, with an event time from
``orphan_wait_ms - 1`` before to ``window_ms`` after it (same timestamp: a rating log, a click
logged in the impression's second). Then: no orphan, no correction, and every label is in
its impression's one final sample."""

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import FLAG_LATE_CORRECTION
from schemas.records import DeadLetter, Sample
from streaming.event_time import END_OF_TIME
from streaming.joiner import JoinCore, JoinerConfig
from streaming.joiner.clocks import ImpressionClock
from tests.helpers.joiner_records import act, imp

TYPES = ["click", "like", "conversion"]
T0 = 1_000_000


@st.composite
def scenarios(draw):
    window = draw(st.sampled_from([1, 10, 100]))
    wait = draw(st.sampled_from([1, 5, 50]))
    ooo = draw(st.sampled_from([0, 3, 20]))
    cfg = JoinerConfig(window_ms=window, orphan_wait_ms=wait, max_entries=0,
                       policy=draw(st.sampled_from(["wait", "early"])),
                       stall_policy=draw(st.sampled_from(["hold", "flag", "off"])),
                       stall_after_ms=draw(st.sampled_from([1, 50])),
                       stall_min_impressions=draw(st.sampled_from([0, 3])),
                       max_hold_ms=draw(st.sampled_from([0, 10])), kv_ttl_ms=10**9)
    n = draw(st.integers(1, 10))
    base, feed, labels = T0, [], {}
    for i in range(n):
        base += draw(st.integers(0, 30))
        t = base + draw(st.integers(0, ooo))  # within the impressions' out-of-orderness
        feed.append(("imp", f"r{i}", t))
        labels[f"r{i}"] = {}
        for kind in draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)):
            labels[f"r{i}"][kind] = t + draw(st.integers(-(wait - 1), window))
    for rid, kinds in labels.items():  # each action anywhere before its impression
        for kind, t in kinds.items():
            at = feed.index(next(e for e in feed if e[:2] == ("imp", rid)))
            feed.insert(draw(st.integers(0, at)), ("act", rid, t, kind))
    for _ in range(draw(st.integers(0, 2 * len(feed)))):  # watermark steps anywhere
        step = draw(st.one_of(st.integers(0, 40), st.sampled_from([10**4, 10**9])))
        feed.insert(draw(st.integers(0, len(feed))), ("tick", step))
    return cfg, ooo, feed, labels


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 2 * T0))
def test_actions_ahead_of_their_impressions_are_never_orphans(scenario, wm0):
    cfg, ooo, feed, labels = scenario
    core = JoinCore(cfg)
    clock = ImpressionClock(ooo)
    wm, outs = wm0, []
    try:
        for ev in feed:
            if ev[0] == "imp":
                clock.on_impression(ev[2])
                outs += core.on_impression(imp(ev[1], ev[2]), wm)
            elif ev[0] == "act":
                outs += core.on_action(act(ev[1], ev[2], ev[3]), wm, impressions_ms=clock.at(wm))
            else:
                wm += ev[1]
                outs += core.advance(wm, impressions_ms=clock.at(wm))
        outs += core.advance(END_OF_TIME, impressions_ms=clock.at(END_OF_TIME))
    finally:
        core.close()

    assert not [o for o in outs if isinstance(o, DeadLetter)], "no orphan"
    samples = [o for o in outs if isinstance(o, Sample)]
    assert not [s for s in samples if s.flags & FLAG_LATE_CORRECTION], "no correction"
    assert Counter(s.request_id for s in samples) == Counter(list(labels)), "one final each"
    for s in samples:
        want = labels[s.request_id]
        assert sorted(s.label_types) == sorted(want), "every label in the final sample"
        t_imp = s.event_time_ms
        assert dict(zip(s.label_types, s.label_delays_ms)) == {
            k: max(0, t - t_imp) for k, t in want.items()}
    assert core.metrics.orphans == 0 and core.metrics.joined_labels == sum(map(len, labels.values()))


def test_the_watermark_alone_would_orphan_them():
    """The scenario the property guards: the watermark runs ahead with the actions (the
    impression input idle); waits measured on it end before the impressions come."""
    cfg = JoinerConfig(window_ms=100, orphan_wait_ms=5, kv_ttl_ms=10**9, stall_policy="off")
    old, new, clock = JoinCore(cfg), JoinCore(cfg), ImpressionClock(0)
    try:
        for core, clocked in ((old, False), (new, True)):
            core.on_action(act("r1", T0), T0 - 10, impressions_ms=clock.at(T0 - 10) if clocked else None)
            core.advance(T0 + 10**6, impressions_ms=clock.at(T0 + 10**6) if clocked else None)
        assert old.metrics.orphans == 1
        clock.on_impression(T0)
        out = new.on_impression(imp("r1", T0), T0 + 10**6) + new.advance(
            T0 + 10**6 + 1, impressions_ms=clock.at(T0 + 10**6 + 1))
        (s,) = [o for o in out if isinstance(o, Sample)]
        assert s.label_types == ["click"] and new.metrics.orphans == 0
    finally:
        old.close()
        new.close()
