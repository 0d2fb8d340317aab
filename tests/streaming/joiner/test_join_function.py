from hypothesis import given
from hypothesis import strategies as st

from schemas import codec_for
from schemas.records import Action, Impression
from streaming.joiner.join_function import join_bucket

ids = st.text(min_size=1, max_size=40)
items = st.integers(-(1 << 63), (1 << 63) - 1)


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
