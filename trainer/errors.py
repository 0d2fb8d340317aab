"""Errors of the trainer package."""


class TrainerError(Exception):
    """Root error of the trainer package: the trainer cannot go on as configured."""


class CheckpointError(TrainerError):
    """A checkpoint cannot be written, read, or does not fit the configured model."""


class StreamError(TrainerError):
    """The sample stream (Kafka) cannot be read."""
