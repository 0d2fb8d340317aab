"""One codec per record type: Avro single-object encoding on top of fastavro's schemaless path.

Wire format (the Avro spec's "single object encoding"): two marker bytes ``C3 01``, the
8-byte little-endian CRC-64-AVRO fingerprint of the writer schema, then the schemaless
Avro body. The fingerprint lets a reader that knows several versions of a schema pick the
writer schema and resolve it to its own (add fields with defaults, and old data still
reads), and any Avro library (Java's ``BinaryMessageDecoder`` included) can read it.

>>> from schemas import Sample
>>> codec = codec_for(Sample)
>>> sample = Sample("r1", user_id=7, item_id=42, event_time_ms=1_700_000_000_000,
...                 emit_time_ms=1_700_000_000_500, label_types=["click"])
>>> data = codec.encode(sample)
>>> data[:2].hex(), codec.decode(data) == sample    # decode raises DecodeError on bad bytes
('c301', True)
>>> codec.decode_or_dead_letter(b"xx", stage="joiner", topic="samples", now_ms=1).reason
'undecodable: not an Avro single-object message (missing C3 01 marker)'

Older versions of a schema live in ``schemas/avro/history/<stem>.v<N>.avsc``; they are
registered as readable writer schemas at import.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import fastavro

from schemas.errors import DecodeError, SchemaError
from schemas.records import SCHEMA_FILES, DeadLetter

AVRO_DIR = Path(__file__).parent / "avro"
MAGIC = b"\xc3\x01"
HEADER_LEN = 10

R = TypeVar("R")


def load_schema(path: Path) -> dict[str, Any]:
    """Parse an .avsc file (a record schema) into fastavro's parsed form."""
    try:
        parsed = fastavro.parse_schema(json.loads(path.read_text()))
    except (ValueError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(f"cannot parse Avro schema {path}: {exc}") from exc
    if not isinstance(parsed, dict):
        raise SchemaError(f"Avro schema {path} is not a record schema: {parsed!r}")
    return parsed


def schema_fingerprint(parsed: dict[str, Any]) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint used in the single-object header.
    fastavro (like Java's ``SchemaNormalization.parsingFingerprint``) already gives those 8
    bytes in header order; Apache Avro's Java ``BinaryMessageDecoder`` reads exactly them
    (tests/sync/test_delta_reader_java.py)."""
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


def legacy_fingerprint(fp: bytes) -> bytes:
    """The header this codec wrote before it followed the spec (the 8 bytes reversed);
    still read, so data already in topics and state stays decodable."""
    return fp[::-1]


class Codec(Generic[R]):
    """Encodes and decodes one record type; knows every version of its schema."""

    def __init__(self, record_type: type[R], schema_path: Path, history: Sequence[Path] = ()):
        self.record_type = record_type
        self.schema = load_schema(schema_path)
        self.fingerprint = schema_fingerprint(self.schema)
        self._header = MAGIC + self.fingerprint
        self._names = [f["name"] for f in self.schema["fields"]]
        # fingerprint -> writer schema (None for our own schema: no resolution needed)
        self._writers: dict[bytes, dict[str, Any] | None] = {self.fingerprint: None,
                                                             legacy_fingerprint(self.fingerprint): None}
        for path in history:
            self.register_writer(load_schema(path))

    @property
    def own_headers(self) -> frozenset[bytes]:
        """The 10-byte headers of messages written with this very schema (no resolution
        needed): what a bulk decoder may read with ``self.schema`` alone
        (trainer/columnar.py decodes a whole fetch of them at once)."""
        return frozenset({MAGIC + self.fingerprint, MAGIC + legacy_fingerprint(self.fingerprint)})

    @property
    def known_headers(self) -> frozenset[bytes]:
        """The 10-byte headers of every writer schema this codec reads (its own and the
        registered older versions); a message with any other header is undecodable."""
        return frozenset(MAGIC + fp for fp in self._writers)

    def register_writer(self, parsed: dict[str, Any]) -> None:
        """Accept data written with another version of this schema."""
        fp = schema_fingerprint(parsed)
        if fp != self.fingerprint:
            self._writers[fp] = self._writers[legacy_fingerprint(fp)] = parsed

    def encode(self, record: R) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, {n: getattr(record, n) for n in self._names})
        return buf.getvalue()

    def encode_dict(self, datum: dict[str, Any]) -> bytes:
        """Encode a plain dict (used by tests that write with another schema version)."""
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, datum)
        return buf.getvalue()

    def decode(self, data: bytes) -> R:
        """Decode one message; raises DecodeError with a reason a person can act on."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not an Avro single-object message (missing C3 01 marker)")
        fp = bytes(data[2:HEADER_LEN])
        if fp not in self._writers:
            raise DecodeError(
                f"unknown writer schema fingerprint {fp.hex()} for {self.record_type.__name__}"
            )
        writer = self._writers[fp]
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if writer is None:
                datum = fastavro.schemaless_reader(buf, self.schema, None)
            else:
                datum = fastavro.schemaless_reader(buf, writer, self.schema)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
            raise DecodeError(f"corrupt {self.record_type.__name__} body: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} trailing bytes after a {self.record_type.__name__} body"
            )
        if not isinstance(datum, dict):  # a record schema always reads a dict
            raise DecodeError(f"{self.record_type.__name__} body is not a record: {type(datum).__name__}")
        return self.record_type(**datum)

    def decode_or_dead_letter(
        self,
        data: bytes,
        *,
        stage: str,
        topic: str,
        now_ms: int,
        partition: int = -1,
        offset: int = -1,
    ) -> R | DeadLetter:
        """Decode, or return a DeadLetter carrying the raw bytes and the reason. Never raises."""
        try:
            return self.decode(data)
        except DecodeError as exc:
            raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else repr(data).encode()
            return DeadLetter(
                stage=stage, source_topic=topic, reason=f"undecodable: {exc}", time_ms=now_ms,
                raw=raw, partition=partition, offset=offset,
            )


@cache
def codec_for(record_type: type[R]) -> Codec[R]:
    """The process-wide codec of a record type (schemas are parsed once)."""
    try:
        stem = SCHEMA_FILES[record_type]
    except KeyError:
        raise SchemaError(f"{record_type!r} has no Avro schema in schemas/avro/") from None
    history = sorted((AVRO_DIR / "history").glob(f"{stem}.v*.avsc"))
    return Codec(record_type, AVRO_DIR / f"{stem}.avsc", history)
