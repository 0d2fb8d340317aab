"""Against the real broker: KafkaSampleSource's prefetch workers (spawned processes, one
or two; or a thread, the default) serve the same samples, positions and dead letters; the
processes resume from start positions, and exit when the trainer process is killed; an
unknown worker kind is refused."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

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


_KILLED_TRAINER = """
import pickle, sys, time
from tests.helpers.trainer_models import small_model, small_trainer
from trainer.stream import KafkaSampleSource
kafka, topics = pickle.loads(open(sys.argv[1], "rb").read())
source = KafkaSampleSource(kafka, topics, small_model(), small_trainer(), prefetch="process")
print(" ".join(str(w.pid) for w in source._workers), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited (nobody reaped it yet)


def test_stream_prefetch_process_exits_when_the_trainer_process_is_killed(kafka_broker, topics,
                                                                           tmp_path):
    args = tmp_path / "args.pickle"
    args.write_bytes(pickle.dumps((kafka_broker, topics)))
    trainer = subprocess.Popen([sys.executable, "-c", _KILLED_TRAINER, str(args)],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        pids = [int(p) for p in trainer.stdout.readline().split()]
        assert pids and all(_running(p) for p in pids)
        os.kill(trainer.pid, signal.SIGKILL)  # no close(), no atexit: the workers are on their own
        trainer.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(p) for p in pids)
    finally:
        trainer.kill()
