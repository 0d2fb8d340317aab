from collections import Counter

import pytest

from schemas import Action, DeadLetter, Impression, codec_for
from streaming.record_gate import RecordGate
from traffic.generator import GeneratorConfig, TrafficGenerator

START = 1_700_000_000_000
NOW = START + 3_600_000


def _run(**kw):
    gen = TrafficGenerator(GeneratorConfig(**{"duration_s": 30, "start_ms": START, **kw}))
    return gen, list(gen.events())


def test_generator_same_seed_same_bytes_other_seed_other_bytes():
    _, a = _run(seed=3)
    _, b = _run(seed=3)
    _, c = _run(seed=4)
    assert [(e.topic, e.value, e.timestamp_ms) for e in a] == [(e.topic, e.value, e.timestamp_ms) for e in b]
    assert [e.value for e in a] != [e.value for e in c]


def test_generator_arrivals_are_ordered_and_never_before_event_time():
    _, events = _run(out_of_order_rate=0.2)
    arrivals = [e.arrival_ms for e in events]
    assert arrivals == sorted(arrivals)
    assert all(e.arrival_ms >= e.timestamp_ms for e in events)
    # out-of-order injection really reorders event times
    times = [e.timestamp_ms for e in events]
    assert any(b < a for a, b in zip(times, times[1:]))


def test_generator_actions_follow_their_impression():
    _, events = _run(duplicate_rate=0, malformed_rate=0)
    imp_codec, act_codec = codec_for(Impression), codec_for(Action)
    shown = {}
    for e in events:
        if e.topic == "impressions":
            imp = imp_codec.decode(e.value)
            shown[imp.request_id] = imp
    actions = [act_codec.decode(e.value) for e in events if e.topic == "actions"]
    assert actions, "a 30 s stream at 200/s must contain clicks"
    for act in actions:
        imp = shown[act.request_id]
        assert (act.user_id, act.item_id) == (imp.user_id, imp.item_id)
        assert act.event_time_ms > imp.event_time_ms
    kinds = Counter(a.action_type for a in actions)
    assert kinds["click"] > kinds["like"] > 0 and kinds["conversion"] > 0


def test_generator_stats_count_what_was_injected():
    gen, events = _run(duplicate_rate=0.05, malformed_rate=0.02)
    by_topic = Counter(e.topic for e in events)
    s = gen.stats
    assert by_topic["impressions"] == s["impressions"] + s["duplicate_impressions"] + s["malformed"]
    assert by_topic["actions"] == s["actions"] + s["duplicate_actions"]
    values = Counter(e.value for e in events if e.topic == "impressions" and e.key != b"malformed")
    assert sum(n - 1 for n in values.values()) == s["duplicate_impressions"]


def test_generator_malformed_records_are_all_rejected_by_the_gate_with_reasons():
    gen, events = _run(malformed_rate=0.05)
    gate = RecordGate(Impression, "test", "impressions")
    outs = [gate.update(e.value, NOW) for e in events if e.topic == "impressions"]
    dead = [o for o in outs if isinstance(o, DeadLetter)]
    assert len(dead) == gen.stats["malformed"] > 0
    reasons = " ".join(d.reason for d in dead)
    for expected in ("undecodable", "missing request_id", "absurd timestamp", "future"):
        assert expected in reasons


def test_generator_preferences_drift_over_event_time():
    gen = TrafficGenerator(GeneratorConfig(start_ms=START, drift_per_hour=2.0))
    before = gen.user_vec[0].copy()
    gen._drift(0, START + 6 * 3_600_000)
    assert not (gen.user_vec[0] == before).all()


def test_generator_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="generator.duplicate_rate"):
        GeneratorConfig(duplicate_rate=1.5)


def test_generator_flat_out_stream_is_history_ending_before_now():
    now = 1_800_000_000_000
    gen = TrafficGenerator(GeneratorConfig(duration_s=30, conversion_given_click=0.5), now_ms=now)
    events = list(gen.events())
    valid = [e.timestamp_ms for e in events if e.key != b"malformed"]
    assert max(valid) <= now and min(valid) >= now - (30 + gen.config.max_delay_s) * 1000


def test_generator_oracle_leaves_the_byte_stream_unchanged_and_predicts_its_labels():
    cfg = GeneratorConfig(seed=3, duration_s=120, start_ms=1_700_000_000_000, duplicate_rate=0.0,
                          malformed_rate=0.0)
    plain = [(e.topic, e.value) for e in TrafficGenerator(cfg).events()]
    gen = TrafficGenerator(cfg, record_oracle=True)
    assert [(e.topic, e.value) for e in gen.events()] == plain  # same rng draws, same records
    imps = [codec_for(Impression).decode(v) for t, v in plain if t == "impressions"]
    clicked = {codec_for(Action).decode(v).request_id for t, v in plain
               if t == "actions" and codec_for(Action).decode(v).action_type == "click"}
    truth = gen.true_probabilities([i.request_id for i in imps])
    assert truth.shape == (len(imps), 3) and ((truth > 0) & (truth < 1)).all()
    assert (truth[:, 1] < truth[:, 0]).all() and (truth[:, 2] < truth[:, 0]).all()  # like, conversion follow a click
    y = [i.request_id in clicked for i in imps]
    assert abs(truth[:, 0].sum() - sum(y)) < 4 * sum(y) ** 0.5  # calibrated: expected ~ observed clicks
    p_clicked = truth[[k for k, c in enumerate(y) if c], 0].mean()
    p_not = truth[[k for k, c in enumerate(y) if not c], 0].mean()
    assert p_clicked > p_not  # and it ranks


def test_generator_without_record_oracle_keeps_nothing():
    gen = TrafficGenerator(GeneratorConfig(seed=1, duration_s=2, start_ms=1_700_000_000_000))
    list(gen.events())
    assert gen.oracle is None
    with pytest.raises(ValueError, match="record_oracle"):
        gen.true_probabilities(["g1-0"])
