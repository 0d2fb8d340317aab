"""The incremental trainer: Kafka ``samples`` -> collisionless embeddings + CTR model.

    stream.py      Kafka consumer, bulk decode into typed batches on a prefetch thread, dead letters
    batch.py       Batch (ids + CSR offsets, dense, labels per head, weights, flags, positions)
    id_index.py    vectorised 64-bit id -> entry map (pandas Int64HashTable)
    embedding.py   EmbeddingTable; CpuEmbeddingTable / CudaEmbeddingTable: admission,
                   expiry, free-row reuse, row-wise Adagrad, touched/evicted tracking
    model.py       CTRModel (FM or DCN interaction + MLP, a head per action type), build_model, pool
    weighting.py   sample weights, negative down-sampling correction, fake-negative weighting
    metrics.py     progressive validation (AUC, logloss, NE, calibration), JSON lines + PNG
    checkpoint.py  atomic checkpoint files
    trainer.py     Trainer: train_batch, predict, run, checkpoints, hooks for sync
    updates.py     TableUpdate, what sync/ publishes
    cli.py         ``streamtrain train``

Id -> row mapping (what a serving replica must do to reproduce the trainer's scores):
there is ONE embedding table, named ``"emb"`` (``trainer.TABLE_NAME``), of dimension
``model.dim``. A Sample's ids are global 64-bit feature ids (producers put the slot in the
high bits, e.g. ``(slot << 48) | value``), and each id is the table key as is: the row of
``ids[k]`` is ``emb[ids[k]]``. Only ids whose ``slots[k]`` is in ``model_config()["slots"]``
are used; the field of slot s is its position in that list. A field's embedding is the
sum of the rows of its ids (zeros when it has none); an id the table does not hold
(unseen, not yet admitted, or evicted) reads zeros. That gives the (B, F, D) input of
``build_model(model_config).score(emb, dense)``; ``trainer.model.pool`` does the summing.

    from trainer import Trainer, ModelConfig, TableConfig, TrainerConfig
"""

from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.errors import CheckpointError, StreamError, TrainerError
from trainer.trainer import TABLE_NAME, Trainer
from trainer.updates import TableUpdate

__all__ = ["CheckpointError", "ModelConfig", "StreamError", "TABLE_NAME", "TableConfig", "TableUpdate",
           "Trainer", "TrainerConfig", "TrainerError"]
