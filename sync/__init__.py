"""Model delivery to serving: the trainer side publishes, the serving side applies.

Trainer side (inside the training loop, between batches; ``trainer`` is any
``sync.source.ModelSource``, e.g. ``trainer.Trainer``)::

    publisher = ModelPublisher(PublisherConfig(model="ctr"), kafka, topics, trainer)
    trainer.train_batch(batch)
    publisher.tick()                      # pushes sparse deltas / dense + dump when due

Serving side (what a user's serving system embeds)::

    consumer = DeltaConsumer(ConsumerConfig(model="ctr", dump_dir=...), kafka, topics, store)
    consumer.bootstrap()                  # latest complete dump, then seek to its offsets
    consumer.poll()                       # apply whatever arrived; idempotent, version-ordered

See docs/sync.md for the wire format and the guarantees.
"""

from sync.errors import SyncError

__all__ = ["SyncError"]
