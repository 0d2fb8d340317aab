"""Event time in the streaming code: epoch milliseconds, as Flink counts it.

``END_OF_TIME`` is the one "after every event" value of streaming/. It equals Flink's
``Long.MAX_VALUE`` (``2**63 - 1``), the watermark a source emits when its bounded input ends
(``Watermark.MAX_WATERMARK``): every event-time timer fires then, and the engine-free cores,
which take time as an argument, read it the same way:

* the join core's ``advance(now)`` closes every window once ``now >= END_OF_TIME`` (the
  final watermark of a bounded run, or a test's "end of input"), and keeps its KV fallback
  as it is (no TTL purge at the end);
* the joiner's Flink function registers no timer at ``END_OF_TIME`` or beyond (a Java long
  cannot hold more; the final watermark fires every earlier timer anyway);
* the in-memory feature pipeline's ``finish()`` advances its watermark to ``END_OF_TIME``,
  and starts from ``-END_OF_TIME`` (below any event);
* the online store seeks to ``END_OF_TIME`` for an entity's latest version: no event time
  stored in its keys is larger.

    from streaming.event_time import END_OF_TIME
    core.advance(END_OF_TIME)        # end of input: close everything
"""

from __future__ import annotations

END_OF_TIME: int = (1 << 63) - 1
"""Flink's ``Long.MAX_VALUE`` watermark: the end of a bounded input; later than any event."""
