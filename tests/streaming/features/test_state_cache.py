"""The feature functions' state handling without a JVM (fake keyed state and timers): a key
read back from Flink's copy (the EntityState written last + its log of records replayed +
what its timers did since) gives the outputs the cached live state gives, and timers are
registered once per time, not once per record."""

from __future__ import annotations

import heapq
import pickle
import random
from collections.abc import Callable

from pyflink.datastream.time_domain import TimeDomain

from schemas import Action, Impression, codec_for
from streaming.features.flink_functions import (
    KIND_ACTION,
    KIND_IMPRESSION,
    LOG_LIMIT,
    ItemFeatureFunction,
    UserFeatureFunction,
)
from streaming.features.spec import FeatureSpec
from streaming.features.state_cache import StateCache

T0 = 1_700_000_000_000
SPEC = FeatureSpec(windows_ms=(60_000, 600_000), action_types=("click", "buy"), ctr_action="click",
                   dedup_ttl_ms=120_000)


class _Keyed:
    """Fake Flink keyed state: values kept pickled per key, as Flink keeps them (unlike
    ``tests.helpers.flink_fakes``, which keeps the objects: a read-back would then see the
    live object and prove nothing)."""

    def __init__(self, backend: _Backend, name: str, is_list: bool) -> None:
        self.backend, self.name, self.is_list = backend, name, is_list

    def value(self):
        raw = self.backend.data.get((self.name, self.backend.key))
        return None if raw is None else pickle.loads(raw)

    def update(self, value) -> None:
        self.backend.data[(self.name, self.backend.key)] = pickle.dumps(value)

    def get(self):
        return [pickle.loads(r) for r in self.backend.data.get((self.name, self.backend.key), [])]

    def add(self, value) -> None:
        self.backend.data.setdefault((self.name, self.backend.key), []).append(pickle.dumps(value))

    def clear(self) -> None:
        self.backend.data.pop((self.name, self.backend.key), None)


class _Group:
    def add_group(self, name):
        return self

    def counter(self, name):
        return self

    def inc(self, n=1):
        pass

    def dec(self, n=1):
        pass


class _Backend:
    """Runtime context + timer service + context of one keyed operator."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.key = 0
        self.watermark = -(2**63)
        self.timers: list[tuple[int, int]] = []
        self.registered: set[tuple[int, int]] = set()
        self.registrations = 0

    def get_state(self, desc):
        return _Keyed(self, desc.name, False)

    def get_list_state(self, desc):
        return _Keyed(self, desc.name, True)

    def get_metrics_group(self):
        return _Group()

    def timer_service(self):
        return self

    def current_watermark(self) -> int:
        return self.watermark

    def get_current_key(self) -> int:
        return self.key

    def current_processing_time(self) -> int:
        return 0

    def register_processing_time_timer(self, t: int) -> None:
        pass  # the metric mirror's: this backend fires event-time timers only

    def time_domain(self):
        return TimeDomain.EVENT_TIME

    def register_event_time_timer(self, t: int) -> None:
        self.registrations += 1
        if (t, self.key) not in self.registered:
            self.registered.add((t, self.key))
            heapq.heappush(self.timers, (t, self.key))


def _traffic(n: int, seed: int) -> list[tuple[int, bytes]]:
    """(kind, Avro bytes) in arrival order: out of order by up to 8 s, some duplicates and
    some records behind the watermark."""
    rng = random.Random(seed)
    imp, act = codec_for(Impression), codec_for(Action)
    out = []
    for i in range(n):
        t = T0 + i * 3000 + rng.randrange(-8000, 8000)
        if rng.random() < 0.05:
            t -= rng.choice((30_000, 300_000))  # late; by up to half the largest window
        user, item = rng.randrange(1, 6), rng.randrange(1, 5)
        if rng.random() < 0.7:
            out.append((KIND_IMPRESSION, imp.encode(Impression(f"r{i}", user, item, t, [1], [7], [0.5]))))
        else:
            typ = rng.choice(("click", "buy"))
            out.append((KIND_ACTION, act.encode(Action(f"r{i - 1}", user, item, typ, t))))
        if rng.random() < 0.05:
            out.append(out[-1])  # a duplicate
    return out


def _run_item(events: list[tuple[int, bytes]], cache_size: int,
              after: Callable[[_Backend], None] | None = None) -> tuple[list, int]:
    """The item function over ``events`` (watermark: max seen - 5 s, timers fired in time
    order; ``after`` looks at the backend after each record's), all outputs in order, and
    the timer registrations it made."""
    fn = ItemFeatureFunction(SPEC, cache_size=cache_size)
    be = _Backend()
    fn.open(be)
    outs: list = []
    seen = -(2**63)
    for kind, raw in events:
        rec = codec_for(Impression if kind == KIND_IMPRESSION else Action).decode(raw)
        be.key = rec.item_id
        outs += _plain(fn.process_element((kind, rec.item_id, raw), be))
        seen = max(seen, rec.event_time_ms)
        _advance(fn, be, seen - 5000, outs)
        if after is not None:
            after(be)
    _advance(fn, be, 2**62, outs)
    if after is not None:
        after(be)
    return outs, be.registrations


def _plain(outs) -> list:
    """Outputs comparable across function instances (an OutputTag by its name)."""
    return [tuple(getattr(x, "tag_id", x) for x in o) if isinstance(o, tuple) else o
            for o in outs]


def _advance(fn, be: _Backend, watermark: int, outs: list) -> None:
    if watermark <= be.watermark:
        return
    be.watermark = watermark
    while be.timers and be.timers[0][0] <= watermark:
        t, be.key = heapq.heappop(be.timers)
        be.registered.discard((t, be.key))
        outs += _plain(fn.on_timer(t, be))


def test_item_function_state_read_back_from_flink_gives_the_live_outputs():
    """cache_size=0: every record and timer reads the key from the fake Flink state (the
    written EntityState, its log replayed, the timers' work redone), as a restored or
    evicted key does; same outputs as the live cached objects, through log compactions."""
    events = _traffic(600, seed=4)
    live, _ = _run_item(events, cache_size=1000)
    read_back, _ = _run_item(events, cache_size=0)
    assert len(live) > 600 and len(events) > 4 * LOG_LIMIT
    assert read_back == live


def test_user_function_state_read_back_from_flink_gives_the_live_outputs():
    events = _traffic(600, seed=5)
    results = []
    for cache_size in (1000, 0):
        fn = UserFeatureFunction(SPEC, "impressions", "actions", cache_size=cache_size)
        be = _Backend()
        fn.open(be)
        outs: list = []
        seen = -(2**63)
        for kind, raw in events:
            rec = codec_for(Impression if kind == KIND_IMPRESSION else Action).decode(raw)
            be.key = rec.user_id
            process = fn.process_element1 if kind == KIND_IMPRESSION else fn.process_element2
            outs += _plain(process(raw, be))
            seen = max(seen, rec.event_time_ms)
            _advance(fn, be, seen - 5000, outs)
        _advance(fn, be, 2**62, outs)
        results.append(outs)
    assert results[0] == results[1]
    assert sum(1 for o in results[0] if o[0] == KIND_IMPRESSION) > 300


def test_item_function_registers_a_timer_once_per_time_not_per_record():
    events = _traffic(600, seed=6)
    _, registrations = _run_item(events, cache_size=1000)
    _, uncached = _run_item(events, cache_size=0)  # knows no registered times: registers again
    assert registrations < 0.75 * uncached  # 535 vs 776 (the cleanup tick is in state: both know it)


def test_state_cache_keeps_the_most_recently_used_keys():
    cache: StateCache[str] = StateCache(capacity=2)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1).state == "a"  # 1 is now the most recent
    cache.put(3, "c")
    assert cache.get(2) is None and cache.get(1).state == "a" and cache.get(3).state == "c"
    cache.drop(1)
    assert cache.get(1) is None and len(cache) == 1


def test_state_cache_of_capacity_zero_keeps_nothing():
    cache: StateCache[str] = StateCache(capacity=0)
    assert cache.put(1, "a").state == "a" and cache.get(1) is None and len(cache) == 0



def test_one_cleanup_timer_per_key_at_a_time():
    """New events move a key's cleanup later; the function keeps one cleanup timer per key
    (the one registered fires, finds the history still there and registers the next),
    instead of one per event that moved it, each of which would fire. A key read back
    from Flink knows its registered tick (cache_size=0 registers no more of them)."""
    from streaming.features.flink_functions import CLEANUP_TICK_MS

    events = _traffic(600, seed=7)

    class Ticks:
        """The most cleanup ticks one key had registered at once, and the last backend."""

        def __init__(self) -> None:
            self.most = 0
            self.backend: _Backend | None = None

        def __call__(self, be: _Backend) -> None:
            keys = [key for t, key in be.registered if t % CLEANUP_TICK_MS == 0]
            self.most = max([self.most, *(keys.count(k) for k in set(keys))])
            self.backend = be

    for cache_size in (1000, 0):
        ticks = Ticks()
        _run_item(events, cache_size, ticks)
        assert ticks.most == 1, cache_size
        assert ticks.backend is not None
        assert not ticks.backend.registered and not ticks.backend.data  # every key dropped
