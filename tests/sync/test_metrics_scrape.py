"""Scrape a real trainer (``streamtrain train``'s run, metrics port on) and a real replica
bootstrapped from it: every metric docs/operations.md names is exported."""

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas import Sample, codec_for
from streamtrain.cli import train as train_cli
from streamtrain.kafka_io import make_producer
from streamtrain.local_kafka import free_port
from sync.app import make_app
from sync.config import PublisherConfig, ReplicaConfig
from sync.replica import ServingReplica
from sync.server import ReplicaServer
from tests.helpers.trainer_models import SLOTS, small_model, small_table, small_trainer
from trainer.synthetic import SyntheticStream

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented() -> set[str]:
    return set(re.findall(r"`(streamtrain_(?:trainer|replica)_[a-z0-9_]+)`", DOC.read_text()))


def scrape(port: int) -> dict[str, list]:
    """Metric name (as exposed, e.g. with ``_total``, and as the family) -> samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, []).extend(fam.samples)
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(metrics: dict[str, list], name: str, **labels) -> float:
    for s in metrics.get(name, []):
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return float("nan")


def test_trainer_and_replica_export_every_documented_metric(kafka_broker, topics, tmp_path):
    samples = SyntheticStream(num_slots=SLOTS, seed=2).take(1024)
    producer = make_producer(kafka_broker)
    codec = codec_for(Sample)
    for i, s in enumerate(samples):
        producer.send(topics.samples, codec.encode(s), partition=i % 2)
    producer.flush()
    producer.close()

    port = free_port()
    cfg = small_trainer(batch_size=128, max_wait_ms=50, metrics_port=port, metrics_host="127.0.0.1",
                        checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every_batches=2,
                        report_every_batches=1)
    publish = PublisherConfig(model="ctr", sparse_interval_s=0.1, dump_dir=str(tmp_path / "dumps"))
    stop = train_cli.StopRequest()
    result: dict = {}
    trainer = threading.Thread(target=lambda: result.update(train_cli.run(
        kafka_broker, topics, small_model(), small_table(), cfg, publish, stop=stop)))
    trainer.start()
    replica = server = None
    try:
        deadline = time.monotonic() + 120
        t: dict[str, list] = {}
        while time.monotonic() < deadline:
            try:
                t = scrape(port)
            except OSError:  # not listening yet
                t = {}
            if value(t, "streamtrain_trainer_samples_total", model="ctr") >= 1024 and \
                    value(t, "streamtrain_trainer_dense_version") >= 1 and \
                    value(t, "streamtrain_trainer_checkpoint_duration_seconds_count") >= 1 and \
                    value(t, "streamtrain_trainer_publish_duration_seconds_count", kind="sparse") >= 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"trainer metrics never showed 1024 samples, a dump, a checkpoint and a push: {t}")
        assert value(t, "streamtrain_trainer_lag_records", partition="0") == 0
        assert value(t, "streamtrain_trainer_position", partition="1") == 512
        assert 0.0 <= value(t, "streamtrain_trainer_progressive", head="click", window="window",
                            metric="auc") <= 1.0

        replica = ServingReplica(ReplicaConfig(model="ctr", dump_dir=str(tmp_path / "dumps"),
                                               store_dir=str(tmp_path / "replica"), port=0,
                                               poll_interval_ms=20), kafka_broker, topics)
        replica.start()
        assert replica.wait_caught_up()
        server = ReplicaServer(make_app(replica), "127.0.0.1", 0)
        server.start()
        body = json.dumps({"instances": [{"slots": samples[0].slots, "ids": samples[0].ids}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/predict", data=body)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        r = scrape(server.port)
    finally:
        if server is not None:
            server.close()
        if replica is not None:
            replica.close()
        stop.set()
        trainer.join(60)
    assert result.get("samples") == 1024

    assert value(r, "streamtrain_replica_version", model="ctr") >= 1
    assert value(r, "streamtrain_replica_ready") == 1
    assert value(r, "streamtrain_replica_requests_total", route="/predict", code="200") == 1
    names = documented()
    assert len(names) >= 30, names
    missing = sorted(n for n in names if n not in (t if "_trainer_" in n else r))
    assert not missing, f"documented in docs/operations.md but not exported: {missing}"
