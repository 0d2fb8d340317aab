"""``streamtrain serve``: the reference serving replica over HTTP.

    streamtrain serve --set serve.model=ctr --set serve.port=8500 --set kafka.bootstrap=host:9092

Sections read: ``[serve]`` (ReplicaConfig), ``[kafka]``, ``[topics]``. Runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading

from streamtrain import cli_common
from streamtrain.config import ConfigError
from streamtrain.kafka_io import KafkaConfig, KafkaIOError, TopicsConfig
from sync.config import ReplicaConfig
from sync.errors import SyncError
from sync.replica import ServingReplica
from sync.server import make_server

log = logging.getLogger(__name__)


def run(config: ReplicaConfig, kafka: KafkaConfig, topics: TopicsConfig,
        ready: threading.Event | None = None) -> int:
    replica = ServingReplica(config, kafka, topics)
    replica.start()
    server = make_server(replica, config.host, config.port)
    host, port = server.server_address[:2]
    print(f"serving model={config.model} on http://{host}:{port} "
          f"(/predict /health /metrics)", flush=True)
    stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()  # noqa: E731
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        replica.close()
    return 0


def main(argv: list[str]) -> int:
    p = cli_common.parser("serve", "reference serving replica: applies model deltas, "
                                   "answers predictions over HTTP")
    args = p.parse_args(argv)
    try:
        return run(cli_common.load(args, ReplicaConfig, "serve"),
                   cli_common.load(args, KafkaConfig, "kafka"),
                   cli_common.load(args, TopicsConfig, "topics"))
    except (ConfigError, SyncError, KafkaIOError) as exc:
        log.error("serve failed: %s", exc)
        return 1
