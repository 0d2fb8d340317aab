"""The serving replica's HTTP front: an ASGI app (Starlette), served by uvicorn (``sync.server``).

    POST /predict      {"instances": [{"slots": [...], "ids": [...], "dense": [...]}, ...]}
                    -> {"model", "version", "dense_version", "heads", "predictions": [[p, ...]]}
                       every answer scored on exactly the sparse ``version`` and the
                       ``dense_version`` it reports
    GET  /health       liveness: 200 {"status": "ok", "model", "version"} while the apply
                       thread runs, else 503
    GET  /ready        readiness: 200, or 503 {"ready": false, "reasons": [...]} (sync.health)
    GET  /metrics      Prometheus text format (sync.replica_metrics; docs/operations.md)
    GET  /status       the replica's counters as JSON (applied_version, lag_records, ...)
    GET  /openapi.json the contract (sync.api), equal to docs/openapi.json

Scoring runs in a pool of ``serve.workers`` threads, never on the event loop, so a slow
request (a batch of 4096) does not hold up the others, and a request never waits for a
delta being applied (it pins one version, ``sync.view``). A bad request gets a 4xx with a
message; an unexpected error gets a 500 with its type, is logged, and the app goes on.

    app = make_app(replica)           # anything with the ``Replica`` protocol's methods
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol

from anyio import CapacityLimiter, to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync.api import RequestError, openapi_document, parse_predict
from sync.config import ReplicaConfig
from sync.errors import SyncError
from sync.replica import BadRequest
from sync.replica_metrics import HttpMetrics, ReplicaCollector

log = logging.getLogger(__name__)


class Replica(Protocol):
    """What the app needs from a replica (``sync.replica.ServingReplica`` has it)."""

    config: ReplicaConfig

    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...

    def readiness(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, Any]: ...


class _Timing:
    """Pure ASGI middleware: latency and status of every HTTP request into ``HttpMetrics``."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500

        async def send_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["path"], code, time.perf_counter() - start)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"body of {declared} bytes > serve.max_body_bytes={limit}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body over serve.max_body_bytes={limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


class ReplicaApp:
    """The routes over one replica; ``app`` is the ASGI callable."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.config = replica.config
        self.registry = CollectorRegistry()
        self.registry.register(ReplicaCollector(self.config.model, replica.metrics, replica.readiness))
        freshness = getattr(replica, "freshness", None)  # sync.freshness; stand-ins have none
        if freshness is not None:
            self.registry.register(freshness.histogram)
        self.http = HttpMetrics(self.registry)
        self.openapi = openapi_document(self.config.max_batch, self.config.max_body_bytes)
        self._limiter: CapacityLimiter | None = None  # made in the event loop, on first use
        routes = [Route("/predict", self.predict, methods=["POST"]),
                  Route("/health", self.health, methods=["GET"]),
                  Route("/ready", self.ready, methods=["GET"]),
                  Route("/status", self.status, methods=["GET"]),
                  Route("/metrics", self.metrics, methods=["GET"]),
                  Route("/openapi.json", self.schema, methods=["GET"])]
        starlette = Starlette(routes=routes, exception_handlers={
            HTTPException: self._http_error, Exception: self._unexpected})
        self.app: ASGIApp = _Timing(starlette, self.http)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def _score(self, body: bytes) -> dict[str, Any]:
        instances = parse_predict(body, self.config.max_batch)
        self.http.instances.observe(len(instances))
        return self.replica.predict(instances)

    async def predict(self, request: Request) -> Response:
        if self._limiter is None:
            self._limiter = CapacityLimiter(self.config.workers)
        try:
            body = await _read_body(request, self.config.max_body_bytes)
            answer = await to_thread.run_sync(self._score, body, limiter=self._limiter)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        except BadRequest as exc:
            return _error(400, f"bad request: {exc}")
        except SyncError as exc:  # no model yet
            return _error(503, str(exc))
        return Response(json.dumps(answer), media_type="application/json")

    async def health(self, request: Request) -> Response:
        h = self.replica.health()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    async def ready(self, request: Request) -> Response:
        r = self.replica.readiness()
        return JSONResponse(r, status_code=200 if r["ready"] else 503)

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.replica.metrics())

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def schema(self, request: Request) -> Response:
        return JSONResponse(self.openapi)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        routes = "POST /predict, GET /health /ready /metrics /status /openapi.json"
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path} (routes: {routes})"},
                            status_code=exc.status_code, headers=exc.headers)  # 405 keeps Allow

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")


def make_app(replica: Replica) -> ReplicaApp:
    return ReplicaApp(replica)
