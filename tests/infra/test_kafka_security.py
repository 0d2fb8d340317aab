"""streamtrain against a broker that requires TLS and SASL, as company clusters run it: the
local broker's SASL_SSL listener (a CA and broker certificate made here with openssl, SCRAM
and PLAIN users), the kafka-python clients of ``kafka_io``, and a real Flink job whose Kafka
source and sink go through the connector's Java client."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from schemas import Impression, Sample, codec_for
from streamtrain.kafka_io import (
    KafkaConfig,
    KafkaIOError,
    TopicsConfig,
    admin_client,
    create_topics,
    make_consumer,
    make_producer,
    read_all,
    topic_partitions,
)
from streamtrain.local_kafka import LocalKafka, LocalKafkaConfig, free_port
from streamtrain.paths import REPO_ROOT
from traffic.generator import GeneratorConfig, TrafficGenerator
from traffic.producer import produce

pytestmark = pytest.mark.integration

USER = "streamtrain"
PASSWORD = f"Pw-{uuid.uuid4().hex[:12]}!"  # unique: any occurrence in output is a leak
PASSWORD_ENV = "STREAMTRAIN_KAFKA_PASSWORD"


def make_certs(out: Path) -> dict[str, Path]:
    """A CA, and a broker certificate for localhost/127.0.0.1 signed by it (PEM, the key PKCS#8)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: needed to make the test certificates")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=streamtrain-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", "/CN=localhost")
    (out / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                 "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": out / "ca.pem", "cert": out / "broker.pem", "key": out / "broker.key"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A SASL_SSL broker on free ports; yields (bootstrap, CA file, password file)."""
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    ports = set()
    while len(ports) < 3:
        ports.add(free_port())
    port, controller, internal = ports
    broker = LocalKafka(LocalKafkaConfig(port=port, controller_port=controller, internal_port=internal,
                                         data_dir=tmp_path_factory.mktemp("kafka-sasl-ssl"),
                                         listener_security="SASL_SSL", ssl_certfile=str(certs["cert"]),
                                         ssl_keyfile=str(certs["key"])),
                        users={USER: PASSWORD})
    password_file = tmp_path_factory.mktemp("secret") / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    broker.start()
    try:
        yield broker.config.bootstrap, certs["ca"], password_file
    finally:
        broker.stop()


def capture_all(caplog) -> None:
    """Every log line at DEBUG, kafka-python's included (conftest quiets it to WARNING):
    kafka-python prints a client's config and the bytes of PLAIN's request at DEBUG."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kafka")


def client_config(secured, mechanism="SCRAM-SHA-512", password_file: Path | None = None) -> KafkaConfig:
    bootstrap, ca, default_file = secured
    return KafkaConfig(bootstrap=bootstrap, security_protocol="SASL_SSL", sasl_mechanism=mechanism,
                       sasl_username=USER, sasl_password_file=str(password_file or default_file),
                       ssl_cafile=str(ca), request_timeout_ms=20000)


def test_kafka_security_admin_produce_consume_with_each_mechanism(secured, monkeypatch, caplog):
    capture_all(caplog)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    by_env = KafkaConfig(bootstrap=secured[0], security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                         sasl_username=USER, sasl_password_env=PASSWORD_ENV, ssl_cafile=str(secured[1]))
    for kafka in (client_config(secured), client_config(secured, "PLAIN"), by_env):
        topic = f"secured-{kafka.sasl_mechanism.lower()}-{uuid.uuid4().hex[:6]}"
        create_topics(kafka, TopicsConfig(partitions=2), extra=[topic])
        assert topic_partitions(kafka, topic) == [0, 1]
        producer = make_producer(kafka)
        try:
            for i in range(20):
                producer.send(topic, value=f"v{i}".encode())
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=30)
        got = read_all(kafka, topic, expected=20, timeout_s=30)
        assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(20))
        assert PASSWORD not in repr(kafka)
    assert "Starting KafkaAdminClient with configuration" in caplog.text  # DEBUG lines were captured
    assert "Authenticated as streamtrain via SASL / Plain" in caplog.text
    assert PASSWORD not in caplog.text


def test_kafka_security_wrong_password_fails_fast_and_names_bootstrap_and_mechanism(secured, tmp_path, caplog):
    capture_all(caplog)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        kafka = client_config(secured, mechanism, password_file=wrong)
        for build in (admin_client, make_producer, lambda k: make_consumer(k, group_id=None)):
            started = time.monotonic()
            with pytest.raises(KafkaIOError) as info:
                build(kafka)
            elapsed = time.monotonic() - started
            message = str(info.value)
            assert elapsed < 5, f"took {elapsed:.1f}s to fail: {message}"
            assert "authentication failed" in message.lower()
            assert kafka.bootstrap in message and f"sasl_mechanism={mechanism}" in message
            assert "not-the-password" not in message and PASSWORD not in message
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text


def test_kafka_security_passthrough_job_reads_and_writes_the_secured_broker(secured, caplog, tmp_path):
    """The Flink connector (Java client: SCRAM-SHA-512, PEM trust store) reads impressions and
    writes checked ones and dead letters; a kafka-python consumer reads them back. The
    password is in neither the job's output nor Flink's own log."""
    capture_all(caplog)
    kafka = client_config(secured)
    topics = TopicsConfig(retention_hours=-1, dead_letter_retention_hours=-1).suffixed(uuid.uuid4().hex[:6])
    create_topics(kafka, topics)
    # recent event times: the job creates its output topic with the broker's 7-day retention,
    # and the broker's first retention check (30 s after its start) would delete older records
    gen = TrafficGenerator(GeneratorConfig(seed=5, duration_s=5, impressions_per_s=40, malformed_rate=0.05,
                                           start_ms=int(time.time() * 1000) - 60_000))
    produce(gen.events(), kafka, topics)
    output = f"{topics.impressions}.checked"
    cmd = [sys.executable, "-m", "streamtrain.cli", "passthrough", "--bounded",
           "--input", topics.impressions, "--output", output,
           "--set", f"kafka.bootstrap={kafka.bootstrap}",
           "--set", "kafka.security_protocol=SASL_SSL",
           "--set", "kafka.sasl_mechanism=SCRAM-SHA-512",
           "--set", f"kafka.sasl_username={USER}",
           "--set", f"kafka.sasl_password_env={PASSWORD_ENV}",
           "--set", f"kafka.ssl_cafile={kafka.ssl_cafile}",
           "--set", f"topics.dead_letter={topics.dead_letter}",
           "--set", "flink.checkpoint_interval_ms=0"]
    flink_logs = tmp_path / "flink-log"
    env = {**os.environ, PASSWORD_ENV: PASSWORD, "FLINK_LOG_DIR": str(flink_logs)}
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert PASSWORD not in res.stdout + res.stderr
    flink_log = "".join(f.read_text(errors="replace") for f in flink_logs.glob("*.log"))
    assert "sasl.jaas.config = [hidden]" in flink_log  # the clients' settings were logged...
    assert PASSWORD not in flink_log  # ...without the password

    good = gen.stats["impressions"] + gen.stats["duplicate_impressions"]
    out = read_all(kafka, output, expected=good, timeout_s=60)
    assert len(out) == good, f"{len(out)} of {good} impressions came out; job output:\n{res.stderr[-3000:]}"
    assert all(codec_for(Impression).decode(r.value).request_id for r in out)
    assert len(read_all(kafka, topics.dead_letter, expected=gen.stats["malformed"], timeout_s=60)) \
        == gen.stats["malformed"] > 0
    assert PASSWORD not in caplog.text


def test_kafka_security_trainer_consumes_and_publishes_on_the_secured_broker(secured, monkeypatch, caplog,
                                                                              tmp_path, capsys):
    """The trainer's consumer, dead-letter producer and the publisher's producers, from the
    command line with the password only in the environment: samples in, model deltas out."""
    import json

    from schemas import SparseDelta
    from streamtrain.cli import train as train_cli
    from tests.helpers.trainer_models import SLOTS, train_argv
    from trainer.synthetic import SyntheticStream

    capture_all(caplog)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    kafka = KafkaConfig(bootstrap=secured[0], security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                        sasl_username=USER, sasl_password_env=PASSWORD_ENV, ssl_cafile=str(secured[1]))
    topics = TopicsConfig(partitions=2).suffixed(f"sec-{uuid.uuid4().hex[:6]}")
    create_topics(kafka, topics)
    codec = codec_for(Sample)
    producer = make_producer(kafka)
    try:
        for s in SyntheticStream(num_slots=SLOTS, seed=9).take(400):
            producer.send(topics.samples, codec.encode(s))
        producer.flush()
    finally:
        producer.close()
    sets = ["kafka.security_protocol=SASL_SSL", "kafka.sasl_mechanism=SCRAM-SHA-512", f"kafka.sasl_username={USER}",
            f"kafka.sasl_password_env={PASSWORD_ENV}", f"kafka.ssl_cafile={secured[1]}"]
    assert train_cli.main(train_argv(kafka, topics, tmp_path, "--max-samples", "400", "--idle-timeout", "20",
                                     "--batch-size", "100", sets=sets)) == 0
    out = capsys.readouterr()
    final = json.loads(out.out.strip().splitlines()[-1])
    assert final["samples"] == 400 and final["model_version"] >= 1
    deltas = [codec_for(SparseDelta).decode(r.value) for r in read_all(kafka, topics.model_deltas, timeout_s=30)]
    assert deltas and max(d.version for d in deltas) == final["model_version"]
    assert PASSWORD not in out.out + out.err + caplog.text
