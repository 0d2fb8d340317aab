"""trainer.prometheus without a broker: what a scrape shows after training and publishing."""

from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.trainer_models import SLOTS, small_model, small_table, small_trainer
from trainer.batch import BatchBuilder
from trainer.prometheus import TrainerExporter
from trainer.synthetic import SyntheticStream
from trainer.trainer import Trainer


def samples(exporter):
    text = generate_latest(exporter.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_exporter_reports_training_progress_and_timed_pushes(tmp_path):
    trainer = Trainer(small_model(), small_table(), small_trainer(checkpoint_dir=str(tmp_path)))
    builder = BatchBuilder(small_model())
    stream = SyntheticStream(num_slots=SLOTS, seed=4)
    publisher = SimpleNamespace(version=0, last_push=None, last_dump=None)

    def push(*_):  # what ModelPublisher.on_batch does when a push is due
        publisher.version += 1
        publisher.last_push = SimpleNamespace(rows=7, bytes=900)

    exporter = TrainerExporter(trainer, source=None, publisher=publisher)
    on_batch = exporter.on_batch(push)
    for _ in range(3):
        batch = builder.build(stream.take(256))
        trainer.train_batch(batch)
        on_batch(batch, trainer)
    trainer._report(100.0)
    trainer.save_checkpoint()
    m = samples(exporter)
    model = ("model", "ctr")
    assert m[("streamtrain_trainer_samples_total", (model,))] == 768
    assert m[("streamtrain_trainer_live_ids", (model,))] == trainer.table.num_live > 0
    assert m[("streamtrain_trainer_published_version", (model,))] == 3
    assert m[("streamtrain_trainer_last_push_rows", (model,))] == 7
    assert m[("streamtrain_trainer_publish_duration_seconds_count", (("kind", "sparse"), model))] == 3
    assert m[("streamtrain_trainer_checkpoint_duration_seconds_count", (model,))] == 1
    auc = m[("streamtrain_trainer_progressive", (("head", "click"), ("metric", "auc"), model,
                                                 ("window", "window")))]
    assert 0.0 <= auc <= 1.0


def test_exporter_serves_metrics_over_http_and_closes():
    import urllib.request

    trainer = Trainer(small_model(), small_table(), small_trainer())
    exporter = TrainerExporter(trainer)
    port = exporter.start(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert b"streamtrain_trainer_samples_total" in resp.read()
    finally:
        exporter.close()
