"""``streamtrain bench <name> [args]``: run one benchmark module of this folder;
``streamtrain bench all``: regenerate every figure docs/ quotes, into bench/results/.

    streamtrain bench kafka_roundtrip --records 50000
    streamtrain bench sync_freshness --interval 5 --duration 40
    streamtrain bench all                  # ALL below, in order (~40-60 min on 2 cores)
    streamtrain bench all --only sync_publish,trainer_kafka
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

SKIP = {"cli", "common", "__main__"}

# (benchmark, arguments, the docs that quote its bench/results/*.json): what `all` runs
ALL: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("joiner_core", (), "docs/joiner.md"),
    ("joiner_job", (), "docs/joiner.md"),
    ("joiner_cluster", ("--repeat", "2"), "docs/joiner.md, docs/deploy.md"),
    ("joiner_span", (), "docs/joiner.md"),
    ("features_bench", (), "docs/features.md"),
    ("features_cluster", ("--repeat", "2"), "docs/features.md, docs/deploy.md"),
    ("serving_load", (), "docs/operations.md"),
    ("sync_freshness", (), "docs/sync.md"),
    ("sync_publish", (), "docs/sync.md"),
    ("trainer_bench", (), "bench/results only"),
    ("trainer_vocab", (), "bench/results only"),
    ("trainer_kafka", (), "bench/results only"),  # the last ones set torch to one thread
)


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if m.name not in SKIP and not m.name.endswith("_common"))


def run_one(name: str, args: list[str]) -> int:
    module = importlib.import_module(f"bench.{name}")
    saved = sys.argv
    sys.argv = [f"streamtrain bench {name}", *args]  # for modules whose main() reads sys.argv
    try:
        code = module.main(args) if module.main.__code__.co_argcount else module.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved
    return int(code or 0)


def run_all(argv: list[str]) -> int:
    only = set()
    if argv[:1] == ["--only"] and len(argv) > 1:
        only = set(argv[1].split(","))
    failed = []
    for name, args, doc in ALL:
        if only and name not in only:
            continue
        print(f"== bench {name} {' '.join(args)} (quoted in {doc})", flush=True)
        t0 = time.monotonic()
        try:
            code = run_one(name, list(args))
        except Exception as exc:  # one failing benchmark must not hide the others' figures
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        print(f"== bench {name}: exit {code} in {time.monotonic() - t0:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    names = available()
    if argv and argv[0] == "all":
        return run_all(argv[1:])
    if not argv or argv[0] not in names:
        print(f"usage: streamtrain bench <name> [args] | all [--only a,b]; benchmarks: "
              f"{', '.join(names)}", file=sys.stderr)
        return 2
    return run_one(argv[0], argv[1:])
