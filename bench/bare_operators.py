"""The benchmarks' baselines: the joiner's and the feature job's topologies (same sources,
keying, sinks and Flink settings) with each operator replaced by a plain one, so a
benchmark measures what the job's own work costs over the Flink path. Two kinds:

- ``bare``: each operator forwards bytes (no decode, no encode): the Flink path alone.
- ``codec``: each operator decodes its input with the schema's codec and encodes what it
  writes (the joiner's twin turns an impression into a Sample without labels and writes an
  action back; the feature job's twin decodes and re-encodes in both steps, as the job
  does). This is issue 15's baseline, "a bare keyed PyFlink job with the same sources,
  sinks, decode and encode": what any Python job of this shape pays before its own logic.
  Undecodable bytes (the benchmarks' start markers) are forwarded as they are.
- ``pycodec``: ``codec`` keyed as a plain PyFlink job keys, by Python key selectors
  (``flink.jvm_ops=false``), where the others and the jobs key in the JVM
  (streaming/jvm_ops.py): the baseline a user would write without jvm/flink-ops.

    python -m bench.bare_operators join --bounded --set ...            # the joiner job, bare
    python -m bench.bare_operators join --codec --bounded --set ...    # ... with decode + encode
    python -m bench.bare_operators features [--codec] --bounded --set ...

Every flag and ``--set`` of ``streamtrain join`` / ``streamtrain features`` applies; the
Flink job is named ``streamtrain-joiner-bare`` (``-codec``) / ``streamtrain-features-bare``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from pyflink.datastream import KeyedCoProcessFunction, KeyedProcessFunction, RuntimeContext

from schemas import Action, Impression, Sample, codec_for
from schemas.errors import DecodeError
from streaming import python_gc
from streaming.features.flink_functions import KIND_ACTION, KIND_IMPRESSION, StepRecord

KINDS = ("bare", "codec", "pycodec")  # bytes forwarded | decoded and encoded | ... keyed in Python


class _Tuned:
    """The interpreter's garbage collector tuned as the jobs' functions tune it
    (streaming/python_gc.py), so a baseline does not pay collections the job is spared."""

    def open(self, runtime_context: RuntimeContext) -> None:
        python_gc.tune()


class ForwardFunction(_Tuned, KeyedCoProcessFunction):
    """The joiner's bare operator: both inputs forwarded as they are."""

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[bytes]:
        yield value

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[bytes]:
        yield value


def as_sample(imp: Impression) -> Sample:
    """The Sample the joiner writes for an impression that met no label (schema defaults
    for the rest)."""
    return Sample(request_id=imp.request_id, user_id=imp.user_id, item_id=imp.item_id,
                  event_time_ms=imp.event_time_ms, emit_time_ms=imp.event_time_ms,
                  slots=imp.slots, ids=imp.ids, dense=imp.dense)


class BareUser(_Tuned, KeyedCoProcessFunction):
    """The feature job's bare user step: each record forwarded in the step record shape."""

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[StepRecord]:
        yield KIND_IMPRESSION, 0, value

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[StepRecord]:
        yield KIND_ACTION, 0, value


class BareItem(_Tuned, KeyedProcessFunction):
    """The feature job's bare item step: the record's bytes forwarded."""

    def process_element(self, value: StepRecord,
                        ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        yield value[2]


class _Recode:
    """Decode with the codec of a record's kind and encode again (undecodable: as is)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        python_gc.tune()
        self.codecs = {KIND_IMPRESSION: codec_for(Impression), KIND_ACTION: codec_for(Action)}

    def recode(self, kind: int, value: bytes) -> bytes:
        codec = self.codecs[kind]
        try:
            return codec.encode(codec.decode(bytes(value)))
        except DecodeError:
            return value


class CodecForwardFunction(_Recode, KeyedCoProcessFunction):
    """The joiner's codec twin: an impression decoded and written as a Sample without
    labels, an action decoded and written again; undecodable bytes forwarded."""

    def open(self, runtime_context: RuntimeContext) -> None:
        super().open(runtime_context)
        self.sample_codec = codec_for(Sample)

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[bytes]:
        try:
            yield self.sample_codec.encode(as_sample(self.codecs[KIND_IMPRESSION].decode(bytes(value))))
        except DecodeError:
            yield value

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[bytes]:
        yield self.recode(KIND_ACTION, value)


class CodecUser(_Recode, KeyedCoProcessFunction):
    """The feature job's codec twin of the user step: each record decoded and encoded again,
    in the step record shape."""

    def process_element1(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[StepRecord]:
        yield KIND_IMPRESSION, 0, self.recode(KIND_IMPRESSION, value)

    def process_element2(self, value: bytes,
                         ctx: KeyedCoProcessFunction.Context) -> Iterator[StepRecord]:
        yield KIND_ACTION, 0, self.recode(KIND_ACTION, value)


class CodecItem(_Recode, KeyedProcessFunction):
    """The feature job's codec twin of the item step: the record decoded and encoded again."""

    def process_element(self, value: StepRecord,
                        ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        yield self.recode(value[0], value[2])


JOBS = ("join", "features")


def bare_command(job: str, kind: str = "bare") -> list[str]:
    """The command line start of ``job``'s baseline (``join`` | ``features``; ``kind`` bare
    | codec | pycodec), run from the repository root; the job's flags follow."""
    if job not in JOBS:
        raise ValueError(f"no bare baseline for {job!r}: one of {JOBS}")
    if kind not in KINDS:
        raise ValueError(f"no baseline kind {kind!r}: one of {KINDS}")
    flags = {"bare": [], "codec": ["--codec"], "pycodec": ["--codec", "--set", "flink.jvm_ops=false"]}
    return [sys.executable, "-m", "bench.bare_operators", job, *flags[kind]]


def run_bare(job: str, argv: list[str], kind: str = "bare") -> int:
    """Run ``job``'s baseline of ``kind`` with the job's own skeleton and flags."""
    codec = kind == "codec"
    variant = "bare-codec" if codec else "bare"
    if job == "join":
        from streaming.joiner.job import JOB

        return JOB.main(argv, variant=variant, join=CodecForwardFunction() if codec else ForwardFunction())
    if job == "features":
        from streaming.features.job import JOB

        if codec:
            return JOB.main(argv, variant=variant, user_step=CodecUser(), item_step=CodecItem())
        return JOB.main(argv, variant=variant, user_step=BareUser(), item_step=BareItem())
    raise ValueError(f"no bare baseline for {job!r}: one of {JOBS}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in JOBS:
        print(f"usage: python -m bench.bare_operators {{{' | '.join(JOBS)}}} [--codec] [job flags]",
              file=sys.stderr)
        return 2
    from streamtrain.logs import setup_logging

    setup_logging()
    codec = len(argv) > 1 and argv[1] == "--codec"
    return run_bare(argv[0], argv[2:] if codec else argv[1:], "codec" if codec else "bare")


if __name__ == "__main__":
    sys.exit(main())
