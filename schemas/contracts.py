"""Contracts between the stages that no single record schema can state: what a field means
to the stage that writes it and to every stage that reads it. Written once, here; the
writers and readers import from this module, and the tests of each side check against it.

Action types
------------
``ACTION_TYPES`` is the one declared list of action types of the built-in pipeline: what the
traffic generator emits, what the record gates accept (``ValidationLimits.action_types``,
config ``validation.action_types``), what the feature job counts (``features.action_types``)
and the trainer's default heads (``model.heads``). A log with its own types (a replay of
Taobao: cart, fav, buy) declares them in the config every command reads::

    [validation]
    action_types = ["cart", "fav", "buy"]   # the joiner dead-letters (and counts) any other type
    [features]
    action_types = ["cart", "fav", "buy"]
    [model]
    heads = ["cart", "fav", "buy"]          # a type that is no head trains as a negative

Sample.sample_rate (negative down-sampling)
-------------------------------------------
``SAMPLE_RATE_CONTRACT`` below, in words; ``inclusion_probability``, ``unsampling_weight``
and ``sampling_logit_offset`` are its arithmetic for the readers.
"""

from __future__ import annotations

import numpy as np

ACTION_TYPES: tuple[str, ...] = ("click", "like", "conversion")
"""The declared action types (generator, validation, features, trainer heads), in this order."""

SAMPLE_RATE_CONTRACT = """\
Sample.sample_rate is the keep rate r of the joiner's negative down-sampling policy
(joiner.negative_sample_rate), written on EVERY sample the joiner emits under that policy:
positives, negatives, early samples and late corrections alike (1.0 = no down-sampling).
The policy keeps every sample that carries a label (any label_types, whether or not it is a
model head) and a sample without any label with probability r. So the probability that a
sample is in the stream is 1 if label_types is non-empty, else r (sample_rate), and:
  * un-sampled metrics and importance weighting weight a sample without labels by 1/r and a
    labelled one by 1 (``unsampling_weight``);
  * a logit-offset correction adds log(1/r) to the logit of every sample, whatever its label
    (``sampling_logit_offset``); the offset must not depend on the label. For a head whose
    negatives include labelled samples (a 'like' head: a click without a like was kept with
    probability 1), those negatives count r, so that every negative of the head was kept
    with the same probability r the offset assumes.
Sample.weight is independent of it (a producer's own weight, multiplied in)."""


def inclusion_probability(sample_rate: np.ndarray | float, labelled: np.ndarray | bool) -> np.ndarray:
    """Probability that a sample is in the down-sampled stream: 1 when it carries a label,
    ``sample_rate`` when it carries none."""
    return np.where(labelled, 1.0, sample_rate)


def unsampling_weight(sample_rate: np.ndarray | float, labelled: np.ndarray | bool) -> np.ndarray:
    """Importance weight that turns the down-sampled stream back into the full one
    (1 / ``inclusion_probability``)."""
    return 1.0 / inclusion_probability(sample_rate, labelled)


def sampling_logit_offset(sample_rate: np.ndarray | float) -> np.ndarray:
    """log(1/r), added to the logit of every sample in the loss (``logit`` correction)."""
    return -np.log(sample_rate)
