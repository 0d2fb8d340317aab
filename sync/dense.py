"""Dense weights on the wire: one payload per version, chunked, sha256-checksummed.

Payload: ``torch.save({"model_config": json, "state_dict": {name: tensor}})`` — everything
a replica needs to rebuild the network (``trainer.model.build_model``) and load it. Chunks
go to the single partition of ``model-dense`` in order; ``sha256`` is the hex digest of
the whole payload, checked once all chunks of a version arrived.

    msgs = chunk_dense("ctr", 7, now_ms, encode_dense(sd, cfg), chunk_bytes=1_000_000)
    asm = DenseAssembler("ctr"); done = [asm.add(m) for m in msgs][-1]   # (7, payload)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from typing import Any

import torch

from schemas import DenseSnapshot
from sync.errors import SyncError

log = logging.getLogger(__name__)
FORMAT = "streamtrain-dense-v1"


class DenseChecksumError(SyncError):
    """All chunks of a dense version arrived but their sha256 does not match."""


class DenseChunkError(SyncError):
    """A chunk that cannot be part of any payload (its number outside ``num_chunks``)."""


def encode_dense(state_dict: Mapping[str, torch.Tensor], model_config: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"model_config": json.dumps(model_config),
                "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}, buf)
    return buf.getvalue()


def decode_dense(payload: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    """(model_config, state_dict) of a payload."""
    obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    return json.loads(obj["model_config"]), obj["state_dict"]


def chunk_dense(model: str, version: int, created_ms: int, payload: bytes,
                chunk_bytes: int) -> list[DenseSnapshot]:
    digest = hashlib.sha256(payload).hexdigest()
    pieces = [payload[i:i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)] or [b""]
    return [DenseSnapshot(model, version, created_ms, i, len(pieces), digest, p, FORMAT)
            for i, p in enumerate(pieces)]


class DenseAssembler:
    """Collects chunks per version; hands out a version's payload once whole and verified.
    Versions not newer than the last one handed out are ignored."""

    def __init__(self, model: str, version: int = -1):
        self.model = model
        self.version = version
        self._parts: dict[int, dict[int, DenseSnapshot]] = {}

    def add(self, snap: DenseSnapshot) -> tuple[int, bytes] | None:
        if snap.model != self.model or snap.version <= self.version:
            return None
        if not 0 <= snap.chunk < snap.num_chunks:
            raise DenseChunkError(f"dense model={self.model} version={snap.version}: chunk "
                                  f"{snap.chunk} outside num_chunks={snap.num_chunks}; ignored")
        parts = self._parts.setdefault(snap.version, {})
        parts[snap.chunk] = snap
        if len(parts) < snap.num_chunks or any(i not in parts for i in range(snap.num_chunks)):
            return None  # (chunks that disagree on num_chunks never complete the version)
        del self._parts[snap.version]
        payload = b"".join(parts[i].payload for i in range(snap.num_chunks))
        if hashlib.sha256(payload).hexdigest() != snap.sha256:
            raise DenseChecksumError(f"dense model={self.model} version={snap.version}: sha256 "
                                     f"of {snap.num_chunks} chunks does not match; ignored")
        for old in [v for v in self._parts if v < snap.version]:
            del self._parts[old]
        self.version = snap.version
        return snap.version, payload
