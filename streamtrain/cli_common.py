"""Argument parsing shared by every subcommand: ``--config`` and ``--set``."""

from __future__ import annotations

import argparse
from typing import TypeVar

from streamtrain import config as config_mod

T = TypeVar("T")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"streamtrain {prog}", description=description)
    p.add_argument("--config", help="TOML file with [section] tables", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.FIELD=VALUE", help="override one setting (repeatable)")
    return p


def load(args: argparse.Namespace, cls: type[T], section: str) -> T:
    return config_mod.load(cls, section, path=args.config, overrides=args.overrides)
