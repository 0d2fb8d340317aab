"""The join core: impressions x delayed actions in a waiting window. Engine-free (no Flink
here): time is passed in (event time, the watermark in the Flink job), outputs are returned.

Join semantics
--------------
* Join key: ``(request_id, item_id)``. An impression waits ``window_ms`` of event time in the
  window (a HashQueue). Every action of its key that arrives meanwhile adds its
  ``action_type`` as a label, with its delay after the impression. Whether a label is in
  the window is decided by event time (delay <= ``window_ms``), not by processing order: an
  action later than the window that is processed while the impression still waits (a
  backlog, an action read before its impression) comes out as a correction at close.
* **One final sample per impression.** Policy ``wait`` (Facebook-style): emitted when the
  window closes, carrying every label seen in the window (negative if none). Policy
  ``early`` (Monolith-style, for freshness): emitted at the first positive with flag
  ``FLAG_EARLY`` (negatives still at window close); a label of another type that arrives
  later comes as a correction (below), so final + corrections carry the same labels.
* **Late corrections.** An impression leaving the window (closed, or pushed out by the
  memory bound) is written to the KV fallback (rocksdict, TTL ``kv_ttl_ms``). An action that
  arrives after that finds its features there and is emitted as a *correction sample*:
  flag ``FLAG_LATE_CORRECTION``, carrying only the new label and its delay, so the trainer
  can apply a delayed-feedback correction (e.g. fake-negative weighting).
* **Orphans.** An action whose impression is unknown waits ``orphan_wait_ms`` (its impression
  may simply be late); if none arrives it is an orphan: counted and returned as a
  ``DeadLetter`` with the reason. Invalid records are dead-lettered too. Never a crash.
  The wait is measured on the *impression clock* (``impressions_ms``: how far the
  impression input is known complete, see ``streaming/joiner/clocks.py``), from the later
  of that clock and the action's event time: the action becomes an orphan only once the
  impressions are complete up to that point + ``orphan_wait_ms`` without its impression.
  The action input running ahead (or stamped with wall-clock times) cannot end the wait.
* **Duplicates.** An action with the same (request, item, type) as one already counted is
  dropped and counted: its first occurrence decides whether the label is joined, corrected
  or an orphan, in the window, in the orphan wait, and after the window or after being
  dead-lettered (for ``kv_ttl_ms``, up to ``max_dedup_entries`` keys). A duplicate
  impression is dropped while the first one is still in the window (the dedup stage
  upstream handles longer horizons).
* **Negative down-sampling.** With ``negative_sample_rate`` r < 1 a negative is kept iff a
  hash of its join key falls below r (deterministic, so a replay keeps the same ones);
  positives are always kept. Every sample emitted carries ``sample_rate = r``, positives
  and corrections included (``schemas/contracts.py`` SAMPLE_RATE_CONTRACT: the trainer's
  correction must not depend on the label). A dropped negative still goes to the KV
  fallback (a late positive still corrects it).
* **Action types.** An action whose type is not declared (``action_types``: the
  ``validation.action_types`` list, ``schemas/contracts.py`` ACTION_TYPES by default) is
  dead-lettered and counted (``unknown_action_types``), with one warning per type: it
  would otherwise become a label no model head reads, i.e. a silent negative.
* **Action-stream stall.** When impressions keep flowing but actions stop
  (``StallDetector``), policy ``hold`` keeps closing windows only up to the newest action's
  event time (so an outage does not turn into fake negatives) and, once a window is
  ``max_hold_ms`` past its deadline, emits it with ``FLAG_ACTION_STALL``; when actions resume
  and catch up, held windows close normally with the labels that arrived. Policy ``flag``
  closes on time but flags samples emitted during the stall. ``off`` ignores stalls.
* ``advance(END_OF_TIME)`` (the end of a bounded input: Flink's final watermark,
  ``streaming.event_time``) closes every window.

State changes can be mirrored to a ``journal(key, bytes | None)`` callback (the Flink job
writes them to checkpointed keyed state) and rebuilt with ``restore``. A journal key is
``<part><join key>``, the part one of ``JournalPart`` (``W|`` window entry, ``P|`` actions
waiting for their impression, ``L|`` label types accounted for after the window, ``S|``
the lineage, with an empty join key); the keys are persisted in Flink state, so the parts'
strings never change.

Restore and the KV fallback
---------------------------
The KV fallback is on local disk, outside the checkpoint. After a restore from checkpoint
C it may hold rows the lost epoch wrote after C: impressions whose windows closed after C
and whose events the sources now replay. Such a row must not answer an action that is
replayed before its impression (its labels would make the action look like a duplicate
and the label would be lost). So every row carries its writer (a random id per core
incarnation) and the writer's sequence number, and the journal keeps the core's
*lineage*: for each earlier incarnation, the range of sequence numbers that made it into
the checkpoint. A row inside the lineage answers at once; any other row (a rolled-back
write, or one from another job that shared the directory) answers only after the action
waited ``orphan_wait_ms`` for its impression: if the impression is replayed meanwhile the
label joins it, otherwise the row is used as a normal late correction.

    core = JoinCore(JoinerConfig(window_ms=600_000))
    out = core.on_impression(imp, now_ms=wm)     # list of Sample | DeadLetter
    out += core.on_action(act, now_ms=wm)
    out += core.advance(now_ms=wm)               # closes windows whose deadline passed
"""

from __future__ import annotations

import logging
import os
import pickle
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from enum import StrEnum

from schemas import FLAG_ACTION_STALL, FLAG_EARLY, FLAG_LATE_CORRECTION, codec_for
from schemas.contracts import ACTION_TYPES
from schemas.peek import peek_impression_time
from schemas.records import Action, DeadLetter, Impression, Sample
from schemas.splice import sample_from_impression
from streaming.event_time import END_OF_TIME
from streaming.joiner.config import JoinerConfig
from streaming.joiner.hash_queue import HashQueue
from streaming.joiner.kv_fallback import KvFallback, KvRow
from streaming.joiner.metrics import JoinerMetrics
from streaming.joiner.stall_detector import StallDetector

log = logging.getLogger(__name__)

MAX_LINEAGE = 64  # earlier incarnations whose KV rows a restored core trusts at once
Output = Sample | DeadLetter | bytes  # bytes: a Sample message (encode_samples)
Journal = Callable[[str, bytes | None], None]
_warned_types: set[str] = set()  # undeclared action types already warned about (per process)


def join_key(request_id: str, item_id: int) -> str:
    return f"{request_id}|{item_id}"


class JournalPart(StrEnum):
    """The part of the core's state a journal entry belongs to: the prefix of its key.
    Persisted (Flink state, checkpoints): the values must stay these strings."""

    WINDOW = "W|"    # an impression waiting in the window
    PENDING = "P|"   # actions waiting for their impression
    LATE = "L|"      # label types accounted for after the window (late dedup)
    LINEAGE = "S|"   # the core's lineage (one entry, empty join key)

    def key(self, join_key: str = "") -> str:
        """The journal key of ``join_key`` in this part (a plain ``str``: str + str)."""
        return self + join_key


def split_journal_key(journal_key: str) -> tuple[JournalPart, str]:
    """(part, join key) of a journal key: the inverse of ``JournalPart.key``."""
    return JournalPart(journal_key[:2]), journal_key[2:]


class Placement(StrEnum):
    """Where an action's label went when attached to a waiting impression."""

    IN = "in"        # in the window (event time)
    AFTER = "after"  # later than the window: a correction when the window closes
    DUP = "dup"      # a duplicate of a label already counted: dropped


class _Entry:
    """An impression waiting in the window with the labels seen so far."""

    __slots__ = ("imp", "raw", "labels", "delays", "after", "sent")

    def __init__(self, imp: Impression, raw: bytes | None) -> None:
        self.imp = imp
        self.raw = raw
        self.labels: list[str] = []
        self.delays: list[int] = []
        self.after: list[tuple[str, int]] = []  # labels later than the window, by event time
        self.sent = False  # final sample already emitted (early policy)

    def nbytes(self) -> int:
        if self.raw is not None:
            return len(self.raw) + 64
        return 128 + 12 * len(self.imp.ids) + 4 * len(self.imp.dense)


class JoinCore:
    """The joiner's logic: ``on_impression`` / ``on_action`` / ``advance`` -> outputs."""

    def __init__(self, cfg: JoinerConfig, kv: KvFallback | None = None, *,
                 stall: StallDetector | None = None, metrics: JoinerMetrics | None = None,
                 journal: Journal | None = None, actions_topic: str = "actions",
                 writer: bytes | None = None,
                 action_types: Collection[str] | None = ACTION_TYPES,
                 encode_samples: bool = False) -> None:
        self.cfg = cfg
        # samples as Avro messages spliced from the impression's bytes (schemas/splice.py)
        # where the core holds them, instead of Sample records the caller encodes
        self.encode_samples = encode_samples
        self.action_types = None if action_types is None else frozenset(action_types)  # None: any
        self._own_kv = kv is None
        self.kv = KvFallback(cfg.kv_path, cfg.kv_ttl_ms) if kv is None else kv
        self.stall = stall or StallDetector(cfg.stall_after_ms, cfg.stall_min_impressions)
        self.metrics = metrics or JoinerMetrics()
        self.journal = journal
        self.actions_topic = actions_topic
        self.window: HashQueue[str, _Entry] = HashQueue(cfg.max_entries, cfg.max_bytes)
        self.pending: HashQueue[str, list[Action]] = HashQueue(cfg.max_entries, 0)
        self.late: HashQueue[str, tuple[str, ...]] = HashQueue(cfg.max_dedup_entries, 0)
        self._imp_codec = codec_for(Impression)
        self._next_purge = -END_OF_TIME
        self._keep_below = int(cfg.negative_sample_rate * (1 << 32))
        # KV rows this core may trust at once (see "Restore and the KV fallback")
        self.writer = writer or os.urandom(8)
        self.kv_seq = 0
        self.lineage: list[tuple[bytes, int]] = [(self.writer, 0)]
        self._lineage_journaled = False
        self._lineage_dirty = False  # kv_seq moved since the lineage was last journaled
        self._kv_rows: list[KvRow] = []  # closed this call, not written yet (_journal_lineage)

    # ---- inputs -------------------------------------------------------------------------

    def on_impression(self, imp: Impression, now_ms: int, raw: bytes | None = None) -> list[Output]:
        m = self.metrics
        if not imp.request_id or imp.event_time_ms <= 0:
            return [self._invalid("impressions", imp, now_ms, "impression without request_id "
                                  "or with event_time_ms <= 0")]
        m.impressions += 1
        self.stall.on_impression(imp.event_time_ms)
        key = join_key(imp.request_id, imp.item_id)
        if key in self.window or self._left_window(key, imp, now_ms):
            m.duplicate_impressions += 1
            return []
        out: list[Output] = []
        now = max(now_ms, imp.event_time_ms)
        entry = _Entry(imp, raw)
        waiting = self.pending.pop(key)
        if waiting:
            m.pending_actions -= len(waiting)
            self._write(JournalPart.PENDING.key(key), None)
            for act in waiting:
                self._attach(entry, act)
            if self.cfg.policy == "early" and entry.labels:  # none in the window: closes as usual
                self._final_to(key, entry, now, FLAG_EARLY, out)
        evicted = self.window.push(key, entry, imp.event_time_ms + self.cfg.window_ms,
                                   entry.nbytes())
        m.window_occupancy += 1
        self._write_entry(key, entry)
        flags = FLAG_ACTION_STALL if self.stall.stalled and self.cfg.stall_policy != "off" else 0
        for old_key, old in evicted:
            m.evicted += 1
            self._close(old_key, old, now, flags, out)
        self._journal_lineage()
        m.window_bytes = self.window.nbytes
        return out

    def on_action(self, act: Action, now_ms: int,
                  impressions_ms: int | None = None) -> list[Output]:
        """``impressions_ms``: the impression clock (see ``advance``); an action waiting for
        its impression waits until it passes max(clock now, the action's time) +
        ``orphan_wait_ms``."""
        m = self.metrics
        if not act.request_id or not act.action_type or act.event_time_ms <= 0:
            return [self._invalid(self.actions_topic, act, now_ms, "action without request_id "
                                  "or action_type, or with event_time_ms <= 0")]
        if self.action_types is not None and act.action_type not in self.action_types:
            return [self._unknown_type(act, now_ms)]
        m.actions += 1
        self.stall.on_action(act.event_time_ms)
        key = join_key(act.request_id, act.item_id)
        now = max(now_ms, act.event_time_ms)
        entry = self.window.get(key)
        if entry is not None:
            return self._in_window(key, entry, act, now)
        rec = self.kv.get(key, now)
        if rec is not None:
            if self._trusted(rec):
                return self._late(key, rec, act, now)
            m.kv_unconfirmed += 1  # wait for a replay of the impression first (_orphans)
        if act.action_type in (self.late.get(key) or ()):
            m.duplicate_actions += 1  # of an action already dead-lettered as an orphan
            return []
        waiting = self.pending.get(key)
        if waiting is not None:
            if any(a.action_type == act.action_type for a in waiting):
                m.duplicate_actions += 1
                return []
            waiting.append(act)
            m.pending_actions += 1
            self._write(JournalPart.PENDING.key(key),
                        pickle.dumps((self.pending.deadline(key), waiting), protocol=5))
            return []
        out: list[Output] = []
        since = max(self._impression_clock(now_ms, impressions_ms), act.event_time_ms)
        evicted = self.pending.push(key, [act], since + self.cfg.orphan_wait_ms)
        m.pending_actions += 1
        if key in self.pending:
            self._write(JournalPart.PENDING.key(key),
                        pickle.dumps((self.pending.deadline(key), [act]), protocol=5))
        for old_key, acts in evicted:
            self._orphans(old_key, acts, now, out, evicted=True)
        return out

    def advance(self, now_ms: int, impressions_ms: int | None = None) -> list[Output]:
        """Event time moved to ``now_ms`` (the watermark): close due windows, turn expired
        action waits into orphans, forget old late-label dedup entries, purge the KV.

        ``impressions_ms``: how far the impression input is known to be complete (the
        Flink job's ``ImpressionClock``); the action waits are measured by it (capped at
        ``now_ms``), so an action never gives up on its impression because the *action*
        input (or its record timestamps) moved the watermark on. None: ``now_ms``."""
        out: list[Output] = []
        m, cfg, stall = self.metrics, self.cfg, self.stall
        m.stalled = int(stall.stalled)
        m.stall_episodes = stall.episodes
        if now_ms >= END_OF_TIME:
            flags = FLAG_ACTION_STALL if stall.stalled and cfg.stall_policy != "off" else 0
            for key, entry in self.window.expire(now_ms):
                self._close(key, entry, now_ms, flags, out)
        elif stall.stalled and cfg.stall_policy == "hold":
            held = now_ms if stall.action_time_ms is None else min(now_ms, stall.action_time_ms)
            for key, entry in self.window.expire(held):
                self._close(key, entry, now_ms, 0, out)
            for key, entry in self.window.expire(now_ms - cfg.max_hold_ms):
                self._close(key, entry, now_ms, FLAG_ACTION_STALL, out)
        else:
            flags = FLAG_ACTION_STALL if stall.stalled and cfg.stall_policy == "flag" else 0
            for key, entry in self.window.expire(now_ms):
                self._close(key, entry, now_ms, flags, out)
        self._journal_lineage()
        for key, acts in self.pending.expire(self._impression_clock(now_ms, impressions_ms)):
            self._orphans(key, acts, now_ms, out)
        for key, _ in self.late.expire(now_ms):
            self._write(JournalPart.LATE.key(key), None)
        if self._next_purge <= now_ms < END_OF_TIME:  # the end of a bounded input keeps the KV
            self.kv.purge(now_ms)
            self._next_purge = now_ms + cfg.kv_purge_every_ms
        m.window_bytes = self.window.nbytes
        m.kv_size = self.kv.size
        return out

    def next_deadline(self) -> int | None:
        """The earliest event time at which ``advance`` has work (for timers)."""
        ds = [d for d in (self.window.head_deadline(), self.pending.head_deadline(),
                          self.late.head_deadline()) if d is not None]
        return min(ds) if ds else None

    # ---- snapshot / restore (the journal's content) --------------------------------------

    def snapshot(self) -> Iterator[tuple[str, bytes]]:
        """Every piece of state as (journal key, bytes); ``restore`` takes it back."""
        for key, entry, deadline in self.window.items():
            yield JournalPart.WINDOW.key(key), self._entry_bytes(entry, deadline)
        for key, acts, deadline in self.pending.items():
            yield JournalPart.PENDING.key(key), pickle.dumps((deadline, acts), protocol=5)
        for key, labels, deadline in self.late.items():
            yield JournalPart.LATE.key(key), pickle.dumps((deadline, labels), protocol=5)
        if self._lineage_journaled:
            yield JournalPart.LINEAGE.key(), self._lineage_bytes()

    def restore(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Rebuild the window, the action waits and the late dedup from journal items
        (in any order). The core must be empty."""
        assert not (self.window or self.pending or self.late), "restore into an empty core"
        rows: dict[JournalPart, list] = {part: [] for part in JournalPart}
        for jkey, data in items:
            part, key = split_journal_key(jkey)
            rows[part].append((key, pickle.loads(data)))
        if rows[JournalPart.LINEAGE]:
            lineage, self.kv_seq = rows[JournalPart.LINEAGE][0][1]
            # the newest earlier incarnations; rows of older ones just take the slow path
            self.lineage = list(lineage)[-(MAX_LINEAGE - 1):] + [(self.writer, self.kv_seq)]
            self._lineage_journaled = True
            self._write(JournalPart.LINEAGE.key(), self._lineage_bytes())
        # unbounded while refilling: a checkpoint taken under a larger bound (or another
        # parallelism) loses nothing here; the next push evicts down to the bound through
        # the usual paths (final sample + KV, orphan check, dedup entry dropped)
        bounds = [(q, q.max_entries, q.max_bytes) for q in (self.window, self.pending, self.late)]
        for q, _, _ in bounds:
            q.max_entries = q.max_bytes = 0
        for key, (deadline, raw, labels, delays, after, sent) in sorted(
                rows[JournalPart.WINDOW], key=lambda r: r[1][0]):
            entry = _Entry(self._imp_codec.decode(raw), raw)
            entry.labels, entry.delays, entry.after = list(labels), list(delays), list(after)
            entry.sent = sent
            self.window.push(key, entry, deadline, entry.nbytes())
        for key, (deadline, acts) in sorted(rows[JournalPart.PENDING], key=lambda r: r[1][0]):
            self.pending.push(key, acts, deadline)
        for key, (deadline, labels) in sorted(rows[JournalPart.LATE], key=lambda r: r[1][0]):
            self.late.push(key, labels, deadline)
        for q, max_entries, max_bytes in bounds:
            q.max_entries, q.max_bytes = max_entries, max_bytes
        self.metrics.window_occupancy += len(self.window)
        self.metrics.pending_actions += sum(len(a) for _, a, _ in self.pending.items())
        log.info("joiner restored window=%d pending=%d late=%d", len(self.window),
                 len(self.pending), len(self.late))

    def close(self) -> None:
        if self._own_kv:
            self.kv.close()

    # ---- internals ----------------------------------------------------------------------

    @staticmethod
    def _impression_clock(now_ms: int, impressions_ms: int | None) -> int:
        """The clock of the action waits: the impression clock, never ahead of the
        watermark; the end of the input (``END_OF_TIME``) ends every wait."""
        if impressions_ms is None or now_ms >= END_OF_TIME:
            return now_ms
        return min(now_ms, impressions_ms)

    def _orphaned(self, entry: _Entry, action_type: str) -> bool:
        """The type was already dead-lettered as an orphan before this impression arrived."""
        if not self.late:
            return False
        seen = self.late.get(join_key(entry.imp.request_id, entry.imp.item_id))
        return seen is not None and action_type in seen

    def _in_window(self, key: str, entry: _Entry, act: Action, now: int) -> list[Output]:
        where = self._attach(entry, act)
        if where is Placement.DUP:
            return []
        self._write_entry(key, entry)
        if where is Placement.AFTER or self.cfg.policy != "early":
            return []
        if not entry.sent:
            out: list[Output] = []
            self._final_to(key, entry, now, FLAG_EARLY, out)
            self._write_entry(key, entry)  # the restored entry must know it was sent
            return out
        delay = entry.delays[-1]
        return [self._sample(entry.imp, now, [act.action_type], [delay], FLAG_LATE_CORRECTION,
                             entry.raw)]

    def _late(self, key: str, rec, act: Action, now: int, row_labels: bool = True) -> list[Output]:
        """A correction from a KV row; ``row_labels=False`` ignores the labels the row says
        were sent (the row may come from a rolled-back epoch whose sample was never
        delivered: a possible duplicate label is preferred to a lost one)."""
        seen = self.late.get(key) or ()
        if (row_labels and act.action_type in rec.labels) or act.action_type in seen:
            self.metrics.duplicate_actions += 1
            return []
        labels = [act.action_type]
        self._remember(key, (act.action_type,), rec.expire_ms)
        self.metrics.late_corrections += 1
        if self.encode_samples:  # spliced from the row's bytes: no decode for its event time
            imp_time = peek_impression_time(rec.impression)
            delay = max(0, act.event_time_ms - imp_time)
            spliced = sample_from_impression(rec.impression, now, labels, [delay], 1.0,
                                             self.cfg.negative_sample_rate, FLAG_LATE_CORRECTION)
            if spliced is not None:
                self.metrics.label_wait_ms.append(now - imp_time - delay)
                return [spliced]
        imp = self._imp_codec.decode(rec.impression)
        delay = max(0, act.event_time_ms - imp.event_time_ms)
        return [self._sample(imp, now, labels, [delay], FLAG_LATE_CORRECTION, rec.impression)]

    def _remember(self, key: str, types: tuple[str, ...], deadline: int) -> None:
        """Label types accounted for after the window (late corrections, orphans): later
        duplicates of them are dropped until ``deadline``."""
        seen = self.late.pop(key)
        if seen:
            types = seen + tuple(t for t in types if t not in seen)
        for old_key, _ in self.late.push(key, types, deadline):
            self._write(JournalPart.LATE.key(old_key), None)
        self._write(JournalPart.LATE.key(key),
                    pickle.dumps((self.late.deadline(key), types), protocol=5))

    def _attach(self, entry: _Entry, act: Action) -> Placement:
        """Add a label to a waiting impression: ``IN`` its window, ``AFTER`` it (event time:
        the action is later than the window, whatever order they were processed in; it comes
        out as a correction when the window closes), or ``DUP``."""
        kind = act.action_type
        if (kind in entry.labels or any(k == kind for k, _ in entry.after)
                or self._orphaned(entry, kind)):
            self.metrics.duplicate_actions += 1
            return Placement.DUP
        delay = max(0, act.event_time_ms - entry.imp.event_time_ms)
        if delay > self.cfg.window_ms:
            entry.after.append((kind, delay))
            return Placement.AFTER
        entry.labels.append(kind)
        entry.delays.append(delay)
        self.metrics.joined_labels += 1
        return Placement.IN

    def _close(self, key: str, entry: _Entry, now: int, flags: int, out: list[Output]) -> None:
        """The impression leaves the window: final sample (unless already sent) + KV."""
        self.metrics.window_occupancy -= 1
        self._write(JournalPart.WINDOW.key(key), None)
        if not entry.sent:
            self._final_to(key, entry, now, flags, out)
        for kind, delay in entry.after:
            self.metrics.late_corrections += 1
            out.append(self._sample(entry.imp, now, [kind], [delay], FLAG_LATE_CORRECTION, entry.raw))
        raw = entry.raw if entry.raw is not None else self._imp_codec.encode(entry.imp)
        labels = tuple(entry.labels) + tuple(k for k, _ in entry.after)
        # written together at the end of the call (_journal_lineage): nothing in between
        # reads a row of a key that closes in it
        self._kv_rows.append(KvRow(key, raw, labels, entry.imp.event_time_ms + self.cfg.window_ms,
                                   self.writer, self.kv_seq))
        self.kv_seq += 1
        self._lineage_dirty = True  # journaled once per call that closes (_journal_lineage)

    def _journal_lineage(self) -> None:
        """The KV rows of the entries this call closed, in one write, then the lineage (with
        the next KV sequence number) into the journal: once per call that closed entries (a
        checkpoint falls between calls, never inside one)."""
        if self._kv_rows:
            rows, self._kv_rows = self._kv_rows, []
            self.kv.put_many(rows)
        if self._lineage_dirty and self.journal is not None:
            self._lineage_journaled = True
            self.journal(JournalPart.LINEAGE.key(), self._lineage_bytes())
        self._lineage_dirty = False

    def _left_window(self, key: str, imp: Impression, now_ms: int) -> bool:
        """A copy of this impression already left the window (its final sample is out): it
        is in the KV fallback, written by this core's checkpointed history. Looked up only
        where a copy could have left: its window's end has passed (a producer's retry that
        arrives later than the window; it made a second final sample, 1 in ~100k impressions
        of the generator's stream with a 10 s window, as the sources' interleaving fell) or
        the window has evicted entries to stay in its memory bound. A row of a rolled-back
        epoch does not count: after a restore the replayed impression is the original."""
        if now_ms < imp.event_time_ms + self.cfg.window_ms and not self.metrics.evicted:
            return False
        rec = self.kv.get(key, now_ms)
        return rec is not None and self._trusted(rec)

    def _trusted(self, rec) -> bool:
        """Whether a KV row was written by this core's checkpointed history (or by this
        incarnation). Without a journal nothing is ever rolled back: every row is."""
        if self.journal is None or rec.writer == self.writer:
            return True
        for i, (writer, first) in enumerate(self.lineage[:-1]):
            if writer == rec.writer:
                return first <= rec.seq < self.lineage[i + 1][1]
        return False

    def _lineage_bytes(self) -> bytes:
        return pickle.dumps((self.lineage, self.kv_seq), protocol=5)

    def _final_to(self, key: str, entry: _Entry, now: int, flags: int, out: list[Output]) -> None:
        """Append the impression's final sample to ``out``, unless down-sampling drops it."""
        sample = self._final(key, entry, now, flags)
        if sample is not None:
            out.append(sample)

    def _final(self, key: str, entry: _Entry, now: int, flags: int) -> Sample | bytes | None:
        m = self.metrics
        entry.sent = True
        m.final_samples += 1
        if flags & FLAG_ACTION_STALL:
            m.stall_flagged += 1
        if flags & FLAG_EARLY:
            m.early_samples += 1
        if entry.labels:
            m.positive_samples += 1
        else:
            m.negative_samples += 1
            if self._keep_below < (1 << 32) and zlib.crc32(key.encode()) >= self._keep_below:
                m.dropped_negatives += 1
                return None
        return self._sample(entry.imp, now, list(entry.labels), list(entry.delays), flags,
                            entry.raw)

    def _sample(self, imp: Impression, now: int, labels: list[str], delays: list[int],
                flags: int, raw: bytes | None = None) -> Sample | bytes:
        """A sample of ``imp`` (``raw``: its message, if the core holds it); ``sample_rate``
        is the policy's rate whatever the labels (schemas/contracts.py SAMPLE_RATE_CONTRACT)."""
        waits = self.metrics.label_wait_ms
        for d in delays:
            waits.append(now - imp.event_time_ms - d)
        if self.encode_samples and raw is not None:
            spliced = sample_from_impression(raw, now, labels, delays, 1.0,
                                             self.cfg.negative_sample_rate, flags)
            if spliced is not None:
                return spliced
        return Sample(
            request_id=imp.request_id, user_id=imp.user_id, item_id=imp.item_id,
            event_time_ms=imp.event_time_ms, emit_time_ms=now, slots=imp.slots, ids=imp.ids,
            dense=imp.dense, label_types=labels, label_delays_ms=delays, weight=1.0,
            sample_rate=self.cfg.negative_sample_rate, flags=flags,
        )

    def _orphans(self, key: str, acts: list[Action], now: int, out: list[Output],
                 evicted: bool = False) -> None:
        """Actions whose wait for their impression ended (``evicted``: cut short by the
        memory bound): late corrections if an unconfirmed KV row holds the impression (see
        on_action), orphans otherwise."""
        self._write(JournalPart.PENDING.key(key), None)
        rec = self.kv.get(key, now)
        if rec is not None:
            # waited in full: the impression was not replayed, so the row stands; cut
            # short: the impression may still come, so its labels do not count
            trust = not evicted or self._trusted(rec)
            for act in acts:
                self.metrics.pending_actions -= 1
                out.extend(self._late(key, rec, act, now, row_labels=trust))
            return
        codec = codec_for(Action)
        self._remember(key, tuple(a.action_type for a in acts), now + self.kv.ttl_ms)
        for act in acts:
            self.metrics.pending_actions -= 1
            self.metrics.orphans += 1
            out.append(DeadLetter(
                stage="joiner", source_topic=self.actions_topic, time_ms=now,
                reason=(f"orphan action: no impression for request_id={act.request_id!r} "
                        f"item_id={act.item_id} within orphan_wait_ms="
                        f"{self.cfg.orphan_wait_ms} nor in the KV fallback"),
                raw=codec.encode(act)))

    def _unknown_type(self, act: Action, now: int) -> DeadLetter:
        """An action of an undeclared type: counted, warned about once per type, dead-lettered."""
        self.metrics.unknown_action_types += 1
        known = ", ".join(sorted(self.action_types or ()))
        if act.action_type not in _warned_types:
            _warned_types.add(act.action_type)
            log.warning("joiner: action type %r is not declared (validation.action_types: %s); "
                        "its actions go to the dead-letter topic (counted: unknown_action_types). "
                        "Declare it there (and in model.heads) or fix the producer",
                        act.action_type, known)
        return DeadLetter(stage="joiner", source_topic=self.actions_topic, time_ms=now,
                          reason=(f"unknown action_type {act.action_type!r} (declared: {known}; "
                                  "validation.action_types)"),
                          raw=codec_for(Action).encode(act))

    def _invalid(self, topic: str, rec: Impression | Action, now: int, reason: str) -> DeadLetter:
        self.metrics.invalid += 1
        raw = (codec_for(Impression).encode(rec) if isinstance(rec, Impression)
               else codec_for(Action).encode(rec))
        return DeadLetter(stage="joiner", source_topic=topic, reason=f"invalid: {reason}",
                          time_ms=now, raw=raw)

    def _write(self, jkey: str, data: bytes | None) -> None:
        if self.journal is not None:
            self.journal(jkey, data)

    def _write_entry(self, key: str, entry: _Entry) -> None:
        if self.journal is not None:
            self.journal(JournalPart.WINDOW.key(key),
                         self._entry_bytes(entry, self.window.deadline(key)))

    def _entry_bytes(self, entry: _Entry, deadline: int | None) -> bytes:
        if entry.raw is None:
            entry.raw = self._imp_codec.encode(entry.imp)
        return pickle.dumps((deadline, entry.raw, entry.labels, entry.delays, entry.after,
                             entry.sent), protocol=5)
