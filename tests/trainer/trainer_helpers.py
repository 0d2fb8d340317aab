"""Small configs and samples shared by the trainer tests."""

from __future__ import annotations

from schemas import Sample
from trainer.config import ModelConfig, TableConfig, TrainerConfig

SLOTS = 6


def small_model(**kw) -> ModelConfig:
    return ModelConfig(**({"slots": tuple(range(SLOTS)), "dim": 8, "hidden": (32,), "dense_dim": 0,
                           "heads": ("click",)} | kw))


def small_table(**kw) -> TableConfig:
    return TableConfig(**({"dim": 8} | kw))


def small_trainer(**kw) -> TrainerConfig:
    return TrainerConfig(**({"batch_size": 256, "window": 2000, "device": "cpu"} | kw))


def sample(i: int = 0, ids=(1, 2), slots=(0, 1), labels=(), **kw) -> Sample:
    return Sample(request_id=f"r{i}", user_id=1, item_id=2, event_time_ms=1000 + i, emit_time_ms=1000 + i,
                  slots=list(slots), ids=list(ids), label_types=list(labels), **kw)
