"""``streamtrain bench <name> [args]``: run one benchmark module of this folder.

    streamtrain bench kafka_roundtrip --records 50000
    streamtrain bench sync_freshness --interval 5 --duration 40
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

SKIP = {"cli", "common", "__main__"}


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if m.name not in SKIP and not m.name.endswith("_common"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] not in names:
        print(f"usage: streamtrain bench <name> [args]; benchmarks: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    sys.argv = [f"streamtrain bench {argv[0]}", *argv[1:]]  # for modules whose main() reads sys.argv
    try:
        code = module.main(argv[1:]) if module.main.__code__.co_argcount else module.main()
    except SystemExit as exc:
        code = exc.code
    return int(code or 0)
