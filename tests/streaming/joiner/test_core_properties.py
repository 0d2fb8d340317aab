"""Property: for any interleaving of impressions, actions and watermark advances, each
impression yields exactly one final sample, and every distinct (impression, action type)
label is accounted for exactly once: in a sample (final or correction) or, when its action
came before its impression and waited in vain, as an orphan dead letter."""

from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import FLAG_LATE_CORRECTION, codec_for
from schemas.records import Action, DeadLetter, Sample
from streaming.joiner import END_OF_TIME, JoinCore, JoinerConfig
from tests.helpers.joiner_records import act, imp

TYPES = ["click", "like", "conversion"]

event = st.one_of(
    st.tuples(st.just("imp"), st.integers(0, 15), st.integers(-3, 3)),
    st.tuples(st.just("act"), st.integers(0, 17), st.sampled_from(TYPES)),
    st.tuples(st.just("tick"), st.integers(0, 8), st.none()),
)
configs = st.builds(
    JoinerConfig,
    window_ms=st.sampled_from([1, 5, 20]),
    policy=st.sampled_from(["wait", "early"]),
    max_entries=st.sampled_from([0, 1, 3]),
    orphan_wait_ms=st.sampled_from([0, 2, 10]),
    stall_policy=st.sampled_from(["hold", "flag", "off"]),
    stall_after_ms=st.sampled_from([1, 5]),
    stall_min_impressions=st.sampled_from([0, 3]),
    max_hold_ms=st.sampled_from([0, 10]),
    kv_ttl_ms=st.just(10**9),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs, st.lists(event, max_size=80))
def test_joiner_accounts_every_impression_and_label_exactly_once(cfg, events):
    core = JoinCore(cfg)
    now = 1000
    outs = []
    seen_imps: set[str] = set()
    labels_sent: set[tuple[str, str]] = set()
    imp_before_act: set[tuple[str, str]] = set()
    try:
        for kind, a, b in events:
            if kind == "imp" and f"r{a}" not in seen_imps:
                seen_imps.add(f"r{a}")
                outs += core.on_impression(imp(f"r{a}", max(1, now + b)), now)
            elif kind == "act":
                rid = f"r{a}"
                if rid in seen_imps and (rid, b) not in labels_sent:
                    imp_before_act.add((rid, b))
                labels_sent.add((rid, b))
                outs += core.on_action(act(rid, now + 1, b), now)
            elif kind == "tick":
                now += a
                outs += core.advance(now)
        outs += core.advance(END_OF_TIME)
    finally:
        core.close()

    finals = Counter(s.request_id for s in outs
                     if isinstance(s, Sample) and not s.flags & FLAG_LATE_CORRECTION)
    assert finals == Counter(seen_imps), "exactly one final sample per impression"

    accounted: Counter = Counter()
    for o in outs:
        if isinstance(o, Sample):
            for t in o.label_types:
                accounted[(o.request_id, t)] += 1
        else:
            assert isinstance(o, DeadLetter) and "orphan" in o.reason
            a = codec_for(Action).decode(o.raw)
            accounted[(a.request_id, a.action_type)] += 1
    assert all(n == 1 for n in accounted.values()), "no label counted twice"
    assert set(accounted) == labels_sent, "no label lost"
    for o in outs:
        if isinstance(o, DeadLetter):
            a = codec_for(Action).decode(o.raw)
            assert (a.request_id, a.action_type) not in imp_before_act, \
                "an action whose impression was already known is never an orphan"

    m = core.metrics
    assert m.window_occupancy == 0 and m.pending_actions == 0
    assert m.final_samples == len(seen_imps)
    per_key = defaultdict(int)
    for s in outs:
        if isinstance(s, Sample):
            per_key[s.request_id] += len(s.label_types)
    assert m.joined_labels + m.late_corrections == sum(per_key.values())
