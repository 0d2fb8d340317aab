"""The serving replica's HTTP contract, written once: how a predict request is checked, and
the OpenAPI document that publishes it (``docs/openapi.json``; a test keeps the two equal).

    instances = parse_predict(b'{"instances": [{"slots": [0, 1], "ids": [11, 42]}]}',
                              max_batch=4096)

Checking happens before any scoring, so a bad request costs a 4xx with a message that says
what is wrong, never a 500: malformed JSON, a body that is not ``{"instances": [...]}``,
an empty batch or one over ``serve.max_batch``, a body over ``serve.max_body_bytes``
(413), an instance whose ``slots`` and ``ids`` differ in
length, ids that are not 64-bit integers (a float, a string, a bool, 2**64), dense values
that are not finite numbers, a ``user_id``/``item_id`` that is not a positive 64-bit integer,
a key an instance does not have. What only the model knows (how many dense values it
takes; whether the replica completes the instance with request-time features,
``sync.request_features``) is checked by the replica and answered 400 as well.

>>> parse_predict(b'{"instances": [{"slots": [0, 1], "ids": [11, 42]}]}', max_batch=8)
[{'slots': [0, 1], 'ids': [11, 42], 'dense': []}]
>>> parse_predict(b'{"instances": [{"slots": [0], "ids": [1.5]}]}', max_batch=8)
Traceback (most recent call last):
...
sync.api.RequestError: instance 0: ids[0] is not a 64-bit integer: 1.5
"""

from __future__ import annotations

import json
import math
from typing import Any

from sync.errors import SyncError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INSTANCE_KEYS = ("slots", "ids", "dense", "request_id", "user_id", "item_id")
API_VERSION = "1"


class RequestError(SyncError):
    """A request the replica refuses: ``status`` is the HTTP code (400, 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _int64_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list):
        raise RequestError(f"{where} must be a list of 64-bit integers, got {type(value).__name__}")
    for k, x in enumerate(value):
        # bool is an int in Python, not in JSON; a float such as 1.0 is not an id either
        if type(x) is not int or not INT64_MIN <= x <= INT64_MAX:
            raise RequestError(f"{where}[{k}] is not a 64-bit integer: {x!r}")
    return value


def _dense_list(value: Any, where: str) -> list[float]:
    if not isinstance(value, list):
        raise RequestError(f"{where} must be a list of numbers, got {type(value).__name__}")
    for k, x in enumerate(value):
        if type(x) not in (int, float) or not math.isfinite(x):
            raise RequestError(f"{where}[{k}] is not a finite number: {x!r}")
    return [float(x) for x in value]


def entity_id(value: Any, where: str) -> int:
    """A user or item id: a positive 64-bit integer (0 and negatives mean "missing" upstream)."""
    if type(value) is not int or not 0 < value <= INT64_MAX:
        raise RequestError(f"{where} must be a positive 64-bit integer, got {value!r}")
    return value


def parse_instance(inst: Any, i: int) -> dict[str, Any]:
    if not isinstance(inst, dict):
        raise RequestError(f"instance {i} must be an object with slots, ids (and dense)")
    if "slots" not in inst or "ids" not in inst:
        raise RequestError(f"instance {i} needs slots and ids")
    unknown = sorted(set(inst) - set(INSTANCE_KEYS))
    if unknown:
        raise RequestError(f"instance {i}: unknown keys {unknown} (an instance has {', '.join(INSTANCE_KEYS)})")
    slots = _int64_list(inst["slots"], f"instance {i}: slots")
    ids = _int64_list(inst["ids"], f"instance {i}: ids")
    if len(slots) != len(ids):
        raise RequestError(f"instance {i}: slots ({len(slots)}) and ids ({len(ids)}) differ in length")
    out: dict[str, Any] = {"slots": slots, "ids": ids,
                           "dense": _dense_list(inst.get("dense", []), f"instance {i}: dense")}
    if "request_id" in inst:
        if not isinstance(inst["request_id"], str):
            raise RequestError(f"instance {i}: request_id must be a string")
        out["request_id"] = inst["request_id"]
    for key in ("user_id", "item_id"):  # entity ids: request-time features (sync.request_features)
        if key in inst:
            out[key] = entity_id(inst[key], f"instance {i}: {key}")
    return out


def parse_predict(body: bytes, max_batch: int) -> list[dict[str, Any]]:
    """The checked instances of a ``POST /predict`` body, or ``RequestError``."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"malformed JSON: {exc}") from exc
    if not isinstance(doc, dict) or "instances" not in doc:
        raise RequestError('expected a JSON object {"instances": [...]}')
    instances = doc["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError("instances must be a non-empty list")
    if len(instances) > max_batch:
        raise RequestError(f"{len(instances)} instances > serve.max_batch={max_batch}")
    return [parse_instance(inst, i) for i, inst in enumerate(instances)]


# -- the published contract ----------------------------------------------------------------
def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, ref: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


INT64 = {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
POSITIVE_INT64 = {"type": "integer", "format": "int64", "minimum": 1, "maximum": INT64_MAX}


def openapi_document(max_batch: int = 4096, max_body_bytes: int = 8 << 20) -> dict[str, Any]:
    """The OpenAPI 3.0 document the app serves at ``/openapi.json`` (for its config)."""
    schemas = {
        "Instance": {
            "type": "object", "required": ["slots", "ids"], "additionalProperties": False,
            "description": "What a Sample carries at serving time. slots[k] is the slot of ids[k]; "
                           "ids of slots the model does not use are ignored; an unknown id reads zeros "
                           "(or its field's default row, docs/sync.md). "
                           "With user_id and item_id and the base dense width (the model's dense_dim "
                           "minus the feature job's realtime width), the replica completes the "
                           "instance with the realtime features as of request time (docs/sync.md); "
                           "with the full width it is scored as sent.",
            "properties": {
                "slots": {"type": "array", "items": INT64},
                "ids": {"type": "array", "items": INT64},
                "dense": {"type": "array", "items": {"type": "number"},
                          "description": "exactly the model's dense_dim values (default [])"},
                "request_id": {"type": "string"},
                "user_id": {**POSITIVE_INT64, "description": "with item_id: request-time features"},
                "item_id": {**POSITIVE_INT64, "description": "with user_id: request-time features"},
            },
        },
        "PredictRequest": {
            "type": "object", "required": ["instances"],
            "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": max_batch,
                                         "items": {"$ref": "#/components/schemas/Instance"}}},
        },
        "PredictResponse": {
            "type": "object",
            "required": ["model", "version", "dense_version", "heads", "predictions"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer", "nullable": True,
                            "description": "the sparse model version every answer was scored on"},
                "dense_version": {"type": "integer",
                                  "description": "the dense weights' version every answer used"},
                "heads": {"type": "array", "items": {"type": "string"}},
                "predictions": {"type": "array", "description": "(instances, heads) probabilities",
                                "items": {"type": "array", "items": {"type": "number"}}},
            },
        },
        "Health": {
            "type": "object", "required": ["status", "model"],
            "properties": {"status": {"type": "string", "enum": ["ok", "down"]},
                           "model": {"type": "string"},
                           "version": {"type": "integer", "nullable": True}},
        },
        "Ready": {
            "type": "object", "required": ["ready", "reasons"],
            "properties": {"ready": {"type": "boolean"},
                           "reasons": {"type": "array", "items": {"type": "string"}},
                           "version": {"type": "integer", "nullable": True},
                           "lag_records": {"type": "integer"},
                           "version_age_s": {"type": "number", "nullable": True}},
        },
        "Status": {"type": "object", "additionalProperties": True,
                   "description": "the replica's counters as JSON (applied_version, lag_records, "
                                  "version_age_ms, rows_applied_per_s, gaps, ...)"},
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
    }
    paths = {
        "/predict": {"post": {
            "operationId": "predict",
            "summary": "Score a batch of instances on one sparse and one dense model version",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/PredictRequest"}}}},
            "responses": {
                "200": _json("probabilities per instance and head, with the versions used",
                             "PredictResponse"),
                "400": _error(f"malformed JSON, more than {max_batch} instances, or instances that "
                              "cannot be scored (the message says why)"),
                "413": _error(f"a body over {max_body_bytes} bytes"),
                "503": _error("no model yet (the replica has not bootstrapped)"),
            }}},
        "/health": {"get": {
            "operationId": "health", "summary": "Liveness: the process answers and applies deltas",
            "responses": {"200": _json("alive", "Health"),
                          "503": _json("the apply thread is not running", "Health")}}},
        "/ready": {"get": {
            "operationId": "ready",
            "summary": "Readiness: bootstrapped, lag and version age within bounds, no recent apply error",
            "responses": {"200": _json("ready to take traffic", "Ready"),
                          "503": _json("not ready; reasons says why", "Ready")}}},
        "/status": {"get": {
            "operationId": "status", "summary": "The replica's counters as JSON (for people and scripts)",
            "responses": {"200": _json("counters", "Status")}}},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus text exposition format",
            "responses": {"200": {"description": "metrics",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "streamtrain serving replica", "version": API_VERSION,
                     "description": "The reference serving replica (sync/app.py): predictions "
                                    "with the model version they were made with."},
            "paths": paths, "components": {"schemas": schemas}}
