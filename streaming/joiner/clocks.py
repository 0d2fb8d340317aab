"""The impression clock: how far the impression input is known to be complete, in event
time. The joiner measures an action's wait for its impression (``orphan_wait_ms``) by it,
not by the operator's watermark.

Why not the watermark: Flink's watermark of the join operator is the minimum of its two
inputs' watermarks, except that an idle input drops out of the minimum, and it is computed
from Kafka record timestamps, not from the records' ``event_time_ms``. So it can run ahead
of the impressions: the impression input is idle for ``flink.idleness_ms`` (a client action
log ahead of the server's impression log, an upstream job paused), or the action topic's
record timestamps are not event times (the feature job's ``actions-deduped`` carried
wall-clock timestamps until it stamped them: PyFlink's thread-mode side outputs drop the
element timestamp; any producer may stamp send times).
Orphaning actions on such a watermark dead-letters actions whose impressions are still on
their way.

The clock follows the watermark while the watermark is consistent with the impressions
read so far (``watermark <= newest impression event time - out_of_orderness_ms``: a
watermark the impression input itself could have produced, so a true lower bound of the
impressions still to come, per Kafka partition). When the watermark is ahead of that, the
clock stays where it was (no action gives up waiting on the strength of the other input's
progress) until the impressions catch up. ``END_OF_TIME`` (the end of a bounded input)
passes through: every input has ended, what did not come never will.

The cost of that caution: if the watermark stays ahead of the impressions (record
timestamps later than event time by more than the out-of-orderness, e.g. a topic with
``LogAppendTime``, which the joiner counts as ``time_skewed``), waits end only when the
memory bound pushes them out (orphan check at once) or the input ends.

    clock = ImpressionClock(out_of_orderness_ms=5_000)
    clock.on_impression(imp.event_time_ms)      # every impression the subtask reads
    core.on_action(act, wm, impressions_ms=clock.at(wm))
    core.advance(wm, impressions_ms=clock.at(wm))

One clock per Flink subtask (shared by its bucket cores: they read the same input). The
clock is not checkpointed: after a restore it starts at "nothing known" and the restored
waits resume once impressions flow again (a wait can only get longer, never cut short).
"""

from __future__ import annotations

from streaming.event_time import END_OF_TIME


class ImpressionClock:
    __slots__ = ("out_of_orderness_ms", "newest_ms", "ms")

    def __init__(self, out_of_orderness_ms: int = 0) -> None:
        self.out_of_orderness_ms = out_of_orderness_ms
        self.newest_ms: int | None = None  # newest impression event time read
        self.ms = -END_OF_TIME             # the impressions are complete up to here

    def on_impression(self, event_time_ms: int) -> None:
        if self.newest_ms is None or event_time_ms > self.newest_ms:
            self.newest_ms = event_time_ms

    def at(self, watermark_ms: int) -> int:
        """The clock, given the operator's current watermark (never goes back)."""
        if watermark_ms >= END_OF_TIME:
            self.ms = END_OF_TIME
        elif (self.newest_ms is not None and self.ms < watermark_ms
              <= self.newest_ms - self.out_of_orderness_ms):
            self.ms = watermark_ms
        return self.ms
