"""Asking serving replicas to score a request's candidates: ``POST {url}/predict`` over
keep-alive HTTP (httpx, one connection pool shared by the source's scoring threads),
round robin over several replicas.

    scorer = ReplicaScorer(["http://localhost:8600"], timeout_s=0.5)
    answer = scorer.score([{"user_id": 3, "item_id": 7, "slots": [...], "ids": [...], "dense": [...]}])
    answer.version, answer.click        # the sparse model version, (n,) click probabilities
    scorer.close()

Every failure is a ``ScoringError`` whose ``reason`` is a short label for the metrics
(``timeout``, ``connect``, ``http_503``, ``bad_answer``, ...): the source falls back to the
random policy for that request and counts it; it never stops over a replica.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

CLICK_HEAD = "click"


class ScoringError(RuntimeError):
    """A replica did not give a usable answer; ``reason`` labels why."""

    def __init__(self, reason: str, detail: str = "", replica: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.replica = replica


@dataclass(frozen=True)
class Answer:
    click: list[float]  # per instance, the click head's probability
    version: int | None  # sparse model version it was scored on (None: none yet)
    dense_version: int | None
    replica: str


class Scorer(Protocol):
    """What the live source needs from serving."""

    def score(self, instances: list[dict[str, Any]]) -> Answer: ...

    def close(self) -> None: ...


def parse_answer(doc: Any, n: int, replica: str) -> Answer:
    """The click probabilities of a ``/predict`` answer (``sync.replica.ServingReplica.predict``),
    or ``ScoringError("bad_answer")``."""
    try:
        heads = list(doc["heads"])
        k = heads.index(CLICK_HEAD)
        preds = doc["predictions"]
        click = [float(row[k]) for row in preds]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ScoringError("bad_answer", repr(exc), replica) from exc
    if len(click) != n:
        raise ScoringError("bad_answer", f"{len(click)} predictions for {n} instances", replica)
    version, dense = doc.get("version"), doc.get("dense_version")
    return Answer(click, None if version is None else int(version), None if dense is None else int(dense), replica)


class ReplicaScorer:
    def __init__(self, urls: list[str], timeout_s: float, max_connections: int = 16) -> None:
        if not urls:
            raise ValueError("ReplicaScorer needs at least one replica url")
        self.urls = [u.rstrip("/") for u in urls]
        self._next = itertools.cycle(self.urls)
        self._lock = threading.Lock()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.Client(timeout=timeout_s, limits=limits)

    def score(self, instances: list[dict[str, Any]]) -> Answer:
        with self._lock:
            url = next(self._next)
        try:
            resp = self._client.post(f"{url}/predict", json={"instances": instances})
        except httpx.TimeoutException as exc:
            raise ScoringError("timeout", repr(exc), url) from exc
        except httpx.ConnectError as exc:
            raise ScoringError("connect", repr(exc), url) from exc
        except httpx.HTTPError as exc:
            raise ScoringError("http_error", repr(exc), url) from exc
        if resp.status_code != 200:
            raise ScoringError(f"http_{resp.status_code}", resp.text[:200], url)
        try:
            doc = resp.json()
        except ValueError as exc:
            raise ScoringError("bad_answer", "not JSON", url) from exc
        return parse_answer(doc, len(instances), url)

    def close(self) -> None:
        self._client.close()
