import dataclasses
import typing

import pytest

from schemas.codec import AVRO_DIR, load_schema
from schemas.records import SCHEMA_FILES

AVRO_TO_PY = {"int": int, "long": int, "float": float, "double": float, "string": str,
              "bytes": bytes, "boolean": bool}


def _py_type(avro_type):
    if isinstance(avro_type, dict) and avro_type["type"] == "array":
        item_type = AVRO_TO_PY[avro_type["items"]]
        return list[item_type]
    return AVRO_TO_PY[avro_type]


@pytest.mark.parametrize("record_type", list(SCHEMA_FILES), ids=lambda t: t.__name__)
def test_records_agree_with_their_avro_schema(record_type):
    schema = load_schema(AVRO_DIR / f"{SCHEMA_FILES[record_type]}.avsc")
    assert schema["name"].endswith(record_type.__name__)
    avro_fields = {f["name"]: f for f in schema["fields"]}
    py_fields = {f.name: f for f in dataclasses.fields(record_type)}
    assert set(py_fields) == set(avro_fields)
    hints = typing.get_type_hints(record_type)
    for name, f in avro_fields.items():
        assert hints[name] == _py_type(f["type"]), name
        py = py_fields[name]
        has_py_default = py.default is not dataclasses.MISSING or py.default_factory is not dataclasses.MISSING
        assert has_py_default == ("default" in f), f"{name}: default in record and schema must agree"
        if py.default is not dataclasses.MISSING:
            expected = f["default"].encode() if isinstance(f["default"], str) and hints[name] is bytes else f["default"]
            assert py.default == expected, name
        elif py.default_factory is not dataclasses.MISSING:
            assert py.default_factory() == f["default"], name
