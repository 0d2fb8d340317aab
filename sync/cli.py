"""``streamtrain serve``: the reference serving replica over HTTP (ASGI app on uvicorn).

    streamtrain serve --set serve.model=ctr --set serve.port=8500 --set kafka.bootstrap=host:9092
    streamtrain serve --openapi            # print the OpenAPI document (docs/openapi.json)

Sections read: ``[serve]`` (ReplicaConfig), ``[kafka]``, ``[topics]``, ``[features]`` (the
feature job's spec, for request-time features: keep it equal to the job's). Runs until SIGINT/SIGTERM.
Routes: POST /predict, GET /health /ready /metrics /status /openapi.json (``sync.app``).
"""

from __future__ import annotations

import json
import logging

from streaming.features.spec import FeatureSpec
from streamtrain import flags
from streamtrain.config import ConfigError
from streamtrain.kafka_io import KafkaConfig, KafkaIOError, TopicsConfig
from streamtrain.signals import StopRequest, stop_on_signals
from sync.api import openapi_document
from sync.app import make_app
from sync.config import ReplicaConfig
from sync.errors import SyncError
from sync.replica import ServingReplica
from sync.server import ReplicaServer

log = logging.getLogger(__name__)


def run(config: ReplicaConfig, kafka: KafkaConfig, topics: TopicsConfig,
        spec: FeatureSpec | None = None) -> int:
    import torch

    torch.set_num_threads(config.torch_threads)
    replica = ServingReplica(config, kafka, topics, spec)
    # a stop signal while bootstrapping ends the start-up; while serving, uvicorn shuts down
    # gracefully, restores this handler and re-raises the signal to it (with the default
    # handler the process died there, by the signal, before closing the replica's stores)
    stop = StopRequest()
    with stop_on_signals(stop, "stopping the replica"):
        try:
            replica.start()
            if stop.is_set():
                return 0
            server = ReplicaServer(make_app(replica), config.host, config.port)
            print(f"serving model={config.model} on http://{server.host}:{server.port} "
                  f"(/predict /health /ready /metrics /status /openapi.json)", flush=True)
            server.serve()  # until SIGINT/SIGTERM
        finally:
            replica.close()
            log.info("replica closed")
    return 0


def main(argv: list[str]) -> int:
    p = flags.parser("serve", "reference serving replica: applies model deltas, "
                                   "answers predictions over HTTP")
    p.add_argument("--openapi", action="store_true",
                   help="print the OpenAPI document for this config and exit")
    args = p.parse_args(argv)
    try:
        config = flags.load(args, ReplicaConfig, "serve")
        if args.openapi:
            print(json.dumps(openapi_document(config.max_batch, config.max_body_bytes), indent=2))
            return 0
        return run(config, flags.load(args, KafkaConfig, "kafka"), flags.load(args, TopicsConfig, "topics"),
                   flags.load(args, FeatureSpec, "features"))
    except (ConfigError, SyncError, KafkaIOError) as exc:
        log.error("serve failed: %s", exc)
        return 1
