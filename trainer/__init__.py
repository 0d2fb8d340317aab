"""The incremental trainer: Kafka ``samples`` -> collisionless embeddings + CTR model.

    stream.py      Kafka consumer, bulk decode into typed batches on a prefetch thread, dead letters
    columnar.py    ColumnarReader: a whole fetch of Avro samples decoded into numpy columns
    pacing.py      NegativePacer: an early-emit (label-sorted) stream trained in its own proportion
    source.py      ListSource: batches from an in-memory list (tests, benchmarks, replays)
    batch.py       Batch (ids + CSR offsets, dense, labels per head, weights, flags, positions)
    id_index.py    vectorised 64-bit id -> entry map (pandas Int64HashTable)
    embedding.py   EmbeddingTable; CpuEmbeddingTable / CudaEmbeddingTable: admission,
                   expiry, free-row reuse, row-wise Adagrad, touched/evicted tracking
    model.py       CTRModel (FM or DCN interaction + MLP, a head per action type), build_model
    scoring.py     score_batch: ids -> rows -> pooled fields -> probabilities, the contract a
                   serving replica shares with the trainer (TABLE_NAME, pool)
    weighting.py   sample weights, negative down-sampling correction, fake-negative weighting
    metrics.py     progressive validation (AUC, logloss, NE, calibration), JSON lines + PNG
    checkpoint.py  atomic checkpoint files
    trainer.py     Trainer: train_batch, predict, run, checkpoints, hooks for sync
    updates.py     TableUpdate, what sync/ publishes
    synthetic.py   SyntheticStream: seeded learnable samples without the traffic generator

The command line is ``streamtrain train`` (``streamtrain/cli/train.py``). This package
never imports ``sync/``: the publisher reads a trainer through ``sync.source.ModelSource``.

Id -> row mapping (what a serving replica must do to reproduce the trainer's scores): a
Sample's ids are opaque signed 64-bit feature ids (the producers make them with
``schemas.feature_ids.feature_id``, a hash of (slot, value)); there is ONE embedding table,
named ``"emb"`` (``trainer.TABLE_NAME``), of dimension ``model.dim``, and each id is the
table key as is: the row of ``ids[k]`` is ``emb[ids[k]]``. Only ids whose ``slots[k]`` is in
``model_config()["slots"]`` are used; the field of slot s is its position in that list. A
field's embedding is the mean (``model.pooling``) of the rows of its ids (zeros when it has
none); an id the table does not hold (unseen, not yet admitted, or evicted) reads zeros,
or for a slot of ``model.field_mean_slots`` the slot's mean row, the row of
``trainer.scoring.default_row_id(slot)`` that the trainer keeps at the running mean of the
slot's rows and publishes like any row. ``trainer.scoring``
writes this down once: ``score_batch(build_model(model_config), batch, lookup)``.

    from trainer import Trainer, ModelConfig, TableConfig, TrainerConfig
"""

from typing import TYPE_CHECKING, Any

from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.errors import CheckpointError, StreamError, TrainerError

if TYPE_CHECKING:
    from trainer.scoring import TABLE_NAME
    from trainer.trainer import Trainer
    from trainer.updates import TableUpdate

# the names that need torch load on first use: importing trainer.stream (a spawned prefetch
# process, which only decodes) then does not import torch, ~2 s of its start-up
_LAZY = {"TABLE_NAME": "trainer.scoring", "Trainer": "trainer.trainer", "TableUpdate": "trainer.updates"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")

__all__ = ["CheckpointError", "ModelConfig", "StreamError", "TABLE_NAME", "TableConfig", "TableUpdate",
           "Trainer", "TrainerConfig", "TrainerError"]
