"""The feature job's item step in the JVM (``streamtrain.flink.ItemFeatures``) on its own, in
a bounded MiniCluster job fed the user step's records directly: what it writes equals what
the engine-free FeatureStep gives for the same records in event-time order (impressions
late in arrival included), and bytes not of the codec's layout are dead-lettered with the
reason instead of stopping the job. The job-level equivalence (Python step against Java
step on one stream) is in test_job.py."""

from __future__ import annotations

import pytest

from schemas import Action, DeadLetter, FeatureUpdate, Impression, codec_for
from schemas.codec import MAGIC
from streaming.features.feature_step import FeatureStep
from streaming.features.flink_functions import (
    KIND_ACTION,
    KIND_IMPRESSION,
    actions_tag,
    features_tag,
    step_output_type,
)
from streaming.features.spec import FeatureSpec
from streaming.flink_env import FlinkConfig, dead_letter_tag, make_env, side_output
from streaming.jvm_ops import field_in_order, item_features_jvm, ops_jar

pytestmark = pytest.mark.integration

SPEC = FeatureSpec(windows_ms=(60_000, 600_000), action_types=("click", "buy"), ctr_action="buy")
T0 = 1_700_000_000_000
IMP, ACT = codec_for(Impression), codec_for(Action)


def _records() -> list[tuple[int, int, bytes]]:
    """(kind, item, bytes) of two items over 20 minutes, in an arrival order that is not
    event-time order (the sort in front puts it right), with equal times."""
    out = []
    for i in range(60):
        item = 5 if i % 3 else 9
        t = T0 + (i * 20_000) % 1_200_000 + (i % 4) * 7_000
        if i % 5 == 4:
            out.append((KIND_ACTION, item, ACT.encode(Action(f"r{i}", 7, item, ("click", "buy")[i % 2], t))))
        else:
            out.append((KIND_IMPRESSION, item, IMP.encode(Impression(
                f"r{i}", 7, item, t, [1, 2], [11, 12], [0.5] if i % 2 else []))))
    out.append((KIND_IMPRESSION, 5, IMP.encode(Impression("same-a", 7, 5, T0 + 40_000))))
    out.append((KIND_IMPRESSION, 5, IMP.encode(Impression("same-b", 7, 5, T0 + 40_000))))
    return out


def _expected(records: list[tuple[int, int, bytes]]) -> tuple[list, list, list]:
    """What ItemFeatureFunction(ordered=True) writes: per item in event-time order (equal
    times in arrival order), FeatureStep.on_ordered."""
    step = FeatureStep(SPEC, "item")
    states: dict[int, object] = {}
    enriched, actions, updates = [], [], []
    decoded = [(IMP if kind == KIND_IMPRESSION else ACT).decode(raw) for kind, _, raw in records]
    order = sorted(range(len(records)), key=lambda i: decoded[i].event_time_ms)
    for i in order:
        rec = decoded[i]
        state = states.setdefault(rec.item_id, step.new_state())
        for o in step.on_ordered(state, rec):
            if isinstance(o, Impression):
                enriched.append(IMP.decode(IMP.encode(o)))  # dense as the message holds it: float32
            elif isinstance(o, Action):
                actions.append(o)
            else:
                updates.append(o)
    return enriched, actions, updates


def _run(records: list[tuple[int, int, bytes]]) -> list[bytes]:
    flink = FlinkConfig()
    env = make_env(flink)
    env.set_parallelism(1)
    stream = env.from_collection(records, type_info=step_output_type())
    items = field_in_order(flink, stream, 1, step_output_type(), "item")
    assert items is not None
    tags = (actions_tag(), features_tag(), dead_letter_tag())
    out = item_features_jvm(items, SPEC, tags)
    assert out is not None
    everything = out.union(*(side_output(out, tag, flink) for tag in tags))
    with everything.execute_and_collect() as results:  # a byte[] arrives as signed ints
        return [r if isinstance(r, bytes) else bytes(b & 0xFF for b in r) for r in results]


def test_the_jvm_item_step_writes_what_the_python_step_computes() -> None:
    if ops_jar() is None:
        pytest.skip("no JDK (javac) here: the item step runs in Python")
    records = _records()
    junk = [(KIND_IMPRESSION, 5, b"junk"),
            (KIND_IMPRESSION, 5, MAGIC + bytes(8) + IMP.encode(Impression("x", 7, 5, T0))[10:]),
            (KIND_ACTION, 5, ACT.encode(Action("y", 7, 5, "teleport", T0)))]
    out = _run(records + junk)
    by_header: dict[bytes, list[bytes]] = {}
    for raw in out:
        by_header.setdefault(raw[:10], []).append(raw)

    def decoded(codec):
        return [codec.decode(r) for h, rs in by_header.items() if h in codec.own_headers for r in rs]

    enriched, actions, updates = _expected(records)
    assert sorted(map(repr, decoded(IMP))) == sorted(map(repr, enriched))
    assert sorted(map(repr, decoded(ACT))) == sorted(map(repr, actions))
    assert sorted(map(repr, decoded(codec_for(FeatureUpdate)))) == sorted(map(repr, updates))
    assert len(enriched) == 50 and len(actions) == 12 and len(updates) == 50
    dead = decoded(codec_for(DeadLetter))
    assert sorted(d.raw for d in dead) == sorted(raw for _, _, raw in junk)
    assert all(d.stage == "features" and d.source_topic == "user-step"
               and d.reason.startswith("undecodable: ") for d in dead)
