"""The joiner's memory bounds (max_entries, max_bytes, max_dedup_entries) are for the whole
job: each bucket's core gets bound // buckets, whatever the parallelism, so all the cores
of a job together never hold more than the bound."""

import zlib
from collections import Counter

import pytest

from schemas import FLAG_LATE_CORRECTION
from schemas.records import Sample
from streaming.event_time import END_OF_TIME
from streaming.joiner import JoinCore, JoinerConfig, KvFallback
from streaming.joiner.job import JOB
from streaming.joiner.join_function import JoinFunction
from streamtrain.config import ConfigError
from tests.helpers.flink_fakes import FakeMetricGroup
from tests.helpers.joiner_records import Journal, act, imp


def test_per_core_divides_each_bound_among_the_cores():
    cfg = JoinerConfig(max_entries=1000, max_bytes=10_000, max_dedup_entries=500)
    one = cfg.per_core(16)
    assert (one.max_entries, one.max_bytes, one.max_dedup_entries) == (62, 625, 31)
    assert 16 * one.max_entries <= cfg.max_entries and 16 * one.max_bytes <= cfg.max_bytes
    assert 16 * one.max_dedup_entries <= cfg.max_dedup_entries
    assert one.window_ms == cfg.window_ms and one.orphan_wait_ms == cfg.orphan_wait_ms
    unbounded = JoinerConfig(max_entries=0, max_bytes=0, max_dedup_entries=0).per_core(16)
    assert (unbounded.max_entries, unbounded.max_bytes, unbounded.max_dedup_entries) == (0, 0, 0)
    assert JoinerConfig(max_entries=3).per_core(16).max_entries == 1  # never 0 (= unbounded)
    assert cfg.per_core(1) == cfg


class _Context:
    """What JoinFunction.open asks of Flink's runtime context."""

    def __init__(self, index: int, parallelism: int) -> None:
        self.index, self.parallelism = index, parallelism

    def get_index_of_this_subtask(self):
        return self.index

    def get_number_of_parallel_subtasks(self):
        return self.parallelism

    def get_map_state(self, descriptor):
        return Journal()

    def get_metrics_group(self):
        return FakeMetricGroup()


@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_each_bucket_core_gets_its_share_of_the_job_bound_whatever_the_parallelism(
        tmp_path, parallelism):
    cfg = JoinerConfig(max_entries=1600, max_bytes=1 << 20, max_dedup_entries=800)
    per_core = []
    for index in range(parallelism):
        fn = JoinFunction(cfg, str(tmp_path / "kv"), "impressions", "actions", buckets=16)
        fn.open(_Context(index, parallelism))
        per_core.append(fn.bucket_cfg)
        fn.close()
    assert all(c == cfg.per_core(16) for c in per_core)
    assert (per_core[0].max_entries, per_core[0].max_bytes, per_core[0].max_dedup_entries) == \
        (100, (1 << 20) // 16, 50)


def test_the_cores_of_a_job_never_hold_more_than_its_bound(tmp_path):
    buckets, job = 8, JoinerConfig(window_ms=10**6, orphan_wait_ms=10**6, stall_policy="off",
                                   max_entries=200, max_bytes=40_000, max_dedup_entries=100)
    kv = KvFallback(tmp_path / "kv", job.kv_ttl_ms)
    cores = [JoinCore(job.per_core(buckets), kv) for _ in range(buckets)]
    core_of = lambda rid: cores[zlib.crc32(f"{rid}|7".encode()) % buckets]  # noqa: E731
    outs = []
    try:
        for n in range(2000):
            t = 1000 + n
            outs += core_of(f"r{n}").on_impression(imp(f"r{n}", t), t)
            outs += core_of(f"ghost{n}").on_action(act(f"ghost{n}", t), t)  # waits, no impression
            assert sum(len(c.window) for c in cores) <= job.max_entries
            assert sum(c.window.nbytes for c in cores) <= job.max_bytes
            assert sum(len(c.pending) for c in cores) <= job.max_entries
            assert sum(len(c.late) for c in cores) <= job.max_dedup_entries
            assert all(len(c.window) <= job.per_core(buckets).max_entries for c in cores)
        for c in cores:
            outs += c.advance(END_OF_TIME)
    finally:
        for c in cores:
            c.close()
        kv.close()
    assert sum(c.metrics.evicted for c in cores) > 0
    finals = Counter(o.request_id for o in outs
                     if isinstance(o, Sample) and not o.flags & FLAG_LATE_CORRECTION)
    assert finals == Counter(f"r{n}" for n in range(2000)), "evicted ones closed, not lost"


def test_restore_under_a_smaller_bound_loses_nothing(tmp_path):
    journal = Journal()
    big = JoinCore(JoinerConfig(window_ms=10**6, max_entries=10, stall_policy="off",
                                kv_path=str(tmp_path / "kv1")), journal=journal)
    for n in range(10):
        big.on_impression(imp(f"r{n}", 1000 + n), 1000)
    big.close()
    small = JoinCore(JoinerConfig(window_ms=10**6, max_entries=4, stall_policy="off",
                                  kv_path=str(tmp_path / "kv2")), journal=journal)
    small.restore(list(journal.items()))
    assert len(small.window) == 10                  # nothing dropped on the way in
    out = small.on_impression(imp("r10", 2000), 2000)
    assert len(small.window) == 4 and small.metrics.evicted == 7
    out += small.advance(END_OF_TIME)
    small.close()
    assert sorted(s.request_id for s in out) == sorted(f"r{n}" for n in range(11))


def test_the_job_refuses_a_bound_smaller_than_its_buckets():
    with pytest.raises(ConfigError, match="joiner.max_entries"):
        JOB.load(["--set", "joiner.max_entries=10", "--set", "joiner_job.buckets=16"])
    with pytest.raises(ConfigError, match="joiner.max_dedup_entries"):
        JOB.load(["--set", "joiner.max_dedup_entries=3", "--set", "joiner_job.buckets=16"])
    run = JOB.load(["--set", "joiner.max_entries=0", "--set", "joiner_job.buckets=16"])
    assert run["joiner"].max_entries == 0
