"""TLS and SASL settings of ``[kafka]``: their validation, the password (read lazily from a
file or an environment variable, never held by the config) and how they become the settings
of each Kafka client: kafka-python's keyword arguments and the Java client properties the
Flink Kafka connector takes.

A secured ``[kafka]`` block (the password comes from ``$STREAMTRAIN_KAFKA_PASSWORD``)::

    [kafka]
    bootstrap = "broker-1.example.com:9093"
    security_protocol = "SASL_SSL"
    sasl_mechanism = "SCRAM-SHA-512"
    sasl_username = "streamtrain"
    sasl_password_env = "STREAMTRAIN_KAFKA_PASSWORD"
    ssl_cafile = "/etc/streamtrain/kafka-ca.pem"

>>> from streamtrain.kafka_io import KafkaConfig
>>> sorted(python_settings(KafkaConfig()))
['security_protocol']
>>> java_properties(KafkaConfig())
{'security.protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamtrain.config import ConfigError, check

if TYPE_CHECKING:
    from streamtrain.kafka_io import KafkaConfig

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_FIELDS = ("sasl_username", "sasl_password_file", "sasl_password_env")
SSL_FIELDS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
# the Flink SQL connector jar (the one streamtrain ships and submits) relocates the Kafka
# client under this package: a JAAS login module must be named with it
SHADED_KAFKA_PREFIX = "org.apache.flink.kafka.shaded."
PREFLIGHT_TIMEOUT_MS = 3000  # a first connection that authenticates, before a client is built
# kafka-python loggers that print a client's configuration or request bytes at DEBUG
LEAKY_LOGGERS = ("kafka.admin.client", "kafka.producer.kafka", "kafka.consumer.group",
                 "kafka.protocol.parser", "kafka.net.connection", "kafka.net.manager")
_LOGIN_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                  "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                  "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


def uses_sasl(kafka: KafkaConfig) -> bool:
    return kafka.security_protocol.startswith("SASL_")


def uses_ssl(kafka: KafkaConfig) -> bool:
    return kafka.security_protocol.endswith("SSL")


def validate(kafka: KafkaConfig) -> None:
    """Check the security fields of ``kafka`` (called by ``KafkaConfig.__post_init__``)."""
    check(kafka.security_protocol in SECURITY_PROTOCOLS, "kafka.security_protocol",
          kafka.security_protocol, " | ".join(SECURITY_PROTOCOLS))
    check(kafka.sasl_mechanism in SASL_MECHANISMS, "kafka.sasl_mechanism", kafka.sasl_mechanism,
          " | ".join(SASL_MECHANISMS))
    if uses_sasl(kafka):
        check(bool(kafka.sasl_username), "kafka.sasl_username", kafka.sasl_username,
              f"a user name (required with security_protocol={kafka.security_protocol})")
        check(bool(kafka.sasl_password_file) != bool(kafka.sasl_password_env), "kafka.sasl_password_file",
              kafka.sasl_password_file, "exactly one of kafka.sasl_password_file (a file holding the "
              "password) and kafka.sasl_password_env (the name of an environment variable holding "
              f"it, e.g. STREAMTRAIN_KAFKA_PASSWORD) with security_protocol={kafka.security_protocol}")
        resolve_password(kafka)  # a missing file or variable fails at the edge, not at first use
    else:
        for name in SASL_FIELDS:
            check(not getattr(kafka, name), f"kafka.{name}", getattr(kafka, name),
                  f"empty with security_protocol={kafka.security_protocol} (no SASL); "
                  "set kafka.security_protocol=SASL_SSL or SASL_PLAINTEXT to authenticate")
    if uses_ssl(kafka):
        for name in SSL_FIELDS:
            path = getattr(kafka, name)
            check(not path or Path(path).is_file(), f"kafka.{name}", path,
                  "an existing PEM file (or empty)")
        check(not kafka.ssl_keyfile or bool(kafka.ssl_certfile), "kafka.ssl_keyfile", kafka.ssl_keyfile,
              "set together with kafka.ssl_certfile (the client certificate it belongs to)")
    else:
        for name in SSL_FIELDS:
            check(not getattr(kafka, name), f"kafka.{name}", getattr(kafka, name),
                  f"empty with security_protocol={kafka.security_protocol} (no TLS); "
                  "set kafka.security_protocol=SSL or SASL_SSL to use TLS")


def resolve_password(kafka: KafkaConfig) -> str:
    """The SASL password, read now from ``sasl_password_file`` (one trailing newline dropped)
    or the environment variable ``sasl_password_env``. Never logged, never stored on the config."""
    if kafka.sasl_password_file:
        path = Path(kafka.sasl_password_file)
        try:
            password = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            raise ConfigError(f"kafka.sasl_password_file={str(path)!r} is invalid: cannot read "
                              f"it ({exc.strerror or type(exc).__name__}); it must be a readable "
                              "file holding the SASL password") from None
        check(bool(password), "kafka.sasl_password_file", str(path), "a file holding the password; it is empty")
        return _REDACTOR.add(password)
    name = kafka.sasl_password_env
    password = os.environ.get(name, "") if name else ""
    check(bool(password), "kafka.sasl_password_env", name,
          "the name of a set, non-empty environment variable holding the SASL password")
    return _REDACTOR.add(password)


class SecretRedactor(logging.Filter):
    """Replaces every password read by ``resolve_password`` with ``***`` in the records of
    ``LEAKY_LOGGERS`` (kafka-python logs a client's configuration and, for PLAIN, the bytes
    of its authentication request at DEBUG)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> str:
        with self._lock:
            if secret not in self.secrets:
                # as kafka-python prints it too: inside the repr of the request bytes
                self.secrets |= {secret, repr(secret.encode())[2:-1]}
                for name in LEAKY_LOGGERS:
                    logger = logging.getLogger(name)
                    if self not in logger.filters:
                        logger.addFilter(self)
        return secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = redacted = record.getMessage()
        for secret in self.secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_REDACTOR = SecretRedactor()


def python_settings(kafka: KafkaConfig) -> dict[str, Any]:
    """kafka-python keyword arguments of the security settings (the password included: pass
    them to a client, never log them)."""
    out: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if uses_sasl(kafka):
        out.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                   sasl_plain_password=resolve_password(kafka))
    if uses_ssl(kafka):
        out.update(ssl_cafile=kafka.ssl_cafile or None, ssl_certfile=kafka.ssl_certfile or None,
                   ssl_keyfile=kafka.ssl_keyfile or None, ssl_check_hostname=kafka.ssl_check_hostname)
    return out


def java_properties(kafka: KafkaConfig, shaded: bool = True) -> dict[str, str]:
    """Java Kafka client properties of the security settings, for the Flink Kafka source and
    sink. ``shaded``: the login module named as the Flink SQL connector jar relocates it.

    PEM files are read by the client itself (``ssl.truststore.type=PEM``); a client
    certificate (``ssl_certfile``/``ssl_keyfile``, the key unencrypted PKCS#8) goes in inline,
    as the Java client takes a PEM key store either as one file or as inline text. The
    password is in ``sasl.jaas.config``, which the Java client never logs (``[hidden]``)."""
    props = {"security.protocol": kafka.security_protocol}
    if uses_sasl(kafka):
        module = (SHADED_KAFKA_PREFIX if shaded else "") + _LOGIN_MODULES[kafka.sasl_mechanism]
        props["sasl.mechanism"] = kafka.sasl_mechanism
        props["sasl.jaas.config"] = (f'{module} required username="{_jaas_quote(kafka.sasl_username)}" '
                                     f'password="{_jaas_quote(resolve_password(kafka))}";')
    if uses_ssl(kafka):
        if kafka.ssl_cafile:
            props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": kafka.ssl_cafile})
        if kafka.ssl_certfile:
            props.update({"ssl.keystore.type": "PEM",
                          "ssl.keystore.certificate.chain": Path(kafka.ssl_certfile).read_text(),
                          "ssl.keystore.key": Path(kafka.ssl_keyfile or kafka.ssl_certfile).read_text()})
        props["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_check_hostname else ""
    return props


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


_verified: set[tuple[str, str, str, str]] = set()


def preflight(kafka: KafkaConfig) -> str | None:
    """Authenticate once to the first bootstrap broker (within ``PREFLIGHT_TIMEOUT_MS``)
    before a client is built. kafka-python retries a refused authentication like a lost
    connection until its bootstrap timeout (30 s) and then reports "Unable to bootstrap";
    this answers in one round trip. Returns an ``auth_failure`` message when the broker
    refused the credentials, else None (also when the broker could not be reached: the
    client then reports that). A success is remembered for the process, per bootstrap,
    mechanism, user and password."""
    if not uses_sasl(kafka):
        return None
    settings = python_settings(kafka)
    key = (kafka.bootstrap, kafka.sasl_mechanism, kafka.sasl_username,
           hashlib.sha256(settings["sasl_plain_password"].encode()).hexdigest())
    if key in _verified:
        return None
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=PREFLIGHT_TIMEOUT_MS / 1000)
    except (OSError, ValueError):
        return None
    from kafka.errors import KafkaError

    try:
        if uses_ssl(kafka):
            sock = _tls_context(kafka).wrap_socket(sock, server_hostname=host)
        refused = _sasl_exchange(sock, host, kafka.client_id, settings)
    except (OSError, KafkaError, ValueError):
        return None  # TLS, network or protocol trouble: the client reports it with its own retries
    finally:
        sock.close()
    if refused is None:
        _verified.add(key)
        return None
    return auth_failure(kafka, refused)


def _tls_context(kafka: KafkaConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=kafka.ssl_cafile or None)
    ctx.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile:
        ctx.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile or None)
    return ctx


def _sasl_exchange(sock: socket.socket, host: str, client_id: str,
                   settings: dict[str, Any]) -> BaseException | None:
    """SaslHandshake v1 + SaslAuthenticate v1 on ``sock``; the error when the broker refused."""
    from kafka import errors
    from kafka.net.sasl import get_sasl_mechanism
    from kafka.protocol.parser import KafkaProtocol
    from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

    proto = KafkaProtocol(client_id=client_id)

    def call(request):
        request.API_VERSION = 1
        proto.send_request(request)
        sock.sendall(proto.send_bytes())
        while True:
            data = sock.recv(65536)
            if not data:
                return None  # closed by the broker
            responses = proto.receive_bytes(data)
            if responses:
                return responses[0][1]

    mechanism_name = settings["sasl_mechanism"]
    handshake = call(SaslHandshakeRequest(mechanism=mechanism_name, max_version=1))
    if handshake is None or handshake.error_code or mechanism_name not in handshake.mechanisms:
        offered = getattr(handshake, "mechanisms", "none")
        return errors.UnsupportedSaslMechanismError(f"the broker offers the mechanisms {offered}")
    mechanism = get_sasl_mechanism(mechanism_name)(host=host, **settings)
    while not mechanism.is_done():
        response = call(SaslAuthenticateRequest(mechanism.auth_bytes()))
        if response is None:
            return errors.SaslAuthenticationFailedError("the broker closed the connection during authentication")
        if response.error_code:
            return errors.SaslAuthenticationFailedError(response.error_message or "refused")
        mechanism.receive(response.auth_bytes)
    if not mechanism.is_authenticated():
        return errors.SaslAuthenticationFailedError("the broker's proof did not verify")
    return None


def auth_failure(kafka: KafkaConfig, exc: BaseException) -> str | None:
    """A message for ``exc`` when it is (or was caused by) a failed SASL or TLS handshake,
    else None. Names the bootstrap, the mechanism and the user, never the password."""
    from kafka import errors

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (errors.SaslAuthenticationFailedError, errors.UnsupportedSaslMechanismError)):
            return (f"Kafka authentication failed at {kafka.bootstrap} (security_protocol="
                    f"{kafka.security_protocol} sasl_mechanism={kafka.sasl_mechanism} "
                    f"user={kafka.sasl_username!r}): {seen}; check kafka.sasl_username and the "
                    f"password in {password_source(kafka)}")
        seen = seen.__cause__ or seen.__context__
    return None


def password_source(kafka: KafkaConfig) -> str:
    if kafka.sasl_password_file:
        return f"kafka.sasl_password_file={kafka.sasl_password_file}"
    return f"the environment variable {kafka.sasl_password_env}"
