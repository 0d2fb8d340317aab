"""Small configs and samples shared by the trainer tests."""

from __future__ import annotations

import numpy as np

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


def dict_lookup(store: dict[int, np.ndarray], dim: int):
    """A ``trainer.scoring.RowLookup`` over synced rows ``{id: row}``: zeros and not found
    for an id the store lacks, as a replica's row store answers."""
    def lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zero = np.zeros(dim, np.float32)
        return (np.stack([store.get(i, zero) for i in ids.tolist()]).reshape(len(ids), dim),
                np.array([i in store for i in ids.tolist()], bool))
    return lookup


def sample(i: int = 0, ids=(1, 2), slots=(0, 1), labels=(), **kw) -> Sample:
    return Sample(request_id=f"r{i}", user_id=1, item_id=2, event_time_ms=1000 + i, emit_time_ms=1000 + i,
                  slots=list(slots), ids=list(ids), label_types=list(labels), **kw)


def train_argv(kafka, topics, tmp_path, *extra: str, sets=()) -> list[str]:
    """Arguments of ``streamtrain train`` for the small model on the test broker and topics:
    checkpoints in ``tmp_path/ckpt``, metrics in ``tmp_path/m.jsonl``, dumps in
    ``tmp_path/dumps``; ``extra`` flags and ``sets`` (``section.field=value``) appended."""
    base = [f"kafka.bootstrap={kafka.bootstrap}", f"topics.samples={topics.samples}",
            f"topics.dead_letter={topics.dead_letter}", f"topics.model_deltas={topics.model_deltas}",
            f"topics.model_dense={topics.model_dense}", f"sync.dump_dir={tmp_path / 'dumps'}",
            f"model.slots={','.join(map(str, range(SLOTS)))}", "model.dim=8", "model.dense_dim=0",
            "model.heads=click", "model.hidden=32", "embedding.dim=8"]
    argv = ["--device", "cpu", "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--metrics", str(tmp_path / "m.jsonl"), *extra]
    for s in (*base, *sets):
        argv += ["--set", s]
    return argv


def produce_samples(kafka, topic: str, samples, extra=(), extra_partition: int = 0) -> None:
    """Samples to the topic's two partitions in turn, then ``extra`` raw bytes (bad records)
    to ``extra_partition``; flushed, the producer closed even on failure."""
    from schemas import codec_for
    from streamtrain.kafka_io import make_producer

    codec = codec_for(Sample)
    producer = make_producer(kafka)
    try:
        for i, s in enumerate(samples):
            producer.send(topic, codec.encode(s), partition=i % 2)
        for raw in extra:
            producer.send(topic, raw, partition=extra_partition)
        producer.flush()
    finally:
        producer.close()
