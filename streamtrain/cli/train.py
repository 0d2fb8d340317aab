"""``streamtrain train``: consume ``samples``, train, validate progressively, checkpoint.

    streamtrain train --max-samples 20000 --idle-timeout 10 \\
        --checkpoint-dir runs/ckpt --metrics runs/metrics.jsonl --plot runs/auc.png \\
        --set kafka.bootstrap=localhost:9092 --set model.heads=click,conversion

Resumes from the newest checkpoint in ``trainer.checkpoint_dir`` when there is one.
SIGTERM (``docker stop``) or SIGINT (Ctrl-C) stops it cleanly: the step in progress
finishes, a checkpoint is written, the final model is published, the final report printed,
exit code 0. A second signal aborts at once (exit code 130, nothing more saved).
Sections: [kafka], [topics], [model], [embedding], [trainer] (see trainer/config.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging

from streamtrain import flags
from streamtrain.config import ConfigError
from streamtrain.kafka_io import KafkaConfig, TopicsConfig
from streamtrain.signals import StopRequest, stop_on_signals
from sync.config import PublisherConfig
from sync.errors import SyncError
from sync.publisher import ModelPublisher
from trainer.config import ModelConfig, TableConfig, TrainerConfig
from trainer.errors import TrainerError
from trainer.pacing import NegativePacer
from trainer.prometheus import TrainerExporter
from trainer.stream import KafkaSampleSource
from trainer.trainer import BatchSource, Trainer

log = logging.getLogger(__name__)

FLAGS = {  # --flag -> trainer config field
    "max_samples": "max_samples", "idle_timeout": "idle_timeout_s", "checkpoint_dir": "checkpoint_dir",
    "metrics": "metrics_path", "plot": "plot_path", "device": "device", "batch_size": "batch_size",
}


def run(kafka: KafkaConfig, topics: TopicsConfig, model: ModelConfig, table: TableConfig,
        cfg: TrainerConfig, publish: PublisherConfig | None = None,
        stop: StopRequest | None = None) -> dict:
    """Train from the newest checkpoint on; with ``publish``, push the model to serving as it
    trains (sparse deltas every ``sync.sparse_interval_s``, dense + dump every
    ``sync.dense_interval_s`` and at start) and once more when training stops (its bounds,
    or ``stop`` set: the step in progress finishes, then checkpoint and final publish)."""
    trainer = Trainer(model, table, cfg)
    trainer.restore_latest()
    kafka_source = KafkaSampleSource(kafka, topics, model, cfg, start=trainer.positions)
    # with pacing off, a checkpoint's held negatives still go through the pacer (released at once)
    source: BatchSource = (NegativePacer(kafka_source, cfg, held=trainer.held_input)
                           if cfg.pacing or trainer.held_input else kafka_source)
    exporter = TrainerExporter(trainer, kafka_source)  # Prometheus, on trainer.metrics_port (0 = off)
    if cfg.metrics_port:
        exporter.start(cfg.metrics_port, cfg.metrics_host)
    if publish is None:
        try:
            final = trainer.run(source, stop=stop)
        finally:
            exporter.close()
    else:
        publisher = ModelPublisher(publish, kafka, topics, trainer, traces=trainer.traces)
        exporter.publisher = publisher

        def on_idle(_: Trainer) -> None:
            publisher.tick()  # its PushStats are not needed here

        try:
            final = trainer.run(source, on_batch=exporter.on_batch(publisher.on_batch),
                                on_idle=exporter.on_idle(on_idle), stop=stop)
            # a clean stop hands serving the final model: rows, dense weights and a dump
            publisher.publish_dense()
            final["model_version"] = publisher.version
        finally:
            exporter.close()
            publisher.close()
    final["dead_letters"] = kafka_source.dead_letters
    if stop is not None and stop.is_set():
        final["stopped_by"] = stop.by
    return final


def main(argv: list[str] | None = None) -> int:
    p = flags.parser("train", "incremental trainer: samples topic -> model, progressive AUC")
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
    stop = StopRequest()
    try:
        with stop_on_signals(stop, "stopping after the current step (checkpoint, final publish)"):
            cfg = flags.load(args, TrainerConfig, "trainer")
            changes = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None}
            cfg = dataclasses.replace(cfg, **changes)
            final = run(flags.load(args, KafkaConfig, "kafka"), flags.load(args, TopicsConfig, "topics"),
                        flags.load(args, ModelConfig, "model"), flags.load(args, TableConfig, "embedding"),
                        cfg, None if args.no_publish else flags.load(args, PublisherConfig, "sync"),
                        stop=stop)
    except KeyboardInterrupt:
        log.error("train aborted")
        return 130
    except ConfigError as exc:
        log.error("train failed: %s", exc)
        return 2
    except (TrainerError, SyncError, ValueError) as exc:
        log.error("train failed: %s", exc)
        return 1
    print(json.dumps(final))
    return 0
