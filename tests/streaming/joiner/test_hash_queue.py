import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_hash_queue_an_earlier_deadline_arriving_later_still_leaves_first():
    # a partition hours ahead in event time must not hold back the others' entries
    q = HashQueue()
    q.push("ahead", 1, deadline_ms=4 * 3600_000)
    q.push("early", 2, deadline_ms=90)
    q.push("tie", 3, deadline_ms=90)
    assert q.deadline("early") == 90 and q.head_deadline() == 90
    assert [k for k, _, _ in q.items()] == ["early", "tie", "ahead"]
    assert [k for k, _ in q.expire(100)] == ["early", "tie"]
    assert q.head_deadline() == 4 * 3600_000 and len(q) == 1


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
    model: list[tuple[int, int, int]] = []  # (deadline, arrival, key), kept sorted
    arrival = 0
    for op, key, t in ops:
        if op == "push" and key not in q:
            model.append((t, arrival, key))
            model.sort()
            arrival += 1
            evicted = q.push(key, key * 10, t)
            expect = []
            while bound and len(model) > bound:
                expect.append(model.pop(0)[2])
            assert [k for k, _ in evicted] == expect
        elif op == "pop":
            assert (q.pop(key) is not None) == any(k == key for _, _, k in model)
            model = [m for m in model if m[2] != key]
        elif op == "expire":
            got = [k for k, _ in q.expire(t)]
            expect = []
            while model and model[0][0] <= t:
                expect.append(model.pop(0)[2])
            assert got == expect
        assert len(q) == len(model)
        assert q.head_deadline() == (model[0][0] if model else None)
        assert [(k, d) for k, _, d in q.items()] == [(k, d) for d, _, k in model]


def test_hash_queue_compacts_heap_garbage_left_by_pops_from_the_middle():
    q = HashQueue()
    q.push("tail", 0, deadline_ms=10_000)
    for i in range(1000):  # all out of deadline order: they go to the heap
        q.push(i, i, deadline_ms=5_000 - i)
    for i in range(1000):
        if i % 4:
            assert q.pop(i) == i
            # garbage never outgrows the live entries (plus a little slack)
            assert len(q._heap) <= 2 * (len(q) - 1) + 65  # noqa: SLF001
    assert [k for k, _ in q.expire(5_000)] == list(range(996, -1, -4))
    assert len(q) == 1 and q.head_deadline() == 10_000
