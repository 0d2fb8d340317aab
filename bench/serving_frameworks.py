"""Why the replica's front is Starlette and not FastAPI: CPU time per predict request of the
framework layer alone (request parsing and checking, routing, JSON answer), driven as ASGI
calls in one process, no network, scoring stubbed out. CPU time, not wall time, so the
figure holds on a busy machine.

    .venv/bin/pip install fastapi        # only for this comparison; not a dependency
    .venv/bin/python -m bench.serving_frameworks

Compared: ``sync.app`` (Starlette + ``sync.api`` checks, scoring in the worker pool) and
the same route in FastAPI with pydantic models for the body (its idiomatic form). Writes
bench/results/serving_frameworks.json.
"""

# no `from __future__ import annotations`: FastAPI reads the local models from real annotations

import asyncio
import time
from typing import Any

from bench.common import write_result
from bench.serving_load import bodies
from sync.app import make_app
from sync.config import ReplicaConfig


class StubReplica:
    config = ReplicaConfig(model="ctr", port=0)

    def predict(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": "ctr", "version": 1, "dense_version": 1, "heads": ["click", "like", "conversion"],
                "predictions": [[0.5, 0.5, 0.5]] * len(instances)}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": "ctr", "version": 1}

    def readiness(self) -> dict[str, Any]:
        return {"ready": True, "reasons": []}

    def metrics(self) -> dict[str, Any]:
        return {}


def fastapi_app(stub: StubReplica) -> Any:
    from fastapi import FastAPI
    from pydantic import BaseModel, Field

    class Instance(BaseModel):
        slots: list[int]
        ids: list[int]
        dense: list[float] = []
        request_id: str | None = None

    class PredictRequest(BaseModel):
        instances: list[Instance] = Field(min_length=1, max_length=4096)

    app = FastAPI()

    @app.post("/predict")
    def predict(req: PredictRequest) -> dict[str, Any]:
        return stub.predict([i.model_dump() for i in req.instances])

    return app


async def call(app: Any, body: bytes) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    sent = False
    status: list[int] = []

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], status


async def measure(app: Any, payloads: list[bytes], n: int) -> float:
    for i in range(50):
        await call(app, payloads[i % len(payloads)])
    t = time.process_time()
    for i in range(n):
        await call(app, payloads[i % len(payloads)])
    return (time.process_time() - t) / n * 1e6


def main() -> None:
    stub = StubReplica()
    apps: dict[str, Any] = {"starlette + sync.api": make_app(stub)}
    try:
        apps["fastapi + pydantic"] = fastapi_app(stub)
    except ImportError:
        print("fastapi not installed: measuring the Starlette app only (pip install fastapi)")
    out: dict[str, dict[str, float]] = {}
    for batch, n in ((1, 3000), (64, 600)):
        payloads = bodies(batch, 16)
        for name, app in apps.items():
            us = asyncio.run(measure(app, payloads, n))
            out.setdefault(name, {})[f"batch_{batch}_cpu_us_per_request"] = round(us, 1)
            print(f"batch {batch:>2}  {name:<22} {us:8.0f} us CPU/request")
    path = write_result("serving_frameworks", {"command": "python -m bench.serving_frameworks",
                                               "framework_cpu_per_request": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
