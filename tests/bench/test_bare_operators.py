"""The benchmarks' codec baselines (issue 15: "the same sources, sinks, decode and encode"):
what they write is what the job they stand beside would write for the same input shape,
and the start markers of the benchmarks pass through them."""

from __future__ import annotations

import pytest

from bench.bare_operators import (
    CodecForwardFunction,
    CodecItem,
    CodecUser,
    bare_command,
)
from schemas import Action, Impression, Sample, codec_for
from streaming.features.flink_functions import KIND_ACTION, KIND_IMPRESSION

IMP = Impression("r1", user_id=7, item_id=42, event_time_ms=1_000, slots=[1, 2], ids=[11, 12],
                 dense=[0.5])
ACT = Action("r1", 7, 42, "click", event_time_ms=1_500)
MARKER = b"\x00start-marker"


def test_joiner_codec_twin_writes_the_impressions_unlabelled_sample() -> None:
    fn = CodecForwardFunction()
    fn.open(None)
    [out] = list(fn.process_element1(codec_for(Impression).encode(IMP), None))
    sample = codec_for(Sample).decode(out)
    assert (sample.request_id, sample.user_id, sample.item_id, sample.event_time_ms) == ("r1", 7, 42, 1_000)
    assert (sample.slots, sample.ids, sample.dense) == ([1, 2], [11, 12], [0.5])
    assert sample.label_types == [] and sample.label_delays_ms == []
    [act] = list(fn.process_element2(codec_for(Action).encode(ACT), None))
    assert codec_for(Action).decode(act) == ACT


def test_codec_twins_forward_undecodable_bytes() -> None:
    fn = CodecForwardFunction()
    fn.open(None)
    assert list(fn.process_element1(MARKER, None)) == [MARKER]
    assert list(fn.process_element2(MARKER, None)) == [MARKER]
    user, item = CodecUser(), CodecItem()
    user.open(None)
    item.open(None)
    assert list(user.process_element1(MARKER, None)) == [(KIND_IMPRESSION, 0, MARKER)]
    assert list(item.process_element((KIND_ACTION, 0, MARKER), None)) == [MARKER]


def test_feature_codec_twin_recodes_in_both_steps() -> None:
    user, item = CodecUser(), CodecItem()
    user.open(None)
    item.open(None)
    raw = codec_for(Impression).encode(IMP)
    [step] = list(user.process_element1(raw, None))
    assert step[0] == KIND_IMPRESSION and codec_for(Impression).decode(step[2]) == IMP
    [out] = list(item.process_element(step, None))
    assert codec_for(Impression).decode(out) == IMP
    [astep] = list(user.process_element2(codec_for(Action).encode(ACT), None))
    assert codec_for(Action).decode(list(item.process_element(astep, None))[0]) == ACT


def test_bare_command_names_the_kind() -> None:
    assert bare_command("join")[-1] == "join"
    assert bare_command("features", "codec")[-2:] == ["features", "--codec"]
    assert bare_command("join", "pycodec")[-4:] == ["join", "--codec", "--set", "flink.jvm_ops=false"]
    with pytest.raises(ValueError, match="kind"):
        bare_command("join", "fast")
