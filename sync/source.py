"""What the publisher needs from a trainer: the ``ModelSource`` protocol.

``sync.publisher.ModelPublisher`` reads a model only through these four methods, so it
depends on no trainer class; ``trainer.trainer.Trainer`` satisfies the protocol
structurally (it does not import ``sync``), and so does any stand-in (the tests'
``FakeTrainer``, the benchmarks' row sources).

    collect_updates()   rows touched and ids evicted since the last call, per table; resets
    full_dump()         every live row, per table (``evicted`` empty)
    dense_state_dict()  the dense network's weights (CPU tensors)
    model_config()      JSON-serialisable; a replica rebuilds the network from it
                        (``trainer.model.build_model``)

Each row update is a ``sync.delta_builder.TableRows`` (``trainer.updates.TableUpdate``):
``table``, ``ids`` (n,) int64, ``values`` (n, dim) float32, ``evicted`` (m,) int64.

The publisher calls them from the training loop between steps: a source need not be
thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from sync.delta_builder import TableRows

__all__ = ["ModelSource", "TableRows", "TraceSource"]


@runtime_checkable
class ModelSource(Protocol):
    def collect_updates(self) -> Sequence[TableRows]:
        """Rows touched and ids evicted since the last call, per table; then resets."""
        ...

    def full_dump(self) -> Sequence[TableRows]:
        """Every live row of every table."""
        ...

    def dense_state_dict(self) -> Mapping[str, torch.Tensor]:
        """The dense weights, detached CPU tensors."""
        ...

    def model_config(self) -> dict[str, Any]:
        """JSON-serialisable description the network is rebuilt from."""
        ...


class TraceSource(Protocol):
    """Where the publisher takes freshness traces from at each push
    (``trainer.freshness.ActionTraces``, the trainer's ``traces``)."""

    def take(self) -> tuple[Any, int]:
        """``(rows, actions)``: (n, 3) int64 ``action_ms, emit_ms, trained_ms`` since the
        last call, and how many actions they sample; then resets."""
        ...
