"""Logging setup, done once at each process's entry point (the CLI, a Flink job's main)."""

from __future__ import annotations

import logging

_NOISY = ("kafka", "py4j", "apache_beam", "pyflink")


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger: one line per record, third-party chatter at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
