"""A process's Prometheus ``/metrics`` endpoint (prometheus-client's HTTP server in a
background thread), started and stopped with the process's own registry.

    http = MetricsHttp(registry, "trainer")
    port = http.start(9400)        # 0: any free port; returns the bound one
    http.close()                   # idempotent
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


class MetricsHttp:
    def __init__(self, registry: CollectorRegistry, what: str) -> None:
        self.registry = registry
        self.what = what  # names the process in the log line
        self._server: Any = None

    def start(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve /metrics on ``port`` (0: any free one) in a background thread; the port."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_port)
        log.info("%s metrics on http://%s:%d/metrics", self.what, host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
