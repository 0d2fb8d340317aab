"""Against the real broker: KafkaSampleSource's prefetch workers (spawned processes, one
or two; or a thread, the default) serve the same samples, positions and dead letters; the
processes resume from start positions; an unknown worker kind is refused."""

from __future__ import annotations

import time

import pytest

from tests.helpers.trainer_models import SLOTS, produce_samples, small_model, small_trainer
from trainer.errors import StreamError
from trainer.stream import KafkaSampleSource
from trainer.synthetic import SyntheticStream

pytestmark = pytest.mark.integration


def _drain(source, want_positions: int) -> tuple[list[str], dict[int, int]]:
    seen: list[str] = []
    positions: dict[int, int] = {}
    deadline = time.monotonic() + 60
    try:
        while sum(positions.values()) < want_positions and time.monotonic() < deadline:
            batch = source.next_batch(timeout_s=1)
            if batch is not None:
                seen += batch.request_ids
                positions.update(batch.positions)
    finally:
        source.close()
    return seen, positions


@pytest.mark.parametrize(("prefetch", "workers"), [("process", 2), ("process", 1), ("thread", 1)])
def test_stream_prefetch_workers_serve_the_same_samples_positions_and_dead_letters(
        kafka_broker, topics, prefetch, workers):
    good = SyntheticStream(num_slots=SLOTS, seed=4).take(500)
    produce_samples(kafka_broker, topics.samples, good, extra=[b"\x00junk", b""], extra_partition=1)
    source = KafkaSampleSource(kafka_broker, topics, small_model(),
                               small_trainer(batch_size=64, max_wait_ms=50), prefetch=prefetch,
                               workers=workers)
    seen, positions = _drain(source, 502)
    assert sorted(seen) == sorted(s.request_id for s in good)
    assert positions == {0: 250, 1: 252}
    assert source.dead_letters == 2 and source.records == 502


def test_stream_prefetch_process_resumes_from_start_positions(kafka_broker, topics):
    good = SyntheticStream(num_slots=SLOTS, seed=5).take(200)
    produce_samples(kafka_broker, topics.samples, good)
    source = KafkaSampleSource(kafka_broker, topics, small_model(),
                               small_trainer(batch_size=32, max_wait_ms=50), start={0: 60, 1: 40})
    seen, positions = _drain(source, 200)
    expected = [s.request_id for i, s in enumerate(good) if i // 2 >= (60 if i % 2 == 0 else 40)]
    assert sorted(seen) == sorted(expected) and positions == {0: 100, 1: 100}


def test_stream_prefetch_rejects_an_unknown_worker(kafka_broker, topics):
    with pytest.raises(StreamError, match="prefetch="):
        KafkaSampleSource(kafka_broker, topics, small_model(), small_trainer(), prefetch="fiber")
    with pytest.raises(StreamError, match="workers="):
        KafkaSampleSource(kafka_broker, topics, small_model(), small_trainer(), workers=0)
