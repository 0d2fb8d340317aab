"""Loading component configs: one frozen dataclass per component, filled once at the edge.

Precedence, lowest first: the dataclass defaults, the ``[section]`` of a TOML file
(``--config file``), ``STREAMTRAIN_<SECTION>__<FIELD>`` environment variables, then
``--set section.field=value`` from the command line. Values from the environment and
``--set`` are strings, converted to the field's type; an unknown section field is an error
that names it (a typo must not silently fall back to a default).

    cfg = load(KafkaConfig, "kafka", path="streamtrain.toml", overrides=["kafka.port=19092"])
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ENV_PREFIX = "STREAMTRAIN_"


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range."""


def check(cond: bool, field: str, value: Any, allowed: str) -> None:
    """Raise ConfigError naming the field, the value and what is allowed (for __post_init__)."""
    if not cond:
        raise ConfigError(f"{field}={value!r} is invalid: {allowed}")


def read_file(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _convert(text: str, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if text.lower() in ("none", "null", "") and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={text!r} is invalid: expected true or false")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is invalid: expected {tp.__name__}") from None
    if origin in (tuple, list):
        item = typing.get_args(tp)[0] if typing.get_args(tp) else str
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return tuple(_convert(p, item, name) for p in parts)
    return text


def _coerce(value: Any, tp: Any, name: str) -> Any:
    if isinstance(value, str) and tp is not str:
        return _convert(value, tp, name)
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_overrides(overrides: list[str] | None) -> dict[str, dict[str, str]]:
    """``["kafka.port=19092"]`` -> ``{"kafka": {"port": "19092"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set {item!r} is invalid: expected section.field=value")
        out.setdefault(section, {})[field] = value
    return out


def load(
    cls: type[T],
    section: str,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    env: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults < file section < environment < overrides."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    file_data = data if data is not None else read_file(path)
    layers = [
        dict(file_data.get(section, {})),
        {k[len(f"{ENV_PREFIX}{section.upper()}__"):].lower(): v for k, v in env.items()
         if k.startswith(f"{ENV_PREFIX}{section.upper()}__")},
        parse_overrides(overrides).get(section, {}),
    ]
    for layer in layers:
        for key, value in layer.items():
            if key not in names:
                raise ConfigError(
                    f"{section}.{key} is not a setting; known: {', '.join(sorted(names))}"
                )
            values[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**values)
