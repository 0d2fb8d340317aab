"""Freshness traced through every stage: action produced -> sample emitted by the joiner ->
training step done -> version published -> version answered with by a serving replica.

Freshness of an action = when a replica first answers with a model version whose training
included the sample carrying that action, minus when the action was produced. The trainer
keeps a uniform sample of its actions per version (``trainer.freshness``: rows
``action_ms, emit_ms, trained_ms``); the publisher ships them, with ``published_ms``, in the
Kafka record header ``streamtrain-trace`` on part 0 of every shard of that version on
``model-deltas`` (every replica reads part 0 of each shard it owns, and the version becomes
visible only once it has them); the replica stamps ``applied_ms`` when that version becomes
the one it answers with (the atomic switch of ``sync.view``) and observes five durations
per trace (``STAGES``), which sum: end_to_end = join_wait + sample_to_trained +
trained_to_published + published_to_applied.

The header value is compact JSON, UTF-8 (the record's value, the SparseDelta bytes, is
untouched, so the Java reader and other consumers see nothing new)::

    {"format": 1, "model": "ctr", "version": 42, "published_ms": 1700000000500,
     "actions": 913, "traces": [[action_ms, emit_ms, trained_ms], ...]}

``actions`` counts the actions trained on in this version; ``traces`` is a uniform sample
of them (at most ``trainer.freshness_traces``).

>>> vt = VersionTraces("ctr", 42, 10_000, 3, np.array([[1_000, 4_000, 9_000]]))
>>> decode_traces(encode_traces(vt)).traces.tolist()
[[1000, 4000, 9000]]
>>> {k: int(v[0]) for k, v in stage_ms(vt, applied_ms=10_250).items()}
... # doctest: +NORMALIZE_WHITESPACE
{'end_to_end': 9250, 'join_wait': 3000, 'sample_to_trained': 5000,
 'trained_to_published': 1000, 'published_to_applied': 250}
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from streamtrain.clock import WALL, Clock
from sync.errors import SyncError
from sync.replica_metrics import freshness_histogram

log = logging.getLogger(__name__)
TRACE_HEADER = "streamtrain-trace"
FORMAT = 1
STAGES = ("end_to_end", "join_wait", "sample_to_trained", "trained_to_published",
          "published_to_applied")


class TraceHeaderError(SyncError):
    """A ``streamtrain-trace`` header that cannot be read (the delta itself is fine)."""


@dataclass(frozen=True)
class VersionTraces:
    """The traces one published version carries; ``traces`` (n, 3) int64 rows of
    ``action_ms, emit_ms, trained_ms`` (``trainer.freshness``)."""

    model: str
    version: int
    published_ms: int
    actions: int
    traces: np.ndarray


def encode_traces(vt: VersionTraces) -> bytes:
    """The header value (compact JSON)."""
    return json.dumps({"format": FORMAT, "model": vt.model, "version": vt.version,
                       "published_ms": vt.published_ms, "actions": vt.actions,
                       "traces": np.asarray(vt.traces, np.int64).reshape(-1, 3).tolist()},
                      separators=(",", ":")).encode()


def decode_traces(raw: bytes) -> VersionTraces:
    """The header value back; ``TraceHeaderError`` saying what is wrong otherwise."""
    try:
        d = json.loads(raw)
        if d.get("format") != FORMAT:
            raise TraceHeaderError(f"format {d.get('format')!r}, this reader knows {FORMAT}")
        traces = np.asarray(d["traces"], dtype=np.int64).reshape(-1, 3)
        return VersionTraces(str(d["model"]), int(d["version"]), int(d["published_ms"]),
                             int(d["actions"]), traces)
    except TraceHeaderError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TraceHeaderError(f"unreadable {TRACE_HEADER} header: {type(exc).__name__}: "
                               f"{exc}") from exc


def find_header(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    """The ``streamtrain-trace`` value among a Kafka record's headers, or None."""
    for key, value in headers or ():
        if key == TRACE_HEADER:
            return value
    return None


def stage_ms(vt: VersionTraces, applied_ms: int) -> dict[str, np.ndarray]:
    """(n,) int64 milliseconds per stage for each trace of ``vt`` answered from
    ``applied_ms`` on. The joiner stamps ``emit_ms`` with its watermark (event time, which
    trails the wall clock), so an emit stamp before the action's own time is read as the
    action's time: join_wait >= 0, and the stages still sum to end_to_end exactly."""
    action, emit, trained = (vt.traces[:, i] for i in range(3))
    emitted = np.maximum(emit, action)
    return {"end_to_end": applied_ms - action, "join_wait": emitted - action,
            "sample_to_trained": trained - emitted,
            "trained_to_published": vt.published_ms - trained,
            "published_to_applied": np.full(len(action), applied_ms - vt.published_ms, np.int64)}


class FreshnessTracker:
    """The replica's side: ``observe(vt, applied_ms)`` when version ``vt.version`` becomes
    the one answered with. Only versions published at or after ``since_ms`` (the replica's
    start) count: one applied from the bootstrap dump, or replayed while catching up at
    start-up, was never waited for by this replica, and its traces would measure its
    start-up instead of freshness.

    Observations go to the Prometheus histogram ``streamtrain_replica_freshness_seconds``
    {model, stage} (``histogram``, registered by the app), the last ``keep`` end-to-end
    values (``summary``: p50/p99 for /status), and, with ``log_path``, one JSON line per
    trace appended there (``read_log`` reads them back, e.g. for a CDF)."""

    def __init__(self, model: str, since_ms: int, keep: int = 10_000, log_path: str = "",
                 clock: Clock = WALL) -> None:
        self.model = model
        self.since_ms = since_ms
        self.clock = clock
        self.histogram = freshness_histogram(model, STAGES)
        self._recent: deque[float] = deque(maxlen=keep)  # end-to-end seconds
        self._lock = threading.Lock()  # observe on the apply thread, summary on HTTP threads
        self.versions = 0  # versions whose traces were observed
        self.traces = 0
        self.startup_versions = 0  # versions with traces published before since_ms (not counted)
        self.last_version: int | None = None
        self._log: IO[str] | None = None
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def observe(self, vt: VersionTraces, applied_ms: int | None = None) -> dict[str, np.ndarray] | None:
        """Observe the traces of ``vt`` answered from ``applied_ms`` (now); the stage
        durations in ms, or None when the version does not count (published before start)."""
        if vt.published_ms < self.since_ms:
            self.startup_versions += 1
            return None
        applied = self.clock.now_ms() if applied_ms is None else applied_ms
        stages = stage_ms(vt, applied)
        for stage in STAGES:
            child = self.histogram.labels(self.model, stage)
            for ms in stages[stage].tolist():
                child.observe(ms / 1000)
        with self._lock:
            self._recent.extend((stages["end_to_end"] / 1000).tolist())
            self.versions += 1
            self.traces += len(vt.traces)
            self.last_version = vt.version
        if self._log is not None and len(vt.traces):
            self._write(vt, applied, stages)
        return stages

    def _write(self, vt: VersionTraces, applied_ms: int, stages: dict[str, np.ndarray]) -> None:
        head = {"model": vt.model, "version": vt.version, "actions": vt.actions,
                "published_ms": vt.published_ms, "applied_ms": applied_ms}
        lines = []
        for i, (action, emit, trained) in enumerate(vt.traces.tolist()):
            rec = head | {"action_ms": action, "emit_ms": emit, "trained_ms": trained}
            rec |= {f"{s}_s": int(stages[s][i]) / 1000 for s in STAGES}
            lines.append(json.dumps(rec, separators=(",", ":")) + "\n")
        assert self._log is not None
        self._log.writelines(lines)
        self._log.flush()

    def summary(self) -> dict[str, Any]:
        """For /status: counts, and end-to-end p50/p99 seconds over the last ``keep``."""
        with self._lock:
            recent = np.asarray(self._recent, dtype=np.float64)
            out: dict[str, Any] = {"versions": self.versions, "traces": self.traces,
                                   "startup_versions": self.startup_versions,
                                   "last_version": self.last_version, "window": len(recent)}
        p50, p99 = np.percentile(recent, [50, 99]).tolist() if len(recent) else (None, None)
        return out | {"p50_s": p50, "p99_s": p99}

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def read_log(path: str) -> dict[str, np.ndarray]:
    """Seconds per stage of every trace in a ``serve.freshness_log`` file (for p50/p99 and
    a CDF: ``np.sort(v)`` against ``np.arange(1, len(v) + 1) / len(v)``)."""
    cols: dict[str, list[float]] = {s: [] for s in STAGES}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                for s in STAGES:
                    cols[s].append(rec[f"{s}_s"])
    return {s: np.asarray(v, np.float64) for s, v in cols.items()}
