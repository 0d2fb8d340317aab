"""The action types are one declared list (``schemas/contracts.py`` ACTION_TYPES): the
generator emits them, validation accepts them by default, the feature job counts them and
the trainer has one head per type. An action of any other type is dead-lettered and
counted by the joiner (before, it was joined as a label no head reads: a silent negative);
a log with its own types (Taobao: cart, fav, buy) declares them in the config."""

import uuid

import pytest

from schemas import Action, DeadLetter, Impression, Sample, codec_for
from schemas.contracts import ACTION_TYPES
from schemas.validation import ValidationLimits
from streaming.event_time import END_OF_TIME
from streaming.features.spec import FeatureSpec
from streaming.joiner import job as joiner_job
from streaming.joiner.config import JoinerConfig
from streaming.joiner.core import JoinCore
from streaming.joiner.join_function import JoinFunction, join_bucket
from tests.helpers.flink_fakes import KeyedHarness
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.replay import ReplayPlan, dead_letter_check
from trainer.config import ModelConfig

T0 = 1_700_000_000_000
BUCKETS = 4


def test_seam_the_declared_action_types_are_every_stages_default(tmp_path):
    gen = TrafficGenerator(GeneratorConfig(seed=3, duration_s=60, start_ms=T0))
    act = codec_for(Action)
    emitted = {act.decode(e.value).action_type for e in gen.events() if e.topic == "actions"}
    assert emitted == set(ACTION_TYPES)
    assert ValidationLimits().action_types == ACTION_TYPES
    assert joiner_job.JOB.load([]).validation.action_types == ACTION_TYPES  # [validation]
    assert ModelConfig().heads == ACTION_TYPES
    assert FeatureSpec().action_types == ACTION_TYPES
    core = JoinCore(JoinerConfig(kv_path=str(tmp_path / "kv")))
    assert core.action_types == frozenset(ACTION_TYPES)
    core.close()


def _join(records: list[Impression | Action], tmp_path, limits: ValidationLimits | None = None):
    """The records through the joiner's Flink function, then the end of the input:
    (samples, dead letters, the function)."""
    fn = JoinFunction(JoinerConfig(window_ms=60_000, stall_policy="off"), str(tmp_path / "kv"),
                      "impressions", "actions", BUCKETS, log_interval_s=1e9, limits=limits)
    h = KeyedHarness(fn)
    out = []
    for r in records:
        raw = codec_for(type(r)).encode(r)
        out += h.element(1 if isinstance(r, Impression) else 2, raw, key=join_bucket(raw, BUCKETS),
                         timestamp=r.event_time_ms, watermark=r.event_time_ms - 1)
    out += h.advance(END_OF_TIME)
    h.close()
    main, side = h.split(out)
    dead = [codec_for(DeadLetter).decode(d) for d in side.get("dead-letter", [])]
    return [codec_for(Sample).decode(s) for s in main], dead, fn, h


def test_seam_an_undeclared_action_type_is_dead_lettered_and_counted_by_the_joiner(tmp_path, caplog):
    kind = f"teleport-{uuid.uuid4().hex[:6]}"  # warned once per process: a type of its own
    records = [Impression("r1", 1, 7, T0, [0], [5], []),
               Action("r1", 1, 7, "click", T0 + 1000),
               Action("r1", 1, 7, kind, T0 + 2000),
               Action("r2", 1, 8, kind, T0 + 3000)]  # (its impression never comes)
    with caplog.at_level("WARNING", logger="streaming.joiner.core"):
        samples, dead, fn, h = _join(records, tmp_path)
    assert [s.label_types for s in samples] == [["click"]]  # not joined as a label
    assert [d.stage for d in dead] == ["joiner", "joiner"]
    assert all(d.reason.startswith(f"unknown action_type {kind!r}") for d in dead)
    assert "validation.action_types" in dead[0].reason
    assert {codec_for(Action).decode(d.raw).request_id for d in dead} == {"r1", "r2"}
    assert fn.metrics.unknown_action_types == 2 and fn.metrics.orphans == 0
    fn.mirror.sync()
    assert h.runtime.metrics.counters["unknown_action_types"].count == 2  # a Flink metric
    warned = [r for r in caplog.records if kind in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"


def test_seam_a_log_declares_its_own_action_types(tmp_path, shared_data):
    run = joiner_job.JOB.load(["--set", "validation.action_types=cart,fav,buy"])
    assert run.validation.action_types == ("cart", "fav", "buy")
    samples, dead, fn, _ = _join([Impression("u1:7", 1, 7, T0, [0], [5], []),
                                  Action("u1:7", 1, 7, "buy", T0 + 1000),
                                  Action("u1:7", 1, 7, "click", T0 + 2000)], tmp_path, run.validation)
    assert [s.label_types for s in samples] == [["buy"]]
    assert [d.reason.split(" (")[0] for d in dead] == ["unknown action_type 'click'"]
    # the Taobao mapping: every action passes the jobs' validation once its types are declared
    events, unusable, _ = ReplayPlan.from_file("taobao").events(shared_data)
    now = T0 + 10 * 365 * 86_400_000
    def unknown(limits):
        rejected = dead_letter_check(events, unusable, limits, now).rejected
        return sum(n for reason, n in rejected.items() if reason.startswith("unknown action_type"))

    assert unknown(run.validation) == 0
    assert unknown(ValidationLimits()) == 6_063 + 3_383 + 2_493  # undeclared: all of them


@pytest.mark.parametrize("types", [None, ("click",)])
def test_seam_the_core_takes_the_list_it_is_given(tmp_path, types):
    core = JoinCore(JoinerConfig(kv_path=str(tmp_path / "kv")), action_types=types)
    out = core.on_action(Action("r", 1, 7, "like", T0), T0)
    assert (out == []) == (types is None)  # None: any type (it waits for its impression)
    core.close()
