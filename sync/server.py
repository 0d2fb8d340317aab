"""HTTP JSON front of a ServingReplica (stdlib ``http.server``, one thread per request).

    POST /predict   {"instances": [{"slots": [...], "ids": [...], "dense": [...]}, ...]}
                 -> {"model", "version", "dense_version", "heads", "predictions": [[p, ...]]}
    GET  /health    {"status": "ok" | "starting", "model", "version"}   (503 while starting)
    GET  /metrics   applied_version, lag_records, version_age_ms, rows_applied_per_s, ...
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sync.errors import SyncError
from sync.replica import BadRequest, ServingReplica

log = logging.getLogger(__name__)


def make_server(replica: ServingReplica, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                h = replica.health()
                self._send(200 if h["status"] == "ok" else 503, h)
            elif self.path == "/metrics":
                self._send(200, replica.metrics())
            else:
                self._send(404, {"error": f"no route {self.path}; try /predict /health /metrics"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/predict":
                self._send(404, {"error": f"no route {self.path}"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self._send(200, replica.predict(body["instances"]))
            except (ValueError, KeyError, TypeError, BadRequest) as exc:
                self._send(400, {"error": f"bad request: {exc}"})
            except SyncError as exc:
                self._send(503, {"error": str(exc)})

        def log_message(self, fmt: str, *args) -> None:
            log.debug("http " + fmt, *args)

    return ThreadingHTTPServer((host, port), Handler)
