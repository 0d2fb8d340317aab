"""Property: a crash and a restore from an earlier checkpoint lose nothing and duplicate
nothing. The core runs with a journal (what the Flink job checkpoints) and a KV fallback
on disk (which is *not* checkpointed). At a random point the journal is copied (the
checkpoint); the core goes on for a while, writing the KV, then dies. A new core restores
the copy, shares the same KV (rows written after the checkpoint included) and is fed the
events after the checkpoint again, with the two streams merged in another order between
watermark advances (two Kafka sources replaying at their own pace).

The outputs before the checkpoint plus the new core's outputs (what a transactional sink
delivers) must account for every impression once as a final sample and every distinct
label exactly once."""

import os
from collections import Counter

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from schemas import FLAG_LATE_CORRECTION, codec_for
from schemas.records import Action, DeadLetter, Sample
from streaming.joiner import END_OF_TIME, JoinCore, JoinerConfig
from streaming.joiner.kv_fallback import KvFallback
from tests.helpers.joiner_records import Journal, act, imp

TYPES = ["click", "like", "conversion"]

event = st.one_of(
    st.tuples(st.just("imp"), st.integers(0, 12), st.integers(-3, 3)),
    st.tuples(st.just("act"), st.integers(0, 12), st.sampled_from(TYPES)),
    st.tuples(st.just("tick"), st.integers(0, 8), st.none()),
)
configs = st.builds(
    JoinerConfig,
    window_ms=st.sampled_from([1, 5, 20]),
    policy=st.sampled_from(["wait", "early"]),
    max_entries=st.sampled_from([0, 2]),
    orphan_wait_ms=st.sampled_from([5, 10]),
    stall_policy=st.just("off"),
    kv_ttl_ms=st.just(10**9),
)


def _feed(core: JoinCore, events, now: int, out: list) -> int:
    for kind, a, b in events:
        if kind == "imp":
            out += core.on_impression(imp(f"r{a}", max(1, now + b)), now)
        elif kind == "act":
            out += core.on_action(act(f"r{a}", now + 1, b), now)
        else:
            now += a
            out += core.advance(now)
    return now


def _segments(events):
    """Split at watermark advances: the order inside a segment is free on replay."""
    seg: list = []
    for ev in events:
        if ev[0] == "tick":
            yield seg, ev
            seg = []
        else:
            seg.append(ev)
    yield seg, None


@settings(max_examples=int(os.environ.get("JOINER_PROPERTY_EXAMPLES", 300)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(configs, st.lists(event, max_size=60), st.integers(0, 60), st.integers(0, 60), st.randoms())
def test_restore_from_an_earlier_checkpoint_loses_and_duplicates_nothing(
        tmp_path_factory, cfg, events, cut, crash, rnd):
    # each distinct impression once (the dedup stage upstream drops repeats)
    seen, stream = set(), []
    for ev in events:
        if ev[0] == "imp":
            if ev[1] in seen:
                continue
            seen.add(ev[1])
        stream.append(ev)
    cut = min(cut, len(stream))
    crash = min(len(stream), cut + crash)
    kv = KvFallback(tmp_path_factory.mktemp("kv") / "kv", cfg.kv_ttl_ms)
    journal = Journal()

    try:
        first = JoinCore(cfg, kv, journal=journal)
        delivered: list = []
        now = _feed(first, stream[:cut], 1000, delivered)
        checkpoint, now_at_cut = dict(journal), now
        _feed(first, stream[cut:crash], now, [])  # outputs of the lost epoch: never delivered

        journal.clear()
        journal.update(checkpoint)
        second = JoinCore(cfg, kv, journal=journal)
        second.restore(list(journal.items()))
        now = now_at_cut
        for seg, tick in _segments(stream[cut:]):
            seg = list(seg)
            rnd.shuffle(seg)
            note(f"replayed {seg} then {tick}")
            now = _feed(second, seg + ([tick] if tick else []), now, delivered)
        delivered += second.advance(END_OF_TIME)
    finally:
        kv.close()

    imps = {f"r{e[1]}" for e in stream if e[0] == "imp"}
    finals = Counter(s.request_id for s in delivered
                     if isinstance(s, Sample) and not s.flags & FLAG_LATE_CORRECTION)
    assert finals == Counter(imps), "exactly one final sample per impression"
    labels = {(f"r{e[1]}", e[2]) for e in stream if e[0] == "act"}
    accounted: Counter = Counter()
    for o in delivered:
        if isinstance(o, Sample):
            for t in o.label_types:
                accounted[(o.request_id, t)] += 1
        else:
            assert isinstance(o, DeadLetter) and "orphan" in o.reason, o.reason
            a = codec_for(Action).decode(o.raw)
            accounted[(a.request_id, a.action_type)] += 1
    assert set(accounted) == labels, "no label lost"
    assert all(n == 1 for n in accounted.values()), "no label counted twice"
