"""A real single-node Kafka broker (KRaft, broker + controller in one JVM) run from the jars
that ``infra/pom.xml`` fetches. For local runs, the demo and the integration tests; a real
deployment points ``kafka.bootstrap`` at its own cluster instead.

    broker = LocalKafka(LocalKafkaConfig(port=19092, data_dir=Path("/tmp/k")))
    broker.start()          # formats storage on first start, waits until it accepts clients
    ...
    broker.stop()

``listener_security="SASL_SSL"`` (tests of secured clients) serves clients over TLS with
SCRAM-SHA-256/512 and PLAIN users given to ``LocalKafka(config, users={name: password})``;
the controller and the broker's own listener (``internal_port``) stay plaintext.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamtrain.config import check
from streamtrain.paths import JARS_DIR, STATE_DIR

log = logging.getLogger(__name__)


class LocalKafkaError(RuntimeError):
    """The local broker cannot be started, reached or stopped."""


LISTENER_SECURITY = ("PLAINTEXT", "SASL_SSL")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
PASSWORD_CHARS = r"[A-Za-z0-9!#$%&*+./:;<>?@^_{|}~-]+"  # safe in --add-scram and in a JAAS line


@dataclass(frozen=True)
class LocalKafkaConfig:
    port: int = 9092
    controller_port: int = 9093
    host: str = "localhost"
    data_dir: Path = field(default_factory=lambda: STATE_DIR / "kafka")
    jars_dir: Path = field(default_factory=lambda: JARS_DIR / "kafka")
    heap: str = "512m"
    start_timeout_s: float = 90.0
    num_partitions: int = 1
    # the broker's default for topics made without their own retention.ms (a job's output
    # topic); -1 keeps records of any age (tests: their events are stamped years ago)
    retention_hours: int = 168
    listener_security: str = "PLAINTEXT"  # PLAINTEXT | SASL_SSL (clients: TLS + SCRAM/PLAIN)
    internal_port: int = 0  # SASL_SSL: the broker's own plaintext listener (inter-broker, readiness)
    ssl_certfile: str = ""  # SASL_SSL: the broker's certificate chain (PEM)
    ssl_keyfile: str = ""  # SASL_SSL: its private key (PEM, unencrypted PKCS#8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "jars_dir", Path(self.jars_dir))
        check(1 <= self.port <= 65535, "local_kafka.port", self.port, "a TCP port 1..65535")
        check(1 <= self.controller_port <= 65535 and self.controller_port != self.port,
              "local_kafka.controller_port", self.controller_port, "a TCP port other than local_kafka.port")
        check(self.start_timeout_s > 0, "kafka.start_timeout_s", self.start_timeout_s, "> 0")
        check(self.retention_hours >= -1 and self.retention_hours != 0, "local_kafka.retention_hours",
              self.retention_hours, "hours > 0, or -1 (no limit)")
        check(self.listener_security in LISTENER_SECURITY, "local_kafka.listener_security",
              self.listener_security, " | ".join(LISTENER_SECURITY))
        if self.listener_security == "SASL_SSL":
            check(1 <= self.internal_port <= 65535 and self.internal_port not in (self.port, self.controller_port),
                  "local_kafka.internal_port", self.internal_port,
                  "a TCP port other than local_kafka.port and controller_port (with SASL_SSL)")
            for name in ("ssl_certfile", "ssl_keyfile"):
                check(Path(getattr(self, name)).is_file(), f"local_kafka.{name}", getattr(self, name),
                      "an existing PEM file (required with SASL_SSL)")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def plaintext_bootstrap(self) -> str:
        """Where the broker answers without credentials: its own listener under SASL_SSL."""
        port = self.internal_port if self.listener_security == "SASL_SSL" else self.port
        return f"{self.host}:{port}"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalKafka:
    """Start, stop and query one local broker whose files live under ``config.data_dir``."""

    def __init__(self, config: LocalKafkaConfig, users: Mapping[str, str] | None = None):
        """``users``: name -> password of the SASL users (SCRAM users are created when the
        storage is formatted, i.e. on a first start; PLAIN users on every start)."""
        self.config = config
        self._users = dict(users or {})
        for name, password in self._users.items():
            ok = re.fullmatch(r"[A-Za-z0-9_.-]+", name) and re.fullmatch(PASSWORD_CHARS, password)
            check(bool(ok), "local_kafka user", name, "a name of [A-Za-z0-9_.-] and a password of printable "
                  "ASCII without spaces, quotes, commas, brackets or backslashes")
        self.pid_file = config.data_dir / "broker.pid"
        self.log_file = config.data_dir / "broker.out"
        self.props_file = config.data_dir / "server.properties"
        self.log_dir = config.data_dir / "data"

    # -- queries -----------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def status(self) -> dict:
        pid = self.pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": self.config.bootstrap,
            "accepting": port_open(self.config.host, self.config.port),
            "data_dir": str(self.config.data_dir),
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        if self.pid() is not None:
            log.info("kafka already running pid=%s bootstrap=%s", self.pid(), cfg.bootstrap)
            self._wait_ready()
            return
        java = self._java()
        classpath = self._classpath()
        if port_open(cfg.host, cfg.port):
            raise LocalKafkaError(
                f"port {cfg.port} is already in use by another process; "
                "stop it or choose another with --set local_kafka.port=..."
            )
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        if not (self.log_dir / "meta.properties").exists():
            self._format(java, classpath)
        cmd = [java, f"-Xmx{cfg.heap}", f"-Xms{cfg.heap}", "-XX:+UseG1GC",
               f"-Dlog4j2.configurationFile={self._write_log4j()}",
               "-cp", classpath, "kafka.Kafka", str(self.props_file)]
        log.info("starting kafka bootstrap=%s data_dir=%s", cfg.bootstrap, cfg.data_dir)
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        try:
            self._wait_ready(proc)
        except LocalKafkaError:
            self.stop()
            raise
        log.info("kafka ready pid=%s bootstrap=%s", proc.pid, cfg.bootstrap)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``). False if none was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            log.warning("kafka pid=%s ignored SIGTERM for %.0fs; killing", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        log.info("kafka stopped pid=%s", pid)
        return True

    # -- internals ---------------------------------------------------------------------------
    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = shutil.which("java") or (java_home and str(Path(java_home) / "bin" / "java"))
        if not java or not Path(java).exists():
            raise LocalKafkaError("java not found: install a JDK 17+ (e.g. apt install openjdk-17-jdk)")
        return java

    def _classpath(self) -> str:
        jars = self.config.jars_dir
        if not list(jars.glob("kafka_2.13-*.jar")):
            raise LocalKafkaError(
                f"Kafka jars not found in {jars}: run `streamtrain jars` "
                "(or `mvn -q -f infra/pom.xml package`) to fetch them"
            )
        return str(jars / "*")

    def _write_properties(self) -> None:
        cfg = self.config
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
            "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": str(cfg.num_partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.ms": str(cfg.retention_hours * 3_600_000 if cfg.retention_hours >= 0 else -1),
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if cfg.listener_security == "SASL_SSL":
            props.update(self._sasl_ssl_properties())
        self.props_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.props_file.chmod(0o600)  # it may hold PLAIN users and the broker's key

    def _sasl_ssl_properties(self) -> dict[str, str]:
        cfg = self.config
        pem = lambda path: Path(path).read_text().strip().replace("\n", "\\n")  # noqa: E731
        plain_users = " ".join(f'user_{n}="{p}"' for n, p in self._users.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": f"SASL_SSL://{cfg.host}:{cfg.port},INTERNAL://{cfg.host}:{cfg.internal_port},"
                         f"CONTROLLER://{cfg.host}:{cfg.controller_port}",
            "advertised.listeners": f"SASL_SSL://{cfg.host}:{cfg.port},INTERNAL://{cfg.host}:{cfg.internal_port}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            # inline PEM: a key store file would have to hold the key and the chain together
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.certificate.chain": pem(cfg.ssl_certfile),
            "listener.name.sasl_ssl.ssl.keystore.key": pem(cfg.ssl_keyfile),
        }

    def _write_log4j(self) -> Path:
        path = self.config.data_dir / "log4j2.properties"
        path.write_text(
            "status = warn\n"
            "appender.out.type = Console\nappender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n"
            "logger.kafka.name = kafka.server.KafkaRaftServer\nlogger.kafka.level = INFO\n"
        )
        return path

    def _format(self, java: str, classpath: str) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [java, "-cp", classpath, f"-Dlog4j2.configurationFile={self._write_log4j()}",
               # `--cluster-id=<id>`: a urlsafe base64 id starts with "-" one time in 32, which
               # the tool's argument parser took for an option ("expected one argument")
               "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.props_file)]
        if self.config.listener_security == "SASL_SSL":
            cmd += [arg for name, password in self._users.items() for mech in SCRAM_MECHANISMS
                    for arg in ("--add-scram", f"{mech}=[name={name},password={password}]")]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            out = f"{res.stdout}{res.stderr}"
            for password in self._users.values():
                out = out.replace(password, "***")
            raise LocalKafkaError(f"formatting Kafka storage failed:\n{out}")
        log.info("formatted kafka storage cluster_id=%s dir=%s scram_users=%s", cluster_id,
                 self.log_dir, ",".join(self._users) or "-")

    def _wait_ready(self, proc: subprocess.Popen | None = None) -> None:
        from kafka.errors import KafkaError

        from streamtrain.kafka_io import KafkaConfig, KafkaIOError, admin_client

        probe = KafkaConfig(bootstrap=self.config.plaintext_bootstrap, request_timeout_ms=5000)
        deadline = time.monotonic() + self.config.start_timeout_s
        last = "port closed"
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise LocalKafkaError(
                    f"kafka exited with code {proc.returncode} during start; "
                    f"last lines of {self.log_file}:\n{_tail(self.log_file)}"
                )
            if port_open(self.config.host, int(probe.bootstrap.rsplit(":", 1)[1])):
                try:
                    admin = admin_client(probe)
                    try:
                        admin.list_topics()
                        return
                    finally:
                        admin.close()
                except (KafkaError, KafkaIOError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise LocalKafkaError(
            f"kafka did not accept clients on {self.config.bootstrap} within "
            f"{self.config.start_timeout_s:.0f}s ({last}); see {self.log_file}"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child still answers kill(0); reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
