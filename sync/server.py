"""Runs the replica's ASGI app (``sync.app``) on uvicorn: in the foreground (``streamtrain
serve``, stops on SIGINT/SIGTERM) or in a background thread (tests, the demo's helpers).

    server = ReplicaServer(make_app(replica), "127.0.0.1", 0)
    server.start()                        # background thread; returns once it listens
    urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ready")
    server.close()

uvicorn runs one event loop (uvloop and httptools when installed); scoring runs in the
app's thread pool. The socket is bound here, before uvicorn starts, so port 0 works and
``port`` is known at once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from sync.app import ReplicaApp
from sync.errors import SyncError

log = logging.getLogger(__name__)


class ReplicaServer:
    def __init__(self, app: ReplicaApp, host: str, port: int) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise SyncError(f"cannot listen on {host}:{port} ({exc}); choose another serve.port") from exc
        self.sock.listen(2048)
        self.host, self.port = host, int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5,
            backlog=2048))
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve in this thread until ``close()`` (or SIGINT/SIGTERM in the main thread)."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread = threading.Thread(target=self.serve, name="replica-http", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout_s  # uvicorn sets ``started`` once it listens
        while not self.server.started and self._thread.is_alive() and time.monotonic() < end:
            time.sleep(0.01)
        if not self.server.started:
            raise SyncError(f"the HTTP server did not start within {timeout_s:.0f}s")

    def close(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
