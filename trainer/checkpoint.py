"""Atomic checkpoints: one file per checkpoint, written to a temporary name, fsynced, then
renamed (a reader sees a whole checkpoint or none); the newest ``keep`` are kept.

A checkpoint holds the live embedding rows with their optimizer state, the dense weights
and Adam state, the progressive-validation state and the Kafka positions (partition ->
next offset) of exactly the samples the state has been trained on, so a restart that
seeks there trains every sample once. Files are torch pickles of our own making, read
with ``weights_only=False``: load only checkpoints this trainer wrote.

    path = save(directory, state, step=120, keep=2)
    state = load(latest(directory))
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from trainer.errors import CheckpointError

log = logging.getLogger(__name__)
PREFIX, SUFFIX = "ckpt-", ".pt"


def save(directory: str | Path, state: dict, step: int, keep: int = 2) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"{PREFIX}{step:012d}{SUFFIX}"
    tmp = d / f".{final.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {final}: {exc}; check disk space "
                              "and permissions of trainer.checkpoint_dir") from exc
    for old in all_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    log.info("checkpoint written path=%s step=%d", final, step)
    return final


def all_checkpoints(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))


def latest(directory: str | Path) -> Path | None:
    found = all_checkpoints(directory)
    return found[-1] if found else None


def load(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling raises many kinds
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}; delete it to start "
                              "from the previous one") from exc
