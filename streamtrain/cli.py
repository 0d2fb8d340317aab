"""The ``streamtrain`` console script: one subcommand per component.

    streamtrain kafka start|stop|status      local single-node KRaft broker
    streamtrain topics create                every topic of the system
    streamtrain jars                         fetch the JVM jars with Maven
    streamtrain generate ...                 synthetic traffic to impressions/actions
    streamtrain replay ...                   a real CSV log to impressions/actions
    streamtrain passthrough ...              the template Flink job (decode -> encode)
    streamtrain features ...                 dedup + realtime features (Flink job)
    streamtrain join ...                     the joiner: impressions x actions -> samples (Flink job)
    streamtrain train ...                    the incremental trainer (publishes to serving)
    streamtrain serve ...                    a serving replica: model deltas -> HTTP predict
    streamtrain bench <name> ...             a benchmark from bench/ (figures + JSON)
    streamtrain demo                         the whole thing, bounded, on local defaults

Each subcommand lives in its component's ``cli`` module with ``main(argv) -> int`` and is
imported only when used, so ``streamtrain kafka status`` does not load torch or the JVM.
Common flags of every subcommand: ``--config file.toml`` and ``--set section.field=value``.
"""

from __future__ import annotations

import importlib
import logging
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("streamtrain.infra_cli", "kafka_main"),
    "topics": ("streamtrain.infra_cli", "topics_main"),
    "jars": ("streamtrain.infra_cli", "jars_main"),
    "generate": ("traffic.cli", "generate_main"),
    "replay": ("traffic.cli", "replay_main"),
    "passthrough": ("streaming.passthrough_job", "main"),
    "join": ("streaming.joiner.job", "main"),
    "features": ("streaming.features.job", "main"),
    "train": ("trainer.cli", "main"),
    "serve": ("sync.cli", "main"),
    "bench": ("bench.cli", "main"),
    "demo": ("streamtrain.demo", "main"),
}


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "py4j", "apache_beam", "pyflink"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
