"""Against the real broker: bulk decode with dead letters, restart from checkpointed offsets,
and the ``streamtrain train`` command."""

from __future__ import annotations

import json
import logging
import time

import pytest

from schemas import DeadLetter, Sample, SparseDelta, codec_for
from streamtrain.cli import train as cli
from streamtrain.config import ConfigError
from streamtrain.kafka_io import make_consumer, make_producer, read_all
from tests.helpers.trainer_models import SLOTS, produce_samples, small_model, small_table, small_trainer
from trainer.config import TrainerConfig
from trainer.stream import KafkaSampleSource
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer

pytestmark = pytest.mark.integration


def test_stream_sends_bad_records_to_dead_letter_and_serves_the_rest(kafka_broker, topics):
    good = SyntheticStream(num_slots=SLOTS, seed=1).take(300)
    bad_sample = Sample(request_id="bad", user_id=1, item_id=1, event_time_ms=0, emit_time_ms=0,
                        slots=[0, 1], ids=[5])
    produce_samples(kafka_broker, topics.samples, good,
                    extra=[b"\x00garbage", b"", codec_for(Sample).encode(bad_sample)])
    source = KafkaSampleSource(kafka_broker, topics, small_model(), small_trainer(batch_size=128, max_wait_ms=50))
    seen, positions = [], {}
    try:
        while len(seen) < 300 or sum(positions.values()) < 303:
            batch = source.next_batch(timeout_s=10)
            assert batch is not None, f"stream stalled at {len(seen)} samples"
            seen += batch.request_ids
            positions.update(batch.positions)
    finally:
        source.close()
    assert sorted(seen) == sorted(s.request_id for s in good)
    assert positions == {0: 153, 1: 150} and source.dead_letters == 3
    dead = [codec_for(DeadLetter).decode(r.value) for r in read_all(kafka_broker, topics.dead_letter, expected=3)]
    reasons = sorted(d.reason.split(":")[0] for d in dead)
    assert reasons == ["invalid sample", "undecodable", "undecodable"]
    assert all(d.stage == "trainer" and d.partition == 0 and d.offset >= 150 for d in dead)


class Crash(Exception):
    pass


def test_trainer_restart_trains_every_sample_exactly_once(kafka_broker, topics, tmp_path):
    samples = SyntheticStream(num_slots=SLOTS, seed=2).take(2000)
    produce_samples(kafka_broker, topics.samples, samples)
    m = small_model()
    cfg = small_trainer(batch_size=100, max_wait_ms=50, checkpoint_dir=str(tmp_path),
                        checkpoint_every_batches=3, max_samples=2000)
    trained: list[tuple[int, list[str]]] = []

    def crash_at_step_8(batch, trainer):
        trained.append((trainer.step, batch.request_ids))
        if trainer.step == 8:
            raise Crash  # steps 7 and 8 were trained but not checkpointed

    first = Trainer(m, small_table(), cfg)
    with pytest.raises(Crash):
        first.run(KafkaSampleSource(kafka_broker, topics, m, cfg), on_batch=crash_at_step_8)
    kept = [rid for step, ids in trained if step <= 6 for rid in ids]

    second = Trainer(m, small_table(), cfg)
    assert second.restore_latest() and second.step == 6 and second.samples == len(kept)
    assert sum(second.positions.values()) == len(kept)  # offsets of exactly what was trained
    after: list[str] = []
    second.run(KafkaSampleSource(kafka_broker, topics, m, cfg, start=second.positions),
               on_batch=lambda b, t: after.extend(b.request_ids))
    everything = kept + after
    assert len(everything) == len(set(everything)) == 2000  # none twice, none skipped
    assert second.samples == 2000 and sum(second.positions.values()) == 2000


def test_train_command_runs_bounded_and_writes_metrics_and_plot(kafka_broker, topics, tmp_path, capsys):
    produce_samples(kafka_broker, topics.samples, SyntheticStream(num_slots=SLOTS, seed=3).take(600))
    sets = [f"kafka.bootstrap={kafka_broker.bootstrap}", f"topics.samples={topics.samples}",
            f"topics.dead_letter={topics.dead_letter}", "model.slots=0,1,2,3,4,5", "model.dim=8", "model.dense_dim=0",
            "model.heads=click",
            "embedding.dim=8", "model.hidden=32", "trainer.report_every_batches=2",
            f"topics.model_deltas={topics.model_deltas}", f"topics.model_dense={topics.model_dense}",
            f"sync.dump_dir={tmp_path / 'dumps'}"]
    argv = ["--max-samples", "600", "--idle-timeout", "20", "--batch-size", "100", "--device", "cpu",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics", str(tmp_path / "m.jsonl"),
            "--plot", str(tmp_path / "auc.png")]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["samples"] == 600 and final["dead_letters"] == 0 and "click" in final
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) >= 3
    assert (tmp_path / "auc.png").stat().st_size > 0 and list((tmp_path / "ckpt").glob("ckpt-*.pt"))
    # the model went to serving: a dump at start, deltas, and the final model (dense + dump) at stop
    assert final["model_version"] >= 2 and list((tmp_path / "dumps").rglob("COMPLETE"))
    deltas = [codec_for(SparseDelta).decode(r.value) for r in read_all(kafka_broker, topics.model_deltas)]
    assert max(d.version for d in deltas) == final["model_version"]
    assert sum(len(d.ids) for d in deltas) > 0
    # a second run resumes at the end of the stream and stops when idle, training nothing twice
    argv[argv.index("--idle-timeout") + 1] = "1"
    argv[argv.index("--max-samples") + 1] = "0"
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["samples"] == 600


@pytest.mark.parametrize("isolation,expected", [("read_committed", "AC"), ("read_uncommitted", "ABC")])
def test_trainer_trains_only_on_committed_transactions(kafka_broker, topics, closing, isolation, expected):
    import uuid

    codec = codec_for(Sample)
    txn = closing(make_producer(kafka_broker, transactional_id=f"joiner-{uuid.uuid4().hex[:8]}"))
    txn.init_transactions()
    batches = {name: SyntheticStream(num_slots=SLOTS, seed=10 + k).take(100)
               for k, name in enumerate("ABC")}
    for name, samples in batches.items():  # A committed, B aborted, C committed
        for s in samples:
            s.request_id = f"{name}-{s.request_id}"
        txn.begin_transaction()
        for i, s in enumerate(samples):
            txn.send(topics.samples, codec.encode(s), partition=i % 2)
        txn.flush()
        if name == "B":
            txn.abort_transaction()
        else:
            txn.commit_transaction()
    m = small_model()
    cfg = small_trainer(batch_size=50, max_wait_ms=50, max_samples=100 * len(expected),
                        idle_timeout_s=10, isolation_level=isolation)
    assert TrainerConfig().isolation_level == "read_committed"  # the default
    trained: list[str] = []
    trainer = Trainer(m, small_table(), cfg)
    final = trainer.run(KafkaSampleSource(kafka_broker, topics, m, cfg),
                        on_batch=lambda b, t: trained.extend(b.request_ids))
    want = [s.request_id for name in expected for s in batches[name]]
    assert sorted(trained) == sorted(want) and final["samples"] == len(want)


def test_make_consumer_rejects_an_unknown_isolation_level(kafka_broker):
    with pytest.raises(ConfigError, match="isolation_level"):
        make_consumer(kafka_broker, isolation_level="read_some")


def test_stream_warns_once_per_idle_period_naming_the_dead_letter_topic(kafka_broker, topics, producer,
                                                                        closing, caplog):
    dl = codec_for(DeadLetter)
    for i in range(3):
        producer.send(topics.dead_letter, dl.encode(DeadLetter(
            stage="joiner", source_topic=topics.actions, reason=f"orphan action: no impression {i}",
            time_ms=0, raw=b"x", partition=0, offset=i)))
    producer.flush()
    caplog.set_level(logging.WARNING, logger="trainer.stream")
    source = closing(KafkaSampleSource(kafka_broker, topics, small_model(),
                                       small_trainer(batch_size=10, max_wait_ms=20, idle_warn_s=0.5)))

    def idle_warnings():
        return [r.getMessage() for r in caplog.records
                if r.name == "trainer.stream" and r.getMessage().startswith("no samples in")]

    served: list = []

    def poll_until(cond, deadline_s=20.0):
        deadline = time.monotonic() + deadline_s
        while not cond() and time.monotonic() < deadline:
            batch = source.next_batch(timeout_s=0.1)
            if batch is not None:
                served.append(batch)
        assert cond(), "condition not met before the deadline"

    poll_until(lambda: len(idle_warnings()) == 1)
    assert not served
    (msg,) = idle_warnings()
    assert topics.samples in msg and f"dead-letter topic {topics.dead_letter} has 3 records" in msg
    assert "joiner: orphan action x3" in msg
    quiet_until = time.monotonic() + 1.5  # three more idle thresholds: still one warning
    poll_until(lambda: time.monotonic() > quiet_until)
    assert len(idle_warnings()) == 1
    # a sample ends the idle period; the next one warns again
    producer.send(topics.samples, codec_for(Sample).encode(SyntheticStream(num_slots=SLOTS).take(1)[0]))
    producer.flush()
    poll_until(lambda: sum(len(b) for b in served) == 1)
    poll_until(lambda: len(idle_warnings()) == 2)
    ((part, offset),) = served[0].positions.items()
    assert offset == 1 and f"at positions {{{part}: 1}}" in idle_warnings()[1]
