"""The TLS/SASL settings of ``[kafka]``: validation at the edge, the password read lazily and
never shown, and the settings each kind of client gets (no broker needed)."""

import logging

import pytest

from streamtrain import kafka_security
from streamtrain.config import ConfigError, load
from streamtrain.kafka_io import KafkaConfig

SECRET = "s3cr\"et\\pw"  # a quote and a backslash: JAAS quoting must survive them


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "kafka-password"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
def ca(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n")
    return path


def sasl_ssl(password_file, ca, **kw) -> KafkaConfig:
    return KafkaConfig(**{"bootstrap": "b1:9093", "security_protocol": "SASL_SSL", "sasl_username": "st",
                          "sasl_password_file": str(password_file), "ssl_cafile": str(ca), **kw})


def test_kafka_security_defaults_are_plaintext_and_need_nothing():
    kafka = KafkaConfig()
    assert kafka.security_protocol == "PLAINTEXT"
    assert kafka.client_settings()["security_protocol"] == "PLAINTEXT"
    assert "sasl_plain_password" not in kafka.client_settings()


@pytest.mark.parametrize("kw, field, allowed", [
    ({"security_protocol": "TLS"}, "kafka.security_protocol", "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u"},
     "kafka.sasl_mechanism", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512"),
    ({"security_protocol": "SASL_SSL"}, "kafka.sasl_username", "a user name"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u"}, "kafka.sasl_password_file", "exactly one of"),
    ({"sasl_username": "u"}, "kafka.sasl_username", "set kafka.security_protocol=SASL_SSL"),
    ({"ssl_cafile": "/etc/ca.pem"}, "kafka.ssl_cafile", "set kafka.security_protocol=SSL or SASL_SSL"),
    ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "kafka.ssl_cafile", "an existing PEM file"),
])
def test_kafka_security_bad_settings_name_field_value_and_allowed(kw, field, allowed):
    with pytest.raises(ConfigError) as info:
        KafkaConfig(**kw)
    assert str(info.value).startswith(f"{field}=") and allowed in str(info.value)


def test_kafka_security_both_password_sources_is_an_error(password_file, ca):
    with pytest.raises(ConfigError, match="exactly one of kafka.sasl_password_file"):
        sasl_ssl(password_file, ca, sasl_password_env="STREAMTRAIN_KAFKA_PASSWORD")


def test_kafka_security_missing_password_file_is_a_clear_error(tmp_path, ca):
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        sasl_ssl(missing, ca)
    assert str(info.value) == (f"kafka.sasl_password_file={str(missing)!r} is invalid: cannot read it "
                               "(No such file or directory); it must be a readable file holding the SASL password")


def test_kafka_security_empty_password_file_and_unset_env_are_errors(tmp_path, ca, monkeypatch):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="it is empty"):
        sasl_ssl(empty, ca)
    monkeypatch.delenv("STREAMTRAIN_KAFKA_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="kafka.sasl_password_env='STREAMTRAIN_KAFKA_PASSWORD' is invalid: "
                                          "the name of a set, non-empty environment variable"):
        KafkaConfig(security_protocol="SASL_SSL", sasl_username="u", sasl_password_env="STREAMTRAIN_KAFKA_PASSWORD")


def test_kafka_security_password_is_read_lazily_and_never_in_the_repr(password_file, ca, monkeypatch):
    kafka = sasl_ssl(password_file, ca)
    assert SECRET not in repr(kafka) and "password_file" in repr(kafka)
    assert kafka.client_settings()["sasl_plain_password"] == SECRET  # one trailing newline dropped
    password_file.write_text("rotated")
    assert kafka.client_settings()["sasl_plain_password"] == "rotated"
    monkeypatch.setenv("STREAMTRAIN_KAFKA_PASSWORD", "from-env")
    by_env = KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_username="u",
                         sasl_password_env="STREAMTRAIN_KAFKA_PASSWORD")
    assert "from-env" not in repr(by_env)
    assert by_env.client_settings()["sasl_plain_password"] == "from-env"


def test_kafka_security_loaded_from_overrides_and_env(password_file, ca, monkeypatch):
    monkeypatch.setenv("STREAMTRAIN_KAFKA_PASSWORD", "pw")
    kafka = load(KafkaConfig, "kafka", env={"STREAMTRAIN_KAFKA__SSL_CHECK_HOSTNAME": "false"}, overrides=[
        "kafka.security_protocol=SASL_SSL", "kafka.sasl_mechanism=SCRAM-SHA-256", "kafka.sasl_username=st",
        "kafka.sasl_password_env=STREAMTRAIN_KAFKA_PASSWORD", f"kafka.ssl_cafile={ca}"])
    assert kafka.sasl_mechanism == "SCRAM-SHA-256" and kafka.ssl_check_hostname is False
    with pytest.raises(ConfigError, match="kafka.sasl_password is not a setting"):
        load(KafkaConfig, "kafka", env={}, overrides=["kafka.sasl_password=pw"])  # no plain password field


def test_kafka_security_python_client_settings(password_file, ca):
    settings = sasl_ssl(password_file, ca, sasl_mechanism="PLAIN").client_settings()
    assert settings == {"bootstrap_servers": "b1:9093", "client_id": "streamtrain", "request_timeout_ms": 30000,
                        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "st",
                        "sasl_plain_password": SECRET, "ssl_cafile": str(ca), "ssl_certfile": None,
                        "ssl_keyfile": None, "ssl_check_hostname": True}


def test_kafka_security_java_properties_for_the_flink_connector(password_file, ca):
    props = kafka_security.java_properties(sasl_ssl(password_file, ca))
    assert props == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule "
                            'required username="st" password="s3cr\\"et\\\\pw";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca),
        "ssl.endpoint.identification.algorithm": "https",
    }
    plain = kafka_security.java_properties(sasl_ssl(password_file, ca, sasl_mechanism="PLAIN",
                                                    ssl_check_hostname=False), shaded=False)
    assert plain["sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    assert plain["ssl.endpoint.identification.algorithm"] == ""


def test_kafka_security_java_properties_inline_a_client_certificate(tmp_path, ca):
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("CERT")
    key.write_text("KEY")
    kafka = KafkaConfig(security_protocol="SSL", ssl_cafile=str(ca), ssl_certfile=str(cert), ssl_keyfile=str(key))
    props = kafka_security.java_properties(kafka)
    assert (props["ssl.keystore.type"], props["ssl.keystore.certificate.chain"], props["ssl.keystore.key"]) \
        == ("PEM", "CERT", "KEY")
    assert "sasl.jaas.config" not in props
    with pytest.raises(ConfigError, match="set together with kafka.ssl_certfile"):
        KafkaConfig(security_protocol="SSL", ssl_keyfile=str(key))


def test_kafka_security_kafka_python_debug_lines_are_redacted(password_file, ca, caplog):
    sasl_ssl(password_file, ca).client_settings()  # reading the password registers it
    caplog.set_level(logging.DEBUG, logger="kafka")
    logging.getLogger("kafka.admin.client").debug("Starting KafkaAdminClient with configuration: %s",
                                                  {"sasl_plain_password": SECRET})
    logging.getLogger("kafka.protocol.parser").debug("Send: %r", bytearray(b"st\x00st\x00" + SECRET.encode()))
    assert len(caplog.records) == 2
    assert SECRET not in caplog.text and repr(SECRET.encode())[2:-1] not in caplog.text
    assert caplog.text.count("***") == 2


def test_kafka_security_preflight_is_skipped_without_sasl():
    assert kafka_security.preflight(KafkaConfig(bootstrap="127.0.0.1:1")) is None
