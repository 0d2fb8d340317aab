"""``streamtrain train``: consume ``samples``, train, validate progressively, checkpoint.

    streamtrain train --max-samples 20000 --idle-timeout 10 \\
        --checkpoint-dir runs/ckpt --metrics runs/metrics.jsonl --plot runs/auc.png \\
        --set kafka.bootstrap=localhost:9092 --set model.heads=click,conversion

Resumes from the newest checkpoint in ``trainer.checkpoint_dir`` when there is one.
Sections: [kafka], [topics], [model], [embedding], [trainer] (see trainer/config.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging

from streamtrain import cli_common
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from sync.config import PublisherConfig
from sync.errors import SyncError
from sync.publisher import ModelPublisher
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.errors import TrainerError
from trainer.stream import KafkaSampleSource
from trainer.trainer import Trainer

log = logging.getLogger(__name__)

FLAGS = {  # --flag -> trainer config field
    "max_samples": "max_samples", "idle_timeout": "idle_timeout_s", "checkpoint_dir": "checkpoint_dir",
    "metrics": "metrics_path", "plot": "plot_path", "device": "device", "batch_size": "batch_size",
}


def run(kafka: KafkaConfig, topics: TopicsConfig, model: ModelConfig, table: TableConfig,
        cfg: TrainerConfig, publish: PublisherConfig | None = None) -> dict:
    """Train from the newest checkpoint on; with ``publish``, push the model to serving as it
    trains (sparse deltas every ``sync.sparse_interval_s``, dense + dump every
    ``sync.dense_interval_s`` and at start) and once more when training stops."""
    trainer = Trainer(model, table, cfg)
    trainer.restore_latest()
    source = KafkaSampleSource(kafka, topics, model, cfg, start=trainer.positions)
    if publish is None:
        final = trainer.run(source)
    else:
        publisher = ModelPublisher(publish, kafka, topics, trainer)
        try:
            final = trainer.run(source, on_batch=publisher.on_batch, on_idle=lambda _: publisher.tick())
            # a clean stop hands serving the final model: rows, dense weights and a dump
            publisher.publish_dense()
            final["model_version"] = publisher.version
        finally:
            publisher.close()
    final["dead_letters"] = source.dead_letters
    return final


def main(argv: list[str] | None = None) -> int:
    p = cli_common.parser("train", "incremental trainer: samples topic -> model, progressive AUC")
    p.add_argument("--max-samples", type=int, default=None, help="stop after this many samples (batch boundary)")
    p.add_argument("--idle-timeout", type=float, default=None, help="stop after this many seconds without samples")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--metrics", default=None, help="progressive validation, JSON lines")
    p.add_argument("--plot", default=None, help="progressive validation plot (PNG)")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-publish", action="store_true",
                   help="do not push the model to model-deltas/model-dense ([sync] settings)")
    args = p.parse_args(argv)
    try:
        cfg = cli_common.load(args, TrainerConfig, "trainer")
        changes = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None}
        cfg = dataclasses.replace(cfg, **changes)
        final = run(cli_common.load(args, KafkaConfig, "kafka"), cli_common.load(args, TopicsConfig, "topics"),
                    cli_common.load(args, ModelConfig, "model"), cli_common.load(args, TableConfig, "embedding"),
                    cfg, None if args.no_publish else cli_common.load(args, PublisherConfig, "sync"))
    except (TrainerError, SyncError, ValueError) as exc:
        log.error("train failed: %s", exc)
        return 1
    print(json.dumps(final))
    return 0
