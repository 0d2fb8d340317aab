from hypothesis import given
from hypothesis import strategies as st

from schemas import Sample, codec_for
from schemas.records import Action, Impression
from streaming.event_time import END_OF_TIME
from streaming.joiner.config import JoinerConfig
from streaming.joiner.join_function import JoinFunction, join_bucket
from tests.helpers.flink_fakes import KeyedHarness

ids = st.text(min_size=1, max_size=40)
items = st.integers(-(1 << 63), (1 << 63) - 1)
T0 = 1_700_000_000_000


@given(ids, items, st.integers(0, 1 << 40), st.integers(0, 1 << 40))
def test_join_bucket_is_the_same_for_an_impression_and_its_actions(rid, item, u1, u2):
    i = codec_for(Impression).encode(Impression(rid, u1, item, 1, [1], [2], [0.5]))
    a = codec_for(Action).encode(Action(rid, u2, item, "click", 2))
    assert join_bucket(i, 64) == join_bucket(a, 64)
    assert 0 <= join_bucket(i, 64) < 64


def test_join_bucket_of_garbage_is_bucket_zero():
    assert join_bucket(b"\x00\x01", 16) == 0


def test_join_bucket_spreads_keys():
    codec = codec_for(Impression)
    buckets = {join_bucket(codec.encode(Impression(f"r{i}", 1, 7, 1)), 32) for i in range(1000)}
    assert len(buckets) == 32


class _CountingHarness(KeyedHarness):
    def __init__(self, fn) -> None:
        self.registrations = 0
        super().__init__(fn)

    def register(self, t: int) -> None:
        self.registrations += 1
        super().register(t)


def test_a_bucket_registers_a_timer_only_when_its_first_deadline_moves_earlier(tmp_path):
    # 300 impressions, one bucket, a second apart, window 10 s: each push lands behind the
    # bucket's first deadline, so the timer registered for it stands; each firing closes
    # that second's windows and registers the next. Every impression still leaves once,
    # when its window has passed the watermark.
    buckets, window = 1, 10_000
    fn = JoinFunction(JoinerConfig(window_ms=window, stall_policy="off"), str(tmp_path / "kv"),
                      "impressions", "actions", buckets=buckets)
    h = _CountingHarness(fn)
    codec, samples, emitted_at = codec_for(Impression), codec_for(Sample), {}
    try:
        for n in range(300):
            t = T0 + 1000 * n
            raw = codec.encode(Impression(f"r{n}", 1, 7, t, [1], [2], [0.5]))
            out = h.element(1, raw, key=0, timestamp=t, watermark=t - 1)
            for s in h.split(out)[0]:
                emitted_at[samples.decode(s).request_id] = h.watermark
        out = h.advance(END_OF_TIME)
        for s in h.split(out)[0]:
            emitted_at[samples.decode(s).request_id] = h.watermark
    finally:
        h.close()
    assert len(emitted_at) == 300
    for n in range(280):  # the last ones leave with the final watermark
        assert T0 + 1000 * n + window <= emitted_at[f"r{n}"] <= T0 + 1000 * n + window + 1000
    # one registration per firing (about one a second of event time), not one per record
    # and firing (~600 before)
    assert h.registrations <= 300 + 2
