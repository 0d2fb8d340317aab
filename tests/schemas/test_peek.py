import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Action, Impression, codec_for
from schemas.peek import peek_ids, zigzag


@given(rid=st.text(max_size=30), user=st.integers(-(2**63), 2**63 - 1),
       item=st.integers(-(2**63), 2**63 - 1), action=st.booleans())
@settings(max_examples=200, deadline=None)
def test_peek_ids_agree_with_a_full_decode(rid, user, item, action):
    rec = Action(rid, user, item, "click", 1) if action else Impression(rid, user, item, 1)
    raw = codec_for(type(rec)).encode(rec)
    got_rid, got_user, item_bytes = peek_ids(raw)
    assert got_rid == rid.encode() and got_user == user
    assert zigzag(item_bytes, 0) == (item, len(item_bytes))


def test_peek_ids_truncated_bytes_raise_index_error():
    raw = codec_for(Impression).encode(Impression("r", 5, 6, 1))
    with pytest.raises(IndexError):
        peek_ids(raw[:12])
