"""The feature job and its bare twin on the local Flink session cluster: parallelism 1 on one
1-slot TaskManager against 2 on two (each its own JVM and Python interpreter), on
bench/features_bench.py's backlog and flags; bench/joiner_cluster.py ``--pipeline features``.

    python -m bench.features_cluster [--impressions 100000] [--repeat 1] [--jobs bare,job]

Writes bench/results/features_cluster.json (the p2/p1 ratio of each job).
"""

from __future__ import annotations

from bench import joiner_cluster


def main(argv: list[str] | None = None) -> int:
    import sys

    return joiner_cluster.main(["--pipeline", "features", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
