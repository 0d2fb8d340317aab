"""The user step as the sorted path runs it (OrderedUserFeatureFunction, records in event-time
order, the gate's records included): what it passes to the item step is, byte for byte, the
codec's encoding of what FeatureStep.on_ordered computes (the impression with the user's
features and last-N items, the action), duplicates dropped, bad records dead-lettered."""

from __future__ import annotations

from schemas import Action, Impression, codec_for
from streaming.features.feature_step import FeatureStep
from streaming.features.flink_functions import (
    KIND_ACTION,
    KIND_IMPRESSION,
    OrderedUserFeatureFunction,
    user_key,
)
from streaming.features.spec import FeatureSpec
from tests.helpers.flink_fakes import KeyedHarness
from traffic.generator import GeneratorConfig, TrafficGenerator

SPEC = FeatureSpec()
IMP, ACT = codec_for(Impression), codec_for(Action)


def test_the_ordered_user_step_writes_the_codecs_bytes_of_on_ordered() -> None:
    gen = TrafficGenerator(GeneratorConfig(seed=3, duration_s=120, impressions_per_s=30,
                                           duplicate_rate=0.05, malformed_rate=0.02),
                           now_ms=1_700_000_000_000)
    events = [e for e in gen.events() if e.topic in ("impressions", "actions")]
    events.sort(key=lambda e: e.timestamp_ms)  # the order the JVM sort hands them over
    h = KeyedHarness(OrderedUserFeatureFunction(SPEC, "impressions", "actions"))
    step, states = FeatureStep(SPEC, "user"), {}
    got, want, dead = [], [], 0
    for e in events:
        kind = KIND_IMPRESSION if e.topic == "impressions" else KIND_ACTION
        raw = bytes(e.value)
        main, side = KeyedHarness.split(h.element(0, (kind, 0, raw), key=user_key(raw)))
        got += main
        dead += len(side.get("dead-letter", ()))
        if e.key == b"malformed":
            continue
        rec = (IMP if kind == KIND_IMPRESSION else ACT).decode(raw)
        for o in step.on_ordered(states.setdefault(rec.user_id, step.new_state()), rec):
            if isinstance(o, Impression):
                want.append((KIND_IMPRESSION, o.item_id, IMP.encode(o)))
            elif isinstance(o, Action):
                want.append((KIND_ACTION, o.item_id, ACT.encode(o)))
    assert got == want
    assert sum(k == KIND_IMPRESSION for k, _, _ in got) == gen.stats["impressions"]
    # some impressions got last-N items in their slots and ids
    assert any(SPEC.last_n_slot in IMP.decode(b).slots for k, _, b in got if k == KIND_IMPRESSION)
    assert dead == gen.stats["malformed"] > 0
