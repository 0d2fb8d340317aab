"""The jobs' interpreter keeps collecting cyclic garbage after streaming/python_gc.py tunes
its collector (start-up objects frozen, higher thresholds), and tunes it once."""

from __future__ import annotations

import gc

import pytest

from streaming import python_gc


@pytest.fixture
def restored_gc(monkeypatch):
    """The test process's collector as it was, after the test."""
    thresholds = gc.get_threshold()
    monkeypatch.setattr(python_gc, "_tuned", False)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tune_freezes_start_up_objects_and_raises_thresholds_once(restored_gc) -> None:
    assert python_gc.tune() is True
    assert gc.get_threshold() == python_gc.THRESHOLDS
    assert gc.get_freeze_count() > 1000  # the modules, pytest, ...: all frozen
    frozen = gc.get_freeze_count()
    assert python_gc.tune() is False  # the second function's open: nothing more
    assert gc.get_freeze_count() <= frozen  # (frozen objects can still be freed)


def test_cycles_made_after_tuning_are_still_collected(restored_gc) -> None:
    python_gc.tune()
    freed = [0]

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

        def __del__(self) -> None:
            freed[0] += 1

    made = 0
    for _ in range(150_000):  # garbage cycles only reference counting cannot free
        a, b = Node(), Node()
        a.other, b.other = b, a
        made += 2
    del a, b
    # no explicit collect: the raised thresholds still trigger collections, and at most
    # about one young generation's worth of garbage is waiting
    assert freed[0] >= made - 2 * python_gc.THRESHOLDS[0]
    gc.collect()
    assert freed[0] == made


def test_off_keeps_the_defaults_and_stats_count_the_collections(restored_gc, monkeypatch, tmp_path) -> None:
    import json

    stats = tmp_path / "gc.jsonl"
    monkeypatch.setenv(python_gc.ENV_MODE, "off")
    monkeypatch.setenv(python_gc.ENV_STATS, str(stats))
    monkeypatch.setattr(python_gc, "_clock", None)
    before = gc.get_threshold()
    assert python_gc.tune() is False
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    try:
        gc.collect()
        gc.collect(0)
        python_gc.report("joiner-0")
    finally:
        gc.callbacks.remove(python_gc._clock)
    [line] = [json.loads(x) for x in stats.read_text().splitlines()]
    assert line["who"] == "joiner-0" and line["collections"][2] >= 1 and line["collections"][0] >= 1
    assert line["thresholds"] == list(before)
