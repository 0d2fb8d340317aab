"""The cyclic garbage collector of the interpreter that runs the jobs' Python functions.

In thread mode one CPython interpreter inside the TaskManager's JVM runs every Python
function of the job, and it holds everything PyFlink and the functions loaded (~140k
objects in the joiner's). PyFlink's per-record machinery leaves enough objects behind for
CPython's default thresholds (700, 10, 10) to run a young collection every few hundred
records and a full one, which walks all of those objects, every ~70k allocations
(`python -m bench.joiner_job --python-gc off`, docs/joiner.md).

``tune()`` (called from each function's ``open``; it acts once per interpreter) moves what
exists at that point, PyFlink and the modules, into the permanent generation
(``gc.freeze``) and raises the thresholds. Reference counting still frees everything at
once; cycles are still collected, only less often: at most ``THRESHOLDS[0]`` young objects
wait for a collection (tests/streaming/test_python_gc.py).

Two environment variables, for benchmarks and diagnosis:
``STREAMTRAIN_PYTHON_GC=off`` keeps CPython's defaults; ``STREAMTRAIN_PYTHON_GC_STATS=<file>``
makes each function's ``close`` append the collector's figures (``report``) as a JSON line.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time

log = logging.getLogger(__name__)
THRESHOLDS = (50_000, 20, 100)  # young, middle, full: a full one every ~100M allocations
ENV_MODE = "STREAMTRAIN_PYTHON_GC"
ENV_STATS = "STREAMTRAIN_PYTHON_GC_STATS"
_lock = threading.Lock()
_tuned = False


class GcClock:
    """Collections per generation and the seconds they took (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            g = info["generation"]
            self.count[g] += 1
            self.seconds[g] += time.perf_counter() - self._t0


_clock: GcClock | None = None


def tune() -> bool:
    """Freeze the objects alive now and raise the collector's thresholds, the first time it
    is called in this interpreter (unless ``STREAMTRAIN_PYTHON_GC=off``); True when it did.
    With ``STREAMTRAIN_PYTHON_GC_STATS`` set, the collections are timed from here on."""
    global _tuned, _clock
    with _lock:
        if _tuned:
            return False
        _tuned = True
        if os.environ.get(ENV_STATS) and _clock is None:
            _clock = GcClock()
            gc.callbacks.append(_clock)
        if os.environ.get(ENV_MODE, "").lower() == "off":
            log.info("python gc: CPython's defaults (%s=off)", ENV_MODE)
            return False
        gc.collect()  # garbage left from start-up is not frozen with the rest
        gc.freeze()
        gc.set_threshold(*THRESHOLDS)
    log.info("python gc: %d objects frozen, thresholds %s", gc.get_freeze_count(), THRESHOLDS)
    return True


def report(who: str) -> None:
    """Append the collector's figures since ``tune`` to the ``STREAMTRAIN_PYTHON_GC_STATS``
    file (nothing when it is unset)."""
    path = os.environ.get(ENV_STATS)
    if not path or _clock is None:
        return
    line = {"who": who, "pid": os.getpid(), "thresholds": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count(), "collections": list(_clock.count),
            "seconds": [round(s, 4) for s in _clock.seconds]}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
