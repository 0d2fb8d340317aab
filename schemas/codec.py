"""One codec per record type: Avro single-object encoding on top of fastavro's schemaless path.

Wire format (the Avro spec's "single object encoding"): two marker bytes ``C3 01``, the
8-byte little-endian CRC-64-AVRO fingerprint of the writer schema, then the schemaless
Avro body. The fingerprint lets a reader that knows several versions of a schema pick the
writer schema and resolve it to its own (add fields with defaults, and old data still
reads), and any Avro library (Java's ``BinaryMessageDecoder`` included) can read it.

    codec = codec_for(Sample)
    data = codec.encode(sample)
    sample = codec.decode(data)                 # raises DecodeError on bad bytes
    rec = codec.decode_or_dead_letter(data, stage="joiner", topic="samples", now_ms=t)

Older versions of a schema live in ``schemas/avro/history/<stem>.v<N>.avsc``; they are
registered as readable writer schemas at import.
"""

from __future__ import annotations

import io
import json
import struct
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
    """Parse an .avsc file into fastavro's parsed form."""
    try:
        return fastavro.parse_schema(json.loads(path.read_text()))
    except (ValueError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(f"cannot parse Avro schema {path}: {exc}") from exc


def schema_fingerprint(parsed: dict[str, Any]) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint used in the single-object header."""
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    value = int(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"), 16)
    return struct.pack("<Q", value)


class Codec(Generic[R]):
    """Encodes and decodes one record type; knows every version of its schema."""

    def __init__(self, record_type: type[R], schema_path: Path, history: list[Path] = ()):
        self.record_type = record_type
        self.schema = load_schema(schema_path)
        self.fingerprint = schema_fingerprint(self.schema)
        self._header = MAGIC + self.fingerprint
        self._names = [f["name"] for f in self.schema["fields"]]
        # fingerprint -> writer schema (None for our own schema: no resolution needed)
        self._writers: dict[bytes, dict[str, Any] | None] = {self.fingerprint: None}
        for path in history:
            self.register_writer(load_schema(path))

    def register_writer(self, parsed: dict[str, Any]) -> None:
        """Accept data written with another version of this schema."""
        fp = schema_fingerprint(parsed)
        if fp != self.fingerprint:
            self._writers[fp] = parsed

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
