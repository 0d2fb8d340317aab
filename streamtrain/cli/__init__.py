"""The ``streamtrain`` console script: one subcommand per component.

    streamtrain kafka start|stop|status      local single-node KRaft broker
    streamtrain topics create                every topic of the system
    streamtrain jars                         fetch the JVM jars with Maven
    streamtrain generate ...                 synthetic traffic to impressions/actions
    streamtrain replay ...                   a real CSV log to impressions/actions
    streamtrain live-traffic ...             the simulated product: real-time requests ranked by serving
    streamtrain passthrough ...              the template Flink job (decode -> encode)
    streamtrain features ...                 dedup + realtime features (Flink job)
    streamtrain join ...                     the joiner: impressions x actions -> samples (Flink job)
    streamtrain train ...                    the incremental trainer (publishes to serving)
    streamtrain serve ...                    a serving replica: model deltas -> HTTP predict
    streamtrain bench <name> ...             a benchmark from bench/ (figures + JSON)
    streamtrain up [--detach] [--fresh]      every stage live, supervised, with a live view (Ctrl-C stops)
    streamtrain down | status                a stack left running in the background
    streamtrain demo [--duration 180]        `up` on a fresh directory for 3 minutes, then its summary
    streamtrain batch-demo                   the stages one after another, bounded (a recipe)
    streamtrain deps [--check]               the package dependency graph and its layering rules
    streamtrain flink start|stop|status      a Flink session cluster from PyFlink's distribution
    streamtrain submit features|join ...     submit a job to it with `flink run -py` (--savepoint P)

Each subcommand lives in a ``cli`` module (its component's, or one of this package's) with ``main(argv) -> int`` and is
imported only when used, so ``streamtrain kafka status`` does not load torch or the JVM.
Common flags of every subcommand: ``--config file.toml`` and ``--set section.field=value``.
A bad setting (``streamtrain.config.ConfigError``) ends any subcommand with exit code 2 and
one line naming it.
"""

from __future__ import annotations

import importlib
import sys

from streamtrain.config import ConfigError
from streamtrain.logs import setup_logging

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("streamtrain.cli.infra", "kafka_main"),
    "topics": ("streamtrain.cli.infra", "topics_main"),
    "jars": ("streamtrain.cli.infra", "jars_main"),
    "generate": ("traffic.cli", "generate_main"),
    "replay": ("traffic.cli", "replay_main"),
    "live-traffic": ("traffic.live_run", "main"),
    "passthrough": ("streaming.passthrough_job", "main"),
    "join": ("streaming.joiner.job", "main"),
    "features": ("streaming.features.job", "main"),
    "train": ("streamtrain.cli.train", "main"),
    "serve": ("sync.cli", "main"),
    "bench": ("bench.cli", "main"),
    "up": ("streamtrain.cli.up", "up_main"),
    "down": ("streamtrain.cli.up", "down_main"),
    "status": ("streamtrain.cli.up", "status_main"),
    "demo": ("streamtrain.cli.up", "demo_main"),
    "batch-demo": ("streamtrain.cli.demo", "main"),
    "deps": ("streamtrain.cli.deps", "main"),
    "flink": ("streamtrain.cli.flink", "main"),
    "submit": ("streamtrain.cli.flink", "submit_main"),
}


def usage() -> str:
    return __doc__.split("\n\n")[1]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv
    if verbose:
        argv.remove("-v")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: streamtrain [-v] <command> [--config FILE] [--set section.field=value ...]\n")
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"streamtrain: unknown command {name!r}; commands: {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)
        return 2
    setup_logging(verbose)
    module, func = SUBCOMMANDS[name]
    try:
        entry = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        if name == "bench" and exc.name in ("bench", "bench.cli"):
            print("streamtrain bench: the benchmarks live in a checkout of the repository (bench/), "
                  "not in the installed package; run it from a checkout, e.g. `make bench BENCH=<name>`",
                  file=sys.stderr)
            return 2
        raise
    try:
        return int(entry(rest) or 0)
    except ConfigError as exc:  # a bad setting a subcommand did not report itself: one line, no traceback
        print(f"streamtrain {name}: {exc}", file=sys.stderr)
        return 2


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
