"""Argument parsing shared by every entry point (CLI subcommands, Flink job mains):
``--config file.toml`` and ``--set section.field=value``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeVar

from streamtrain import config as config_mod

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # a config dataclass, as config.load() reads


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"streamtrain {prog}", description=description)
    p.add_argument("--config", help="TOML file with [section] tables", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.FIELD=VALUE", help="override one setting (repeatable)")
    return p


def load(args: argparse.Namespace, cls: type[T], section: str) -> T:
    return config_mod.load(cls, section, path=args.config, overrides=args.overrides)
