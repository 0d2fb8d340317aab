"""A clean stop on SIGTERM / SIGINT for long-running processes (trainer, Flink jobs, the
traffic source, ``streamtrain up``): the first signal asks to stop, a second one aborts.

    stop = StopRequest()
    with stop_on_signals(stop):
        while not stop.is_set():
            work()
    finish_cleanly()          # checkpoint, savepoint, final publish ...
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest(threading.Event):
    """Set by the first stop signal; ``by`` names it."""

    by = ""


@contextmanager
def stop_on_signals(stop: StopRequest, what: str = "stopping after the current step") -> Iterator[None]:
    """While inside: the first SIGTERM/SIGINT sets ``stop`` (a clean stop), a second one
    raises ``KeyboardInterrupt`` (abort). Outside the main thread (signals cannot be
    handled there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: aborting", name)
            raise KeyboardInterrupt(name)
        log.info("%s: %s; send it again to abort", name, what)
        stop.by = name
        stop.set()

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
