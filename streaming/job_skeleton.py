"""The skeleton every streamtrain Flink job runs on: flags, settings, topics, the execution
environment and ``execute``. A job module declares only what is its own (its config
sections, extra flags, Flink settings and the topology) and keeps ``main(argv) -> int``
for ``streamtrain <command>``:

    def _sections(args):   # literal sections: `--set joiner.x=...` is greppable to its class
        return {"joiner": flags.load(args, JoinerConfig, "joiner"),
                "joiner_job": flags.load(args, JoinerJobConfig, "joiner_job")}

    JOB = FlinkJob(command="join", label="joiner", description="join impressions with ...",
                   build=_build, sections=_sections, add_flags=_flags, prepare=_prepare,
                   flink_settings=_settings, describe=_describe)

    def main(argv: list[str] | None = None) -> int:
        return JOB.main(argv)

    if __name__ == "__main__":   # `flink run -py streaming/joiner/job.py -pyfs . ...`
        run_as_script(main)

One run (``FlinkJob.main``): parse ``--config`` / ``--set`` (``streamtrain.flags``), the
flags every job has (``--bounded``, ``--no-jar``) and the job's own -> load ``[kafka]``,
``[topics]``, ``[flink]`` and the job's own sections into a ``JobRun`` -> ``prepare`` (flags
that override settings, checks across sections) -> create the missing topics -> the
execution environment (``streaming.flink_env.make_env`` with the job's Flink settings) ->
``build`` the topology -> ``execute`` (returns when a bounded job's input ends).

Durable state: a job that names its ``durable_state`` section (one with ``checkpoint_dir``,
``restore``, ``state_backend`` and ``max_restarts``, e.g. ``[joiner_job]``) gets
``--restore latest|<path>`` (overrides the section's ``restore``) and the checkpoint
settings of ``streaming.flink_env.checkpoint_settings`` (retained checkpoints in
``checkpoint_dir``; a restored run resumes state, timers and Kafka offsets from the
checkpoint); its own ``flink_settings`` go on top.

``main(argv, variant=..., **operators)`` runs the same job with operators swapped in
(``build`` receives them as keyword arguments): the benchmarks' bare baselines do so
(bench/bare_operators.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from schemas.validation import ValidationLimits
from streaming.flink_env import SAVEPOINTS_SUBDIR, FlinkConfig, checkpoint_settings, make_env
from streamtrain import flags
from streamtrain.kafka_io import KafkaConfig, TopicsConfig, create_topics
from streamtrain.signals import StopRequest, stop_on_signals

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment

log = logging.getLogger(__name__)


@dataclass
class JobRun:
    """One run of a job: its parsed flags and loaded settings (``prepare`` may replace a
    section or set flag defaults) and the Flink job name."""

    args: argparse.Namespace
    kafka: KafkaConfig
    topics: TopicsConfig
    flink: FlinkConfig
    sections: dict[str, Any]  # the job's own sections, by name
    name: str                 # the Flink job's name
    validation: ValidationLimits = ValidationLimits()  # [validation]: what the record gates accept

    def __getitem__(self, section: str) -> Any:
        return self.sections[section]

    def __setitem__(self, section: str, value: Any) -> None:
        self.sections[section] = value


# build(env, run, **operators): the topology, from sources to sinks
Build = Callable[..., None]


@dataclass(frozen=True)
class FlinkJob:
    """A Flink job's own pieces; ``main`` runs it.

    command: the ``streamtrain`` subcommand (the flag parser's prog).
    label: names the job in log lines; the Flink job is ``streamtrain-<label>``.
    build: ``build(env, run, **operators)`` wires sources -> operators -> sinks.
    sections: ``sections(args) -> {section: config}``, the job's own sections, each loaded
        with ``flags.load(args, Cls, "section")`` (besides kafka, topics and flink).
    add_flags: adds the job's flags (``--bounded`` and ``--no-jar`` are always there).
    prepare: adjusts the run once settings are loaded (flag overrides, cross checks).
    flink_settings: more Flink settings for ``make_env`` (on top of the durable state's).
    durable_state: the job's section holding ``checkpoint_dir``, ``restore``,
        ``state_backend`` and ``max_restarts``: adds ``--restore`` and the checkpoint
        settings (``checkpoint_settings``); None: no checkpoint directory, no restore.
    extra_topics: topics to create besides ``[topics]``.
    describe: ``key=value`` text of what runs, for the log lines.
    bounded_help: the help of ``--bounded``.
    """

    command: str
    label: str
    description: str
    build: Build
    sections: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    add_flags: Callable[[argparse.ArgumentParser], None] | None = None
    prepare: Callable[[JobRun], None] | None = None
    flink_settings: Callable[[JobRun], dict[str, str]] | None = None
    extra_topics: Callable[[JobRun], list[str]] | None = None
    describe: Callable[[JobRun], str] | None = None
    bounded_help: str = "stop at the offsets latest at start"
    durable_state: str | None = None

    def parser(self) -> argparse.ArgumentParser:
        p = flags.parser(self.command, self.description)
        p.add_argument("--bounded", action="store_true", help=self.bounded_help)
        if self.durable_state is not None:
            p.add_argument("--restore", default=None,
                           help=f"'latest' or a checkpoint path (overrides {self.durable_state}.restore)")
        if self.add_flags is not None:
            self.add_flags(p)
        p.add_argument("--no-jar", action="store_true", help="the cluster provides the connector jar")
        return p

    def load(self, argv: list[str] | None = None) -> JobRun:
        """Flags and settings of one run, prepared (nothing started yet)."""
        args = self.parser().parse_args(argv)
        run = JobRun(args=args,
                     kafka=flags.load(args, KafkaConfig, "kafka"),
                     topics=flags.load(args, TopicsConfig, "topics"),
                     flink=flags.load(args, FlinkConfig, "flink"),
                     sections=self.sections(args) if self.sections is not None else {},
                     name=f"streamtrain-{self.label}",
                     validation=flags.load(args, ValidationLimits, "validation"))
        if self.durable_state is not None and args.restore is not None:
            run[self.durable_state] = replace(run[self.durable_state], restore=args.restore)
        if self.prepare is not None:
            self.prepare(run)
        return run

    def environment(self, run: JobRun) -> StreamExecutionEnvironment:
        """Create the run's topics, then its execution environment."""
        create_topics(run.kafka, run.topics,
                      extra=self.extra_topics(run) if self.extra_topics is not None else [])
        return make_env(run.flink, with_jar=not run.args.no_jar, extra=self.settings(run))

    def settings(self, run: JobRun) -> dict[str, str] | None:
        """The run's extra Flink settings: the durable state's, then the job's own."""
        settings: dict[str, str] = {}
        if self.durable_state is not None:
            state = run[self.durable_state]
            settings.update(checkpoint_settings(state.checkpoint_dir, state.restore,
                                                state.state_backend, state.max_restarts,
                                                label=self.label))
        if self.flink_settings is not None:
            settings.update(self.flink_settings(run))
        return settings or None

    def main(self, argv: list[str] | None = None, *, variant: str = "", **operators: Any) -> int:
        """Run the job (until a bounded input ends; an unbounded one runs until stopped).
        ``variant`` suffixes the Flink job name and the log label; ``operators`` go to
        ``build`` (a benchmark's bare operators)."""
        run = self.load(argv)
        label = f"{self.label}-{variant}" if variant else self.label
        if variant:
            run.name = f"{run.name}-{variant}"
        env = self.environment(run)
        self.build(env, run, **operators)
        what = self.describe(run) if self.describe is not None else ""
        log.info("running %s %s bounded=%s", label, what, run.args.bounded)
        if run.args.bounded or self.durable_state is None or _AS_SCRIPT:
            env.execute(run.name)  # as a script: `flink run -d` returns once the job is submitted
        else:
            self._run_until_stopped(env, run.name, run[self.durable_state].checkpoint_dir, label)
        log.info("%s finished %s", label, what)
        return 0

    def _run_until_stopped(self, env: StreamExecutionEnvironment, name: str, checkpoint_dir: str,
                           label: str) -> None:
        """An unbounded job with durable state: runs until it ends by itself (a failure
        raises) or SIGTERM/SIGINT arrives; then it stops with a savepoint in
        ``<checkpoint_dir>/savepoints``, which ``--restore latest`` resumes from (Kafka
        offsets, keyed state and timers), so a clean stop loses nothing and repeats little."""
        client = env.execute_async(name)
        stop = StopRequest()
        with stop_on_signals(stop, "stopping with a savepoint"):
            while not stop.wait(0.5):
                try:
                    status = client.get_job_status().result()
                except Exception as exc:  # noqa: BLE001 - py4j: the MiniCluster's JVM is gone
                    raise FlinkJobLost(f"{label}: lost the Flink JVM ({str(exc).splitlines()[0][:200]}); "
                                       "the newest retained checkpoint is the restore point") from None
                if status.is_globally_terminal_state():
                    client.get_job_execution_result().result()  # raises if the job failed
                    return
        target = _savepoint_dir(checkpoint_dir)
        try:
            path = _stop_with_savepoint(client, target)
        except Exception as exc:  # noqa: BLE001 - py4j wraps every JVM error; the retained checkpoints remain
            log.error("%s: stop with a savepoint failed (%s); cancelling, the newest retained "
                      "checkpoint stays the restore point", label, str(exc).splitlines()[0][:300])
            client.cancel().result()
            return
        log.info("%s stopped by %s with a savepoint at %s", label, stop.by, path)


class FlinkJobLost(RuntimeError):
    """The JVM that runs the job died under it (crash, OOM kill)."""


def _savepoint_dir(checkpoint_dir: str) -> str:
    if "://" in checkpoint_dir:
        return f"{checkpoint_dir.rstrip('/')}/{SAVEPOINTS_SUBDIR}"
    return (Path(checkpoint_dir).resolve() / SAVEPOINTS_SUBDIR).as_uri()


def _stop_with_savepoint(client: Any, directory: str) -> str:
    """``JobClient.stopWithSavepoint`` in the canonical format; PyFlink 2.2's wrapper calls
    the two-argument overload, which Flink 2 no longer has."""
    from pyflink.java_gateway import get_gateway

    canonical = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return str(client._j_job_client.stopWithSavepoint(False, directory, canonical).get())


_AS_SCRIPT = False  # run by ``run_as_script``: a cluster's client, which stops jobs itself


def run_as_script(main: Callable[[], int]) -> NoReturn:
    """A job module run as a script (``flink run -py``, ``python <job>.py``): logging set
    up as the CLI does, then ``main`` with the process's arguments. The job is submitted
    and left to the cluster (``execute``): stopping it with a savepoint is the cluster's
    business there (``streamtrain flink stop-job``), not this process's signals."""
    from streamtrain.logs import setup_logging

    global _AS_SCRIPT
    _AS_SCRIPT = True
    setup_logging()
    sys.exit(main())
