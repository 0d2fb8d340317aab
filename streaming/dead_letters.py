"""Dead letters counted by reason, for the jobs' metrics: a DeadLetter's ``reason`` is free
text (it names the value that was wrong), its *key* is one of a fixed set of names, so a
metric label per key stays bounded. Engine-free; the Flink functions export one counter per
key (``dead_letters_<key>``, docs/operations.md).

>>> counts = DeadLetterCounts()
>>> counts.add("missing user_id (user_id=0)"); counts.add("undecodable: bad magic")
>>> counts["missing_user_id"], counts["undecodable"], counts.total()
(1, 1, 2)
"""

from __future__ import annotations

import re
from collections import Counter

# what the record gates (schemas.validation, the codecs) and the joiner's core write as a
# reason, by its leading words; "other" takes anything new (a test keeps this list complete)
REASONS: tuple[str, ...] = (
    "undecodable", "missing_request_id", "missing_user_id", "missing_item_id",
    "missing_action_type", "unknown_action_type", "slots_ids_length_mismatch",
    "absurd_timestamp", "timestamp_in_the_future", "timestamp_too_old",
    "orphan_action", "invalid", "other")


def reason_key(reason: str) -> str:
    """The bounded key of a dead letter's reason: its leading words (before ``:``, `` (``
    or `` '``), snake_case; "other" when they are not in ``REASONS``.

    >>> reason_key("unknown action_type 'teleport' (known: click)"), reason_key("¿?")
    ('unknown_action_type', 'other')
    """
    head = re.split(r":| \(| '", reason, maxsplit=1)[0]
    key = re.sub(r"[^a-z0-9]+", "_", head.strip().lower()).strip("_")
    return key if key in REASONS else "other"


class DeadLetterCounts(Counter[str]):
    """Dead letters by ``reason_key``."""

    def add(self, reason: str) -> None:
        self[reason_key(reason)] += 1
