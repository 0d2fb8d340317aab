import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from streamtrain.cli import main
from streamtrain.kafka_io import TopicsConfig, admin_client, create_topics
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, LocalKafkaError, free_port


def test_local_kafka_missing_jars_is_a_clear_error(tmp_path):
    broker = LocalKafka(LocalKafkaConfig(port=free_port(), controller_port=free_port(),
                                         data_dir=tmp_path, jars_dir=tmp_path / "nojars"))
    with pytest.raises(LocalKafkaError, match="streamtrain jars"):
        broker.start()
    assert broker.status()["running"] is False


def test_local_kafka_config_rejects_clashing_ports():
    with pytest.raises(ValueError, match="kafka.controller_port"):
        LocalKafkaConfig(port=9092, controller_port=9092)


@pytest.mark.integration
def test_local_kafka_cli_start_status_stop(tmp_path, capsys):
    sets = ["--set", f"local_kafka.port={free_port()}", "--set", f"local_kafka.controller_port={free_port()}",
            "--set", f"local_kafka.data_dir={tmp_path}"]
    assert main(["kafka", "status", *sets]) == 1
    assert main(["kafka", "start", *sets]) == 0
    try:
        assert main(["kafka", "status", *sets]) == 0
        assert '"accepting": true' in capsys.readouterr().out
        # a second start finds the running broker instead of failing on the port
        assert main(["kafka", "start", *sets]) == 0
    finally:
        assert main(["kafka", "stop", *sets]) == 0
    assert main(["kafka", "status", *sets]) == 1


@pytest.mark.integration
def test_topics_create_is_idempotent_with_partitions_and_retention(kafka_broker):
    cfg = TopicsConfig(partitions=3, retention_hours=2).suffixed("idem")
    assert sorted(create_topics(kafka_broker, cfg)) == sorted(cfg.names())
    assert create_topics(kafka_broker, cfg) == []
    admin = admin_client(kafka_broker)
    try:
        meta = {t["name"]: t for t in admin.describe_topics(cfg.names())}
        assert len(meta["impressions.idem"]["partitions"]) == 3
        assert len(meta["model-deltas.idem"]["partitions"]) == cfg.model_deltas_partitions
        assert len(meta["model-dense.idem"]["partitions"]) == 1
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "samples.idem")])
        assert res["topic"]["samples.idem"]["retention.ms"]["value"] == str(2 * 3600 * 1000)
    finally:
        admin.close()


def test_a_cluster_id_that_starts_with_a_dash_formats(tmp_path, monkeypatch):
    """One random cluster id in 32 starts with "-"; the storage tool took it for an option
    and the first start failed (seen in CI as `up failed: formatting Kafka storage failed`)."""
    import base64
    import uuid

    raw = next(b for b in (uuid.uuid4().bytes for _ in range(100_000))
               if base64.urlsafe_b64encode(b).startswith(b"-"))
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(bytes=raw))
    broker = LocalKafka(LocalKafkaConfig(port=free_port(), controller_port=free_port(), data_dir=tmp_path))
    try:
        broker.start()
        assert broker.status()["accepting"]
        meta = (tmp_path / "data" / "meta.properties").read_text()
        assert f"cluster.id={base64.urlsafe_b64encode(raw).decode().rstrip('=')}" in meta
    finally:
        broker.stop()
