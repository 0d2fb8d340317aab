from hypothesis import given, strategies as st
import pytest

from streaming.joiner.hash_queue import HashQueue


def test_hash_queue_expires_in_deadline_order():
    q = HashQueue()
    q.push("a", 1, deadline_ms=10)
    q.push("b", 2, deadline_ms=20)
    q.push("c", 3, deadline_ms=30)
    assert list(q.expire(20)) == [("a", 1), ("b", 2)]
    assert len(q) == 1 and q.get("c") == 3 and q.head_deadline() == 30


def test_hash_queue_lookup_and_pop_from_the_middle():
    q = HashQueue()
    for i in range(5):
        q.push(i, str(i), deadline_ms=i)
    assert q.get(3) == "3" and 3 in q and q.get(9) is None
    assert q.pop(2) == "2" and q.pop(2) is None
    assert [k for k, _ in q.expire(100)] == [0, 1, 3, 4]


def test_hash_queue_clamps_an_earlier_deadline_to_the_tail():
    q = HashQueue()
    q.push("late", 1, deadline_ms=100)
    q.push("early", 2, deadline_ms=90)   # out of order: waits until the tail's deadline
    assert q.deadline("early") == 100
    assert list(q.expire(95)) == []
    assert [k for k, _ in q.expire(100)] == ["late", "early"]


def test_hash_queue_rejects_a_key_already_queued():
    q = HashQueue()
    q.push("a", 1, 0)
    with pytest.raises(KeyError):
        q.push("a", 2, 0)


def test_hash_queue_evicts_oldest_beyond_max_entries():
    q = HashQueue(max_entries=2)
    assert q.push("a", 1, 1) == [] and q.push("b", 2, 2) == []
    assert q.push("c", 3, 3) == [("a", 1)]
    assert len(q) == 2


def test_hash_queue_evicts_oldest_beyond_max_bytes_and_tracks_bytes():
    q = HashQueue(max_bytes=100)
    q.push("a", 1, 1, nbytes=60)
    assert q.push("b", 2, 2, nbytes=30) == [] and q.nbytes == 90
    assert q.push("c", 3, 3, nbytes=50) == [("a", 1)] and q.nbytes == 80
    q.pop("b")
    assert q.nbytes == 50
    q.resize("c", 70)
    assert q.nbytes == 70


@given(st.lists(st.tuples(st.sampled_from(["push", "pop", "expire"]),
                          st.integers(0, 30), st.integers(0, 200)), max_size=200),
       st.integers(0, 12))
def test_hash_queue_matches_a_reference_model(ops, bound):
    q = HashQueue(max_entries=bound)
    model: list[tuple[int, int]] = []  # (key, deadline) in FIFO order
    tail = -(1 << 62)
    for op, key, t in ops:
        if op == "push" and key not in q:
            tail = max(tail, t)
            model.append((key, tail))
            evicted = q.push(key, key * 10, t)
            expect = []
            while bound and len(model) > bound:
                expect.append(model.pop(0)[0])
            assert [k for k, _ in evicted] == expect
        elif op == "pop":
            assert (q.pop(key) is not None) == any(k == key for k, _ in model)
            model = [(k, d) for k, d in model if k != key]
        elif op == "expire":
            got = [k for k, _ in q.expire(t)]
            expect = []
            while model and model[0][1] <= t:
                expect.append(model.pop(0)[0])
            assert got == expect
        assert len(q) == len(model)
        assert [k for k, _, _ in q.items()] == [k for k, _ in model]
