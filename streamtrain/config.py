"""Loading component configs: one frozen dataclass per component, filled once at the edge.

Precedence, lowest first: the dataclass defaults, the ``[section]`` of a TOML file
(``--config file``), ``STREAMTRAIN_<SECTION>__<FIELD>`` environment variables, then
``--set section.field=value`` from the command line. Values from the environment and
``--set`` are strings, converted to the field's type; a TOML value must already have the
field's type (an integer for an int, an array for a tuple, ...). Every mistake is a
``ConfigError`` that names the key, the value and what is allowed, so a typo never falls
back to a default silently: an unknown field of a section, a value of the wrong type, and a
section that is not one of ``SECTIONS`` (with the closest known name suggested). A known
section that this command does not read is fine: one config file serves every command.

>>> from streamtrain.kafka_io import KafkaConfig
>>> load(KafkaConfig, "kafka", overrides=["kafka.bootstrap=localhost:19092"]).bootstrap
'localhost:19092'
>>> try:
...     load(KafkaConfig, "kafka", overrides=["kafak.bootstrap=x:1"], env={})
... except ConfigError as exc:
...     print(exc)  # doctest: +ELLIPSIS
kafak.bootstrap='x:1' (--set) is invalid: unknown config section 'kafak' (did you mean 'kafka'?); sections: demo, ...
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # load() reads the fields of a dataclass
ENV_PREFIX = "STREAMTRAIN_"

# Every config section of the system -> the dataclass that reads it (``load(cls, section)``).
# tests/streamtrain/test_config.py checks this against the sections the code loads.
SECTIONS: dict[str, str] = {
    "demo": "streamtrain.cli.demo.DemoConfig",
    "embedding": "trainer.config.TableConfig",
    "features": "streaming.features.spec.FeatureSpec",
    "features_job": "streaming.features.job.FeatureJobConfig",
    "flink": "streaming.flink_env.FlinkConfig",
    "flink_cluster": "streamtrain.cli.flink.FlinkClusterConfig",
    "generator": "traffic.generator.GeneratorConfig",
    "joiner": "streaming.joiner.config.JoinerConfig",
    "joiner_job": "streaming.joiner.job.JoinerJobConfig",
    "kafka": "streamtrain.kafka_io.KafkaConfig",
    "live_traffic": "traffic.live.LiveTrafficConfig",
    "local_kafka": "streamtrain.local_kafka.LocalKafkaConfig",
    "model": "trainer.config.ModelConfig",
    "serve": "sync.config.ReplicaConfig",
    "sync": "sync.config.PublisherConfig",
    "topics": "streamtrain.kafka_io.TopicsConfig",
    "up": "streamtrain.cli.stack.UpConfig",
    "trainer": "trainer.config.TrainerConfig",
    "validation": "schemas.validation.ValidationLimits",
}

_UNIONS = (typing.Union, types.UnionType)


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


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


SECRET_WORDS = ("password", "secret", "token", "credential")


def _shown(key: str, value: Any) -> str:
    """``value`` as an error message shows it: masked under a key that names a secret (a
    mistyped ``kafka.sasl_password`` must not print the password it was given)."""
    return "'***'" if any(w in key.lower() for w in SECRET_WORDS) else repr(value)


def _unknown_section(key: str, value: Any, source: str, known: typing.Iterable[str]) -> ConfigError:
    section = key.partition(".")[0]
    close = difflib.get_close_matches(section, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{key}={_shown(key, value)} ({source}) is invalid: unknown config section {section!r}"
                       f"{hint}; sections: {', '.join(sorted(known))}")


def _check_sections(file_data: dict[str, Any], where: str, env_layer: dict[str, dict[str, tuple[str, str]]],
                    overrides: dict[str, dict[str, str]], known: set[str]) -> None:
    """Every section named anywhere must be a section of the system (this command's or not)."""
    for section, table in file_data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section}={table!r} ({where}) is invalid: settings go in a [section] "
                              f"table (sections: {', '.join(sorted(known))})")
        if section not in known:
            field, value = next(iter(table.items()), ("", ""))
            raise _unknown_section(f"{section}.{field}" if field else section, value, f"[{section}] in {where}",
                                   known)
    for section, from_env in env_layer.items():
        if section not in known:
            field, (var, value) = next(iter(from_env.items()))
            raise _unknown_section(f"{section}.{field}", value, f"environment variable {var}", known)
    for section, from_set in overrides.items():
        if section not in known:
            field, value = next(iter(from_set.items()))
            raise _unknown_section(f"{section}.{field}", value, "--set", known)


def _env_layer(env: typing.Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """``STREAMTRAIN_<SECTION>__<FIELD>`` variables by section: field -> (variable, value).
    Other ``STREAMTRAIN_*`` variables (no ``__``, e.g. STREAMTRAIN_STATE_DIR) are not settings."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for var, value in env.items():
        if var.startswith(ENV_PREFIX) and "__" in var:
            section, _, field = var[len(ENV_PREFIX):].partition("__")
            out.setdefault(section.lower(), {})[field.lower()] = (var, value)
    return out


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in _UNIONS:
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), type(None) in args
    return tp, False


def _allowed(tp: Any) -> str:
    """What a field of type ``tp`` accepts, in words for an error message."""
    tp, optional = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        text = "one of " + " | ".join(repr(a) for a in typing.get_args(tp))
    elif origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        text = f"a list of {_allowed(args[0]) if args else 'values'}"
    elif tp is bool:
        text = "true or false"
    elif isinstance(tp, type) and issubclass(tp, PurePath):
        text = "a path (str)"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text} or none" if optional else text


def _toml_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def _typed(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) for a value that already has a type (TOML): int -> float and list -> tuple
    are the only conversions."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        return optional, None
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(tp)), value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        items = [_typed(v, args[0]) if args else (True, v) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return isinstance(value, (str, PurePath)), value
    if typing.get_origin(tp) in _UNIONS:  # X | Y: the first member that fits
        for arg in typing.get_args(tp):
            ok, out = _typed(value, arg)
            if ok:
                return True, out
        return False, value
    return True, value


def _from_file(value: Any, tp: Any, name: str, where: str) -> Any:
    ok, out = _typed(value, tp)
    if not ok:
        raise ConfigError(f"{name}={value!r} ({where}) is invalid: expected {_allowed(tp)}, "
                          f"got {_toml_type(value)}")
    return out


def _convert(text: str, tp: Any, name: str) -> Any:
    """A string (environment, --set) as a value of type ``tp``."""
    tp, optional = _unwrap_optional(tp)
    if optional and text.lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        for allowed in typing.get_args(tp):
            if text == str(allowed):
                return allowed
        raise ConfigError(f"{name}={text!r} is invalid: expected {_allowed(tp)}")
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


def parse_overrides(overrides: list[str] | None) -> dict[str, dict[str, str]]:
    """Split ``--set`` items by section.

    >>> parse_overrides(["kafka.bootstrap=localhost:19092", "trainer.batch_size=512"])
    {'kafka': {'bootstrap': 'localhost:19092'}, 'trainer': {'batch_size': '512'}}
    """
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
    env: typing.Mapping[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults < file section < environment < overrides.

    ``data``: an already parsed file (instead of ``path``)."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    where = f"config file {path}" if path is not None else "config data"
    file_data = data if data is not None else read_file(path)
    env_layer = _env_layer(env)
    set_layer = parse_overrides(overrides)
    _check_sections(file_data, where, env_layer, set_layer, set(SECTIONS) | {section})

    def known(key: str, value: Any, source: str) -> None:
        if key not in names:
            raise ConfigError(f"{section}.{key}={_shown(key, value)} ({source}) is invalid: {section}.{key} is "
                              f"not a setting; known: {', '.join(sorted(names))}")

    values: dict[str, Any] = {}
    for key, value in file_data.get(section, {}).items():
        known(key, value, where)
        values[key] = _from_file(value, hints[key], f"{section}.{key}", where)
    for key, (var, value) in env_layer.get(section, {}).items():
        known(key, value, f"environment variable {var}")
        values[key] = _convert(value, hints[key], f"{section}.{key}")
    for key, value in set_layer.get(section, {}).items():
        known(key, value, "--set")
        values[key] = _convert(value, hints[key], f"{section}.{key}")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as exc:  # a check in a layer below this one (schemas) raises plain ValueError
        raise ConfigError(str(exc)) from exc
