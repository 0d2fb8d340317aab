"""KV fallback: impressions that left the waiting window, on local disk (rocksdict), with
an event-time TTL, so that a label arriving hours later still finds its features.

Layout (raw bytes, one RocksDB): ``d<join key>`` -> record, and an expiry index
``e<expire_ms: 8 bytes big-endian><join key>`` -> ``b""``. The TTL is event time, passed in
(``purge(now_ms)`` deletes a range of the index in order, O(expired)); a ``get`` of an
expired record that was not purged yet also misses. A record holds the impression's Avro
bytes, the label types its final sample carried (so a duplicate late action is dropped),
and who wrote it: the writer (one id per incarnation of a join core) and that writer's
sequence number. The store is not part of Flink's checkpoint, so after a restore it can
hold rows written by the rolled-back epoch; the core uses (writer, seq) to tell those
from rows of its checkpointed history (``JoinCore``, "Restore and the KV fallback").
A record is written when an impression leaves the window; a replay overwrites it.

>>> import tempfile
>>> kv = KvFallback(tempfile.mkdtemp(), ttl_ms=86_400_000)
>>> kv.put("r1|7", b"<impression bytes>", labels=("click",), event_time_ms=1000)
>>> kv.get("r1|7", now_ms=3_600_000).labels          # a KvRecord ...
('click',)
>>> kv.get("r1|7", now_ms=90_000_000) is None        # ... or None once past its TTL
True
>>> kv.purge(90_000_000)                             # rows removed
1
>>> kv.close()
"""

from __future__ import annotations

import atexit
import logging
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<q8sqH")  # expire_ms, writer, seq, length of the labels blob
_EXP = struct.Struct(">q")
_SEP = "\x1f"
_VERSION_KEY, _VERSION = b"version", b"2"  # 2: records carry writer and seq


class KvFallbackError(RuntimeError):
    """The fallback store cannot be opened or written."""


# Stores opened off the main thread and not closed yet. In PyFlink's process mode on a local
# MiniCluster the Python functions run in threads of the client process (Beam's loopback
# worker), and their teardown (``close``) can still be running when the client's main
# thread returns: ``Rdict.close`` releases the GIL, the interpreter starts finalizing, and
# the closing thread, told to exit when it takes the GIL back inside rocksdict's (Rust)
# frames, aborted the process (SIGABRT after every output record was written, 100k-event
# bounded joiner runs). At exit the main thread waits for them (bounded).
_OFF_MAIN: set[KvFallback] = set()
_OFF_MAIN_LOCK = threading.Condition()
EXIT_WAIT_S = 60.0


def _wait_for_closes(timeout_s: float | None = None) -> bool:
    """Wait until every store opened off the main thread is closed, ``timeout_s`` at most
    (``EXIT_WAIT_S``); whether they all were."""
    deadline = time.monotonic() + (EXIT_WAIT_S if timeout_s is None else timeout_s)
    with _OFF_MAIN_LOCK:
        while _OFF_MAIN:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("exiting with %d joiner KV store(s) still open: %s", len(_OFF_MAIN),
                            ", ".join(str(kv.path) for kv in _OFF_MAIN))
                return False
            _OFF_MAIN_LOCK.wait(min(left, 0.5))
    return True


atexit.register(_wait_for_closes)


@dataclass(frozen=True, slots=True)
class KvRecord:
    impression: bytes
    labels: tuple[str, ...]
    expire_ms: int
    writer: bytes = bytes(8)  # the core incarnation that wrote it
    seq: int = -1             # that writer's sequence number of the write


class KvRow(NamedTuple):
    """One ``put``: the impression's join key, its bytes, the label types its final sample
    carried, its event time (the TTL counts from it) and who wrote it (writer, seq)."""

    key: str
    impression: bytes
    labels: tuple[str, ...]
    event_time_ms: int
    writer: bytes = bytes(8)
    seq: int = -1


def _encode(rec: KvRecord) -> bytes:
    blob = _SEP.join(rec.labels).encode()
    return _HEAD.pack(rec.expire_ms, rec.writer, rec.seq, len(blob)) + blob + rec.impression


def _decode(data: bytes) -> KvRecord:
    expire, writer, seq, n = _HEAD.unpack_from(data)
    start = _HEAD.size
    blob = data[start:start + n].decode()
    return KvRecord(bytes(data[start + n:]), tuple(blob.split(_SEP)) if blob else (), expire,
                    writer, seq)


class KvFallback:
    """rocksdict store of impressions that left the window; event-time TTL."""

    def __init__(self, path: Path | str | None, ttl_ms: int) -> None:
        self._tmp = path in (None, "")
        self.path = Path(path or tempfile.mkdtemp(prefix="joiner-kv-"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_ms = ttl_ms
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db: Rdict | None  # None once closed
        try:
            self._db = Rdict(str(self.path), opts)
        except Exception as exc:  # rocksdict raises plain Exception on lock/IO errors
            raise KvFallbackError(
                f"cannot open the joiner KV fallback at {self.path} ({exc}); another joiner "
                "may hold it: give each joiner instance its own joiner.kv_path") from exc
        self.size = self._count()
        version = self._db.get(_VERSION_KEY)
        if version is None and self.size:
            version = b"1"  # rows without a version key: the first layout
        if version is not None and version != _VERSION:
            self._db.close()
            raise KvFallbackError(
                f"the joiner KV fallback at {self.path} has layout {version.decode()!r}, this "
                f"version reads {_VERSION.decode()!r}: move it away (late labels of the "
                "impressions in it are then orphans) or run the version that wrote it")
        self._db[_VERSION_KEY] = _VERSION
        if threading.current_thread() is not threading.main_thread():
            with _OFF_MAIN_LOCK:
                _OFF_MAIN.add(self)
        self.purged = 0
        # every expiry key below this was purged: a purge seeks here, not to the first "e"
        # key, so it does not step over the tombstones of all earlier purges again (RocksDB
        # keeps them until compaction: with a purge per watermark step, as on a long
        # event-time span, that scan grew with every purge)
        self._purged_below = 0

    def _open_db(self) -> Rdict:
        if self._db is None:
            raise KvFallbackError(f"the joiner KV fallback at {self.path} is closed")
        return self._db

    def _keys_from(self, start: bytes) -> Iterator[bytes]:
        # raw mode: keys are bytes (rocksdict's stubs type keys of every mode as one union)
        return cast("Iterator[bytes]", self._open_db().keys(from_key=start))

    def _count(self) -> int:
        n = 0
        for key in self._keys_from(b"d"):
            if key[:1] != b"d":
                break
            n += 1
        return n

    def put(self, key: str, impression: bytes, labels: tuple[str, ...], event_time_ms: int,
            writer: bytes = bytes(8), seq: int = -1) -> None:
        """Store (or overwrite) an impression that left the window."""
        self.put_many([KvRow(key, impression, tuple(labels), event_time_ms, writer, seq)])

    def put_many(self, rows: Sequence[KvRow]) -> None:
        """``put`` each row, in order, in one RocksDB write: the rows of a watermark step
        share one write-ahead-log append (a write per row cost ~9 us, one per 100 rows
        ~4.5 us a row) and one lookup of the rows they overwrite."""
        if not rows:
            return
        db = self._open_db()
        keys = [row.key.encode() for row in rows]
        olds = cast("list[bytes | None]", db.get([b"d" + kb for kb in keys])) if len(keys) > 1 \
            else [db.get(b"d" + keys[0])]
        batch = WriteBatch(raw_mode=True)
        written: dict[bytes, int] = {}  # key -> expiry written earlier in this batch
        lowest = self._purged_below
        for row, kb, old in zip(rows, keys, olds, strict=True):
            expire = row.event_time_ms + self.ttl_ms
            old_exp = written.get(kb)
            if old_exp is None and old is not None:
                old_exp = _HEAD.unpack_from(old)[0]
            if old_exp is None:
                self.size += 1
            elif old_exp != expire:
                batch.delete(b"e" + _EXP.pack(old_exp) + kb)
            written[kb] = expire
            batch.put(b"d" + kb, _encode(KvRecord(row.impression, row.labels, expire, row.writer,
                                                  row.seq)))
            batch.put(b"e" + _EXP.pack(expire) + kb, b"")
            lowest = min(lowest, expire)
        db.write(batch)
        self._purged_below = lowest  # an already expired record

    def get(self, key: str, now_ms: int) -> KvRecord | None:
        data = self._open_db().get(b"d" + key.encode())
        if data is None:
            return None
        rec = _decode(data)
        return None if rec.expire_ms <= now_ms else rec

    def purge(self, now_ms: int) -> int:
        """Delete every record whose TTL ran out by ``now_ms``; returns how many."""
        end = b"e" + _EXP.pack(now_ms + 1)
        batch = WriteBatch(raw_mode=True)
        n = 0
        for ikey in self._keys_from(b"e" + _EXP.pack(max(self._purged_below, 0))):
            if ikey >= end:
                break
            batch.delete(ikey)
            batch.delete(b"d" + ikey[1 + _EXP.size:])
            n += 1
        if n:
            self._open_db().write(batch)
            self.size -= n
            self.purged += n
        self._purged_below = max(self._purged_below, now_ms + 1)
        return n

    def close(self) -> None:
        if self._db is None:
            return
        self._db.close()
        self._db = None
        if self._tmp:
            shutil.rmtree(self.path, ignore_errors=True)
        with _OFF_MAIN_LOCK:
            _OFF_MAIN.discard(self)
            _OFF_MAIN_LOCK.notify_all()
