"""The benchmarks' pass-through baselines: the joiner's and the feature job's topologies (same
sources, keying, sinks and Flink settings) with each operator replaced by one that forwards
bytes, so a benchmark measures what the job's Python work costs over the bare Flink path.

    python -m bench.bare_operators join --bounded --set ...       # the joiner job, bare
    python -m bench.bare_operators features --bounded --set ...   # the feature job, bare

Every flag and ``--set`` of ``streamtrain join`` / ``streamtrain features`` applies; the
Flink job is named ``streamtrain-joiner-bare`` / ``streamtrain-features-bare``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction

from streaming.features.flink_functions import KIND_ACTION, KIND_IMPRESSION, StepRecord


class ForwardFunction(KeyedCoProcessFunction):
    """The joiner's bare operator: both inputs forwarded as they are."""

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[bytes]:
        yield value

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[bytes]:
        yield value


class BareUser(KeyedCoProcessFunction):
    """The feature job's bare user step: each record forwarded in the step record shape."""

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[StepRecord]:
        yield KIND_IMPRESSION, 0, value

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[StepRecord]:
        yield KIND_ACTION, 0, value


class BareItem(KeyedProcessFunction):
    """The feature job's bare item step: the record's bytes forwarded."""

    def process_element(self, value: StepRecord,
                        ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        yield value[2]


JOBS = ("join", "features")


def bare_command(job: str) -> list[str]:
    """The command line start of the bare ``job`` (``join`` | ``features``), run from the
    repository root; the job's flags follow."""
    if job not in JOBS:
        raise ValueError(f"no bare baseline for {job!r}: one of {JOBS}")
    return [sys.executable, "-m", "bench.bare_operators", job]


def run_bare(job: str, argv: list[str]) -> int:
    """Run the bare ``job`` with the job's own skeleton and flags."""
    if job == "join":
        from streaming.joiner.job import JOB

        return JOB.main(argv, variant="bare", join=ForwardFunction())
    if job == "features":
        from streaming.features.job import JOB

        return JOB.main(argv, variant="bare", user_step=BareUser(), item_step=BareItem())
    raise ValueError(f"no bare baseline for {job!r}: one of {JOBS}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in JOBS:
        print(f"usage: python -m bench.bare_operators {{{' | '.join(JOBS)}}} [job flags]",
              file=sys.stderr)
        return 2
    from streamtrain.logs import setup_logging

    setup_logging()
    return run_bare(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
