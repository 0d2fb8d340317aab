"""Errors of the schemas package."""


class SchemaError(Exception):
    """Root error of the schemas package: a schema or record is unusable."""


class DecodeError(SchemaError):
    """Bytes that are not a valid message of the expected record type."""
