"""Stand-ins for what the jobs' Python operators ask of Flink, to drive them directly (no
MiniCluster): keyed value/list/map state scoped to the current key, a metrics group, a process
context with a timer service, and a harness that opens an operator, feeds it and fires its
event-time timers as the watermark moves.

    h = KeyedHarness(JoinFunction(cfg, str(tmp_path), "impressions", "actions", buckets=4))
    out = h.element(1, raw, key=join_bucket(raw, 4), watermark=wm)   # what the operator yielded
    out += h.advance(END_OF_TIME)                                     # fires every due timer
    samples, dead = h.split(out)                                      # main output, side outputs
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any


class _Key:
    """The current key, shared by a runtime context's states and the contexts."""

    value: Any = None


class FakeValueState:
    def __init__(self, key: _Key) -> None:
        self._key, self._data = key, {}

    def value(self):
        return self._data.get(self._key.value)

    def update(self, v) -> None:
        self._data[self._key.value] = v

    def clear(self) -> None:
        self._data.pop(self._key.value, None)


class FakeListState:
    def __init__(self, key: _Key) -> None:
        self._key = key
        self._data: dict[Any, list] = {}

    def get(self) -> list:
        return list(self._data.get(self._key.value, ()))

    def add(self, v) -> None:
        self._data.setdefault(self._key.value, []).append(v)

    def update(self, values) -> None:
        self._data[self._key.value] = list(values)

    def clear(self) -> None:
        self._data.pop(self._key.value, None)


class FakeMapState:
    def __init__(self, key: _Key) -> None:
        self._key, self._data = key, {}

    def _map(self) -> dict:
        return self._data.setdefault(self._key.value, {})

    def get(self, k):
        return self._map().get(k)

    def put(self, k, v) -> None:
        self._map()[k] = v

    def remove(self, k) -> None:
        self._map().pop(k, None)

    def contains(self, k) -> bool:
        return k in self._map()

    def items(self):
        return list(self._map().items())

    def keys(self):
        return list(self._map())

    def values(self):
        return list(self._map().values())

    def is_empty(self) -> bool:
        return not self._map()

    def clear(self) -> None:
        self._data.pop(self._key.value, None)


class FakeCounter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n

    def dec(self, n: int = 1) -> None:
        self.count -= n


class FakeMetricGroup:
    def __init__(self) -> None:
        self.gauges: dict[str, Callable[[], int]] = {}
        self.counters: dict[str, FakeCounter] = {}

    def add_group(self, name: str) -> FakeMetricGroup:
        return self

    def gauge(self, name: str, fn: Callable[[], int]) -> None:
        self.gauges[name] = fn

    def counter(self, name: str) -> FakeCounter:
        return self.counters.setdefault(name, FakeCounter())


class FakeRuntimeContext:
    def __init__(self, index: int = 0, parallelism: int = 1) -> None:
        self.key = _Key()
        self.index, self.parallelism = index, parallelism
        self.metrics = FakeMetricGroup()

    def get_index_of_this_subtask(self) -> int:
        return self.index

    def get_number_of_parallel_subtasks(self) -> int:
        return self.parallelism

    def get_state(self, descriptor) -> FakeValueState:
        return FakeValueState(self.key)

    def get_map_state(self, descriptor) -> FakeMapState:
        return FakeMapState(self.key)

    def get_list_state(self, descriptor) -> FakeListState:
        return FakeListState(self.key)

    def get_metrics_group(self) -> FakeMetricGroup:
        return self.metrics


class FakeTimerService:
    def __init__(self, harness: KeyedHarness) -> None:
        self._h = harness

    def current_watermark(self) -> int:
        return self._h.watermark

    def current_processing_time(self) -> int:
        return 0

    def register_event_time_timer(self, t: int) -> None:
        self._h.register(t)

    def register_processing_time_timer(self, t: int) -> None:
        pass


class FakeContext:
    def __init__(self, harness: KeyedHarness, timestamp: int | None = None) -> None:
        self._h, self._ts = harness, timestamp

    def get_current_key(self):
        return self._h.runtime.key.value

    def timer_service(self) -> FakeTimerService:
        return FakeTimerService(self._h)

    def timestamp(self) -> int | None:
        return self._ts

    def time_domain(self):
        """The harness fires event-time timers only (processing-time ones are dropped)."""
        from pyflink.datastream.time_domain import TimeDomain

        return TimeDomain.EVENT_TIME


class KeyedHarness:
    """One subtask of a keyed operator (ProcessFunction, KeyedProcessFunction or
    KeyedCoProcessFunction): ``open`` at construction, ``element`` feeds input 1 or 2 (0: a
    one-input operator) under a key, ``advance`` moves the watermark and fires due timers
    (per key, in time order; registered timers are de-duplicated like Flink's)."""

    def __init__(self, fn, runtime: FakeRuntimeContext | None = None) -> None:
        self.fn = fn
        self.runtime = runtime or FakeRuntimeContext()
        self.watermark = -(1 << 63)
        self._timers: list[tuple[int, int, Any]] = []
        self._registered: set[tuple[int, Any]] = set()
        self._seq = 0
        fn.open(self.runtime)

    def register(self, t: int) -> None:
        key = self.runtime.key.value
        if (t, key) not in self._registered:
            self._registered.add((t, key))
            self._seq += 1
            heapq.heappush(self._timers, (t, self._seq, key))

    def element(self, input_no: int, value, key=None, timestamp: int | None = None,
                watermark: int | None = None) -> list:
        out = self.advance(watermark) if watermark is not None else []
        self.runtime.key.value = key
        ctx = FakeContext(self, timestamp)
        method = {0: "process_element", 1: "process_element1", 2: "process_element2"}[input_no]
        out += list(getattr(self.fn, method)(value, ctx) or ())
        return out

    def advance(self, watermark: int) -> list:
        out: list = []
        if watermark <= self.watermark:
            return out
        self.watermark = watermark
        while self._timers and self._timers[0][0] <= watermark:
            t, _, key = heapq.heappop(self._timers)
            self._registered.discard((t, key))
            self.runtime.key.value = key
            out += list(self.fn.on_timer(t, FakeContext(self, t)) or ())
        return out

    def close(self) -> None:
        self.fn.close()

    @staticmethod
    def split(outputs: Iterable) -> tuple[list, dict[str, list]]:
        """(main outputs, {side output tag name: records})."""
        main: list = []
        side: dict[str, list] = {}
        for o in outputs:
            if isinstance(o, tuple) and len(o) == 2 and hasattr(o[0], "tag_id"):
                side.setdefault(o[0].tag_id, []).append(o[1])
            else:
                main.append(o)
        return main, side
