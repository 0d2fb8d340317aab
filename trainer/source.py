"""Batch sources that are not Kafka: an in-memory list (tests, benchmarks, replays)."""

from __future__ import annotations

from schemas import Sample
from trainer.batch import Batch, BatchBuilder
from trainer.config import ModelConfig


class ListSource:
    """Serves ``samples`` in order, ``batch_size`` at a time; ``exhausted`` at the end.
    Positions are reported as partition 0, offset = index of the next sample."""

    def __init__(self, samples: list[Sample], model: ModelConfig, batch_size: int, start: int = 0):
        self.samples, self.batch_size, self.at = samples, batch_size, start
        self.builder = BatchBuilder(model)

    @property
    def exhausted(self) -> bool:
        return self.at >= len(self.samples)

    def next_batch(self, timeout_s: float = 0.0) -> Batch | None:
        if self.exhausted:
            return None
        chunk = self.samples[self.at: self.at + self.batch_size]
        self.at += len(chunk)
        return self.builder.build(chunk, positions={0: self.at})

    def close(self) -> None:
        pass
