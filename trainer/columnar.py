"""Columnar decoding of a whole fetch of Avro single-object messages, with numpy.

Decoding record by record (``Codec.decode``: fastavro, then a ``Sample``, then the batch
built from the samples' lists) cost ~40 us of CPU per sample, more than the training step
on it (bench/trainer_kafka.py). This reader decodes every message of a fetch at once, field
by field across all records, straight into columns (one numpy array per field, CSR for
arrays), which the batch builder turns into a ``Batch`` without a Python object per sample.

Fields are read in the order of the codec's own schema (the .avsc stays the source of
truth); the types it reads are ``int``, ``long``, ``float``, ``string`` and arrays of them,
written the way every Avro writer writes an array (one block, then the 0 that ends it).
A message it cannot read exactly — another writer schema (its fingerprint), a negative
block count, a second block, a varint over 10 bytes, a length past the message's end,
bytes left over at the end, invalid UTF-8 — is only *flagged* (``Columns.bad``): the caller
decodes it again one by one with ``Codec.decode``, which gives the record or the same dead
letter as before. So this is a fast path, never a second definition of what is valid.

Varints of an array are found without a loop: in a run of varints every byte whose high
bit is clear ends one, so the k-th item of an array starting at ``p`` ends at the k-th
such byte at or after ``p`` (``searchsorted`` into the positions of all of them).

    reader = ColumnarReader(codec_for(Sample))
    cols = reader.read([r.value for r in records])
    cols.scalars["user_id"]            # (n,) int64
    lengths, flat = cols.arrays["ids"]   # (n,) int64, (sum(lengths),) int64
    cols.strings["request_id"]         # list[str] ("" where bad)
    counts, strings = cols.string_arrays["label_types"]  # CSR of str
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.codec import HEADER_LEN, Codec

VARINT = "varint"  # int and long: zigzag varints (read as int64)
FLOAT = "float"
STRING = "string"
MAX_VARINT_BYTES = 10
PAD = 2 * MAX_VARINT_BYTES  # zero bytes after the buffer: gathers past the end stay in range
_K = np.arange(MAX_VARINT_BYTES, dtype=np.int64)
_SHIFT = (7 * _K).astype(np.uint64)
_F4 = np.arange(4, dtype=np.int64)
_KINDS = {"int": VARINT, "long": VARINT, "float": FLOAT, "string": STRING}


class UnsupportedSchema(ValueError):
    """The schema holds a type the columnar reader does not read (use ``Codec.decode``)."""


def _kind(avro_type: Any) -> tuple[str, str | None]:
    """(kind, item kind) of a field type: ("varint", None), ("array", "float"), ..."""
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        item = avro_type.get("items")
        if isinstance(item, str) and item in _KINDS:
            return "array", _KINDS[item]
    elif isinstance(avro_type, str) and avro_type in _KINDS:
        return _KINDS[avro_type], None
    raise UnsupportedSchema(f"field type {avro_type!r}: the columnar reader reads int, long, "
                            "float, string and arrays of them")


@dataclass
class Columns:
    """Every field of ``n`` messages; entries of ``bad`` messages hold garbage or defaults."""

    n: int
    bad: np.ndarray                                             # (n,) bool
    scalars: dict[str, np.ndarray] = field(default_factory=dict)  # (n,) int64 | float32
    strings: dict[str, list[str]] = field(default_factory=dict)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # lengths, flat
    string_arrays: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)


class _Fetch:
    """The messages of one fetch laid end to end, and the read state of each record."""

    def __init__(self, values: list, headers: frozenset[bytes]) -> None:
        n = len(values)
        ok = [isinstance(v, bytes) and v[:HEADER_LEN] in headers for v in values]
        parts = [v if good else b"" for v, good in zip(values, ok)]
        lens = np.fromiter(map(len, parts), dtype=np.int64, count=n)
        self.data = b"".join(parts) + bytes(PAD)
        self.buf = np.frombuffer(self.data, dtype=np.uint8)
        self.size = len(self.data) - PAD
        self.end = np.cumsum(lens)
        self.pos = self.end - lens + HEADER_LEN
        self.bad = ~np.fromiter(ok, dtype=bool, count=n)
        self.pos[self.bad] = self.end[self.bad]
        self._stops: np.ndarray | None = None

    @property
    def stops(self) -> np.ndarray:
        """Positions of every byte with the high bit clear (the last byte of a varint)."""
        if self._stops is None:
            self._stops = np.flatnonzero(self.buf < 0x80)
        return self._stops

    def flag(self, bad: np.ndarray) -> None:
        """Mark records bad and park them at their end (later reads stay in range)."""
        self.bad |= bad
        self.pos = np.where(self.bad, self.end, self.pos)

    def varints_at(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, byte lengths, bad) of one varint at each of ``starts``."""
        b = self.buf[np.minimum(starts, self.size)[:, None] + _K]  # (m, 10)
        stop = b < 0x80
        length = stop.argmax(1) + 1
        values, bad = self.varints_of(starts, length)
        return values, length, bad | ~stop.any(1)

    def varints_of(self, starts: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, bad) of varints of known byte ``length`` (1..10) at ``starts``: only as
        many bytes gathered as the longest one has."""
        w = min(int(length.max()) if len(length) else 1, MAX_VARINT_BYTES)
        b = self.buf[np.minimum(starts, self.size)[:, None] + _K[:w]] & 0x7F  # (m, w)
        b[_K[:w] >= length[:, None]] = 0
        u = (b.astype(np.uint64) << _SHIFT[:w]).sum(1, dtype=np.uint64)  # disjoint bits: OR
        values = (u >> np.uint64(1)).astype(np.int64) ^ -(u & np.uint64(1)).astype(np.int64)
        bad = length > MAX_VARINT_BYTES
        if w == MAX_VARINT_BYTES:  # the 10th byte holds bit 63 only
            bad |= (length == MAX_VARINT_BYTES) & (b[:, -1] > 1)
        return values, bad

    def varint(self) -> np.ndarray:
        values, length, bad = self.varints_at(self.pos)
        self.pos = self.pos + length
        self.flag(bad | (self.pos > self.end))
        return values

    def floats(self) -> np.ndarray:
        values = self.float_items(self.pos)
        self.pos = self.pos + 4
        self.flag(self.pos > self.end)
        return values

    def float_items(self, starts: np.ndarray) -> np.ndarray:
        raw = self.buf[np.minimum(starts, self.size)[:, None] + _F4]  # (m, 4)
        return np.ascontiguousarray(raw).view("<f4").reshape(-1)

    def string(self) -> list[str]:
        length = self.varint()
        self.flag((length < 0) | (length > self.end - self.pos))
        out = [""] * len(length)
        data, bad = self.data, self.bad
        starts, ends = self.pos.tolist(), (self.pos + length).tolist()
        for i in np.flatnonzero(~bad).tolist():
            try:
                out[i] = data[starts[i]:ends[i]].decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
        self.pos = self.pos + np.where(self.bad, 0, length)
        self.flag(self.bad)
        return out

    def block_count(self) -> np.ndarray:
        """The count of an array's one block: >= 0 and at most one item per byte left."""
        count = self.varint()
        self.flag((count < 0) | (count > self.end - self.pos))
        return np.where(self.bad, 0, count)

    def block_end(self, count: np.ndarray) -> None:
        """After the items of a non-empty array: the 0 that ends it (else another block
        follows, which the columnar reader leaves to ``Codec.decode``)."""
        nonempty = count > 0
        values, length, bad = self.varints_at(self.pos)
        self.pos = self.pos + np.where(nonempty, length, 0)
        self.flag(nonempty & (bad | (values != 0)) | (self.pos > self.end))

    def ragged(self, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(record of each item, index within its record, first item of each record)."""
        first = np.cumsum(count) - count
        rec = np.repeat(np.arange(len(count), dtype=np.int64), count)
        return rec, np.arange(len(rec), dtype=np.int64) - first[rec], first

    def varint_array(self) -> tuple[np.ndarray, np.ndarray]:
        count = self.block_count()
        rec, k, first = self.ragged(count)
        stops = self.stops
        ix = np.searchsorted(stops, self.pos)[rec] + k  # the k-th varint end at or after pos
        over = ix >= len(stops)
        ix = np.minimum(ix, len(stops) - 1)
        starts = np.where(k == 0, self.pos[rec], stops[ix - 1] + 1)
        values, bad = self.varints_of(starts, stops[ix] - starts + 1)
        bad_items = bad | over
        nonempty = count > 0
        last = stops[ix[(first + count - 1)[nonempty]]]
        self.pos = self.pos.copy()
        self.pos[nonempty] = last + 1
        self.flag(np.bincount(rec[bad_items], minlength=len(count)) > 0)
        self.flag(self.pos > self.end)
        self.block_end(count)
        return count, values  # the items of records flagged later stay in ``values``

    def float_array(self) -> tuple[np.ndarray, np.ndarray]:
        count = self.block_count()
        self.flag(4 * count > self.end - self.pos)
        count = np.where(self.bad, 0, count)
        rec, k, _ = self.ragged(count)
        values = self.float_items(self.pos[rec] + 4 * k)
        self.pos = self.pos + 4 * count
        self.block_end(count)
        return count, values

    def string_array(self) -> tuple[np.ndarray, list[str]]:
        """(count per record, the strings record after record). Item k of every record
        that has one at a time: arrays of strings here are short (the label types of a
        positive), so this loops a few times."""
        count = self.block_count()
        rec_all, _, first = self.ragged(count)
        flat = [""] * len(rec_all)
        data = self.data
        for k in range(int(count.max()) if len(count) else 0):
            rec = np.flatnonzero(count > k)
            length, n, bad = self.varints_at(self.pos[rec])
            start = self.pos[rec] + n
            bad |= (length < 0) | (length > self.end[rec] - start)
            self.pos[rec] = start + np.where(bad, 0, length)
            flagged = np.zeros(len(count), dtype=bool)
            flagged[rec[bad]] = True
            self.flag(flagged)
            for i, p, q, at in zip(rec.tolist(), start.tolist(), (start + length).tolist(),
                                   (first[rec] + k).tolist()):
                try:
                    flat[at] = data[p:q].decode("utf-8")
                except UnicodeDecodeError:
                    self.bad[i] = True
        self.flag(self.bad)
        self.block_end(count)
        return count, flat


class ColumnarReader:
    """Reads many messages of ``codec``'s own schema at once (see the module docstring).
    Raises ``UnsupportedSchema`` for a schema with other types."""

    def __init__(self, codec: Codec) -> None:
        self.codec, self.headers = codec, codec.own_headers
        self.fields = [(f["name"], *_kind(f["type"])) for f in codec.schema["fields"]]

    def read(self, values: list) -> Columns:
        fetch = _Fetch(values, self.headers)
        cols = Columns(n=len(values), bad=fetch.bad)
        for name, kind, item in self.fields:
            if kind == VARINT:
                cols.scalars[name] = fetch.varint()
            elif kind == FLOAT:
                cols.scalars[name] = fetch.floats()
            elif kind == STRING:
                cols.strings[name] = fetch.string()
            elif item == VARINT:
                cols.arrays[name] = fetch.varint_array()
            elif item == FLOAT:
                cols.arrays[name] = fetch.float_array()
            else:
                cols.string_arrays[name] = fetch.string_array()
        fetch.flag(fetch.pos != fetch.end)  # bytes left over: Codec.decode says how many
        cols.bad = fetch.bad
        return cols
