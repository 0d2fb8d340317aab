"""The joiner job and its bare pass-through (bench/bare_operators.py) on the local Flink session
cluster (`streamtrain flink start`), submitted with `flink run -py` as users do: parallelism 1
on one TaskManager with 1 slot, then parallelism 2 on two TaskManagers with 1 slot each (each
its own JVM, so in thread mode each subtask has its own Python interpreter and GIL; on one
MiniCluster JVM the joiner at parallelism 2 is slower than at 1, bench/joiner_job.py).

Same backlog, settings and clock as bench/joiner_job.py (`backlog`, `_cmd`, first input read
-> last output written, broker append times); the cluster starts with one TaskManager and
grows to two (`flink_cluster.taskmanagers=2`) before the parallelism-2 runs. ``--pipeline
features`` does the same for the feature job and its bare twin, on bench/features_bench.py's
backlog and flags (``python -m bench.features_cluster``).

    python -m bench.joiner_cluster [--impressions 100000] [--mode thread|process] [--bundle 1000]
        [--jobs bare,joiner] [--repeat 1] [--set joiner_job.state_backend=rocksdb --tag rocksdb]

Writes bench/results/joiner_cluster[_<mode>][_<tag>].json (features_cluster... for the feature
job): the p2/p1 ratio of each job.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import bare_operators, features_bench
from bench.common import input_to_output_s, kafka_for_bench, log_append_time, write_result
from bench.joiner_job import _cmd, backlog, job_arguments
from streamtrain.cli.flink import FlinkCluster, FlinkClusterConfig, FlinkClusterError
from streamtrain.kafka_io import TopicsConfig, create_topics
from streamtrain.local_kafka import free_port
from streamtrain.paths import JARS_DIR

DONE = ("FINISHED", "FAILED", "CANCELED", "SUSPENDED")
LABELS = {"join": "joiner", "features": "features"}  # --pipeline -> the job's name in results


def _cluster(home: Path, taskmanagers: int, rest: int, rpc: int, memory: str) -> FlinkCluster:
    return FlinkCluster(FlinkClusterConfig(dir=str(home), rest_port=rest, rpc_port=rpc, slots=1,
                                           taskmanagers=taskmanagers, taskmanager_memory=memory))


def submit(cluster: FlinkCluster, command: str, bare: bool, job_args: list[str]) -> str:
    """``flink run -d -py`` the job (``command``: join | features; ``FlinkCluster.submit``)
    or its bare baseline (the same run with bench/bare_operators.py as the script); the
    Flink job id."""
    if not bare:
        return cluster.submit(command, job_args)
    jars = sorted((JARS_DIR / "flink").glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        raise FlinkClusterError(f"no flink-sql-connector-kafka jar in {JARS_DIR / 'flink'}")
    py = cluster.config.interpreter
    out = cluster.flink("run", "-m", cluster.config.address, "-d", "-py", bare_operators.__file__,
                        "-pyexec", py, "-pyclientexec", py, "-j", str(jars[-1]),
                        "--", command, "--no-jar", *job_args)
    m = re.search(r"JobID ([0-9a-f]{32})", out)
    if m is None:
        raise FlinkClusterError(f"no job id in the output of `flink run`:\n{out[-3000:]}")
    return m.group(1)


def wait_finished(cluster: FlinkCluster, jid: str, timeout_s: float) -> dict:
    """The job's REST record once it is in a terminal state (FINISHED, or raise)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = cluster.rest(f"/jobs/{jid}")
        if job is not None and job.get("state") in DONE:
            if job["state"] != "FINISHED":
                exc = (cluster.rest(f"/jobs/{jid}/exceptions") or {}).get("root-exception", "")
                raise FlinkClusterError(f"job {jid} {job['state']}: {str(exc)[:3000]}")
            return job
        time.sleep(0.5)
    raise FlinkClusterError(f"job {jid} not finished after {timeout_s:.0f}s: {cluster.rest(f'/jobs/{jid}')}")


def taskmanagers_used(cluster: FlinkCluster, job: dict) -> int:
    """How many TaskManagers ran the job's subtasks."""
    used: set[str] = set()
    for v in job.get("vertices", []):
        for tm in (cluster.rest(f"/jobs/{job['jid']}/vertices/{v['id']}/taskmanagers") or {}).get(
                "taskmanagers", []):
            used.add(tm.get("taskmanager-id") or tm.get("endpoint") or tm.get("host", ""))
    return len(used)


def job_run(kafka, base: TopicsConfig, work: Path, args, name: str, bare: bool,
            parallelism: int) -> tuple[list[str], dict[str, str]]:
    """The flags of one bounded run of ``args.pipeline`` (after its start command) into
    output topics of its own, and those topics by role (timed to their last record)."""
    if args.pipeline == "features":
        topics, outs = features_bench.output_topics(kafka, base, name)
        flags = features_bench.job_flags(kafka, topics, name, parallelism)
        flags += ["--set", f"flink.execution_mode={args.mode}", "--set", f"flink.bundle_size={args.bundle}"]
        for e in args.settings:
            flags += ["--set", e]
        return flags, outs
    topics = replace(base, samples=f"{base.samples}.{name}", dead_letter=f"{base.dead_letter}.{name}")
    create_topics(kafka, topics)
    log_append_time(kafka, [topics.samples, topics.dead_letter])
    extra = ["--bounded", "joiner.window_ms=10000", f"flink.parallelism={parallelism}"]
    cmd = _cmd(kafka, topics, work / name, args, *extra, job="bare" if bare else "joiner")
    start = len(bare_operators.bare_command("join")) if bare else 4  # python -m streamtrain.cli join
    return cmd[start:], {"samples": topics.samples, "dead_letter": topics.dead_letter}


def run_job(cluster: FlinkCluster, kafka, base: TopicsConfig, work: Path, args, n_in: int,
            bare: bool, parallelism: int, rep: int = 0) -> dict:
    label = "bare" if bare else LABELS[args.pipeline]
    name = f"cluster-{label}-p{parallelism}" + (f"-r{rep}" if rep else "")
    flags, outs = job_run(kafka, base, work, args, name, bare, parallelism)
    t0 = time.monotonic()
    jid = submit(cluster, args.pipeline, bare, flags)
    job = wait_finished(cluster, jid, args.job_timeout_s)
    wall = time.monotonic() - t0
    span, counts = input_to_output_s(kafka, list(outs.values()))
    r = {"job": label, "parallelism": parallelism,
         "taskmanagers": parallelism, "slots_per_taskmanager": 1,
         "taskmanagers_used": taskmanagers_used(cluster, job), "input_events": n_in,
         "outputs": {role: counts[t] for role, t in outs.items()},
         "active_s": round(span, 2), "events_per_s": round(n_in / span),
         "wall_s_with_submit": round(wall, 1)}
    if args.pipeline == "join":
        r |= {"output_records": counts[outs["samples"]], "dead_letters": counts[outs["dead_letter"]]}
    print(f"{r['job']} (cluster, parallelism {parallelism} on {r['taskmanagers_used']} TaskManager(s)): "
          f"{r['events_per_s']:,} events/s ({n_in:,} events, {sum(r['outputs'].values()):,} out, "
          f"{r['active_s']}s first input -> last output, {r['wall_s_with_submit']}s with submit)",
          flush=True)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    job_arguments(p)
    p.add_argument("--pipeline", default="join", choices=sorted(LABELS),
                   help="the joiner (default) or the feature job, each beside its bare twin")
    p.add_argument("--jobs", default="bare,job", help="which jobs: bare,job (the pipeline's)")
    p.add_argument("--taskmanager-memory", default="2048m", help="each TaskManager's process size")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each job at each parallelism (figures: the median events/s)")
    p.add_argument("--job-timeout-s", type=float, default=300)
    args = p.parse_args(argv)
    label = LABELS[args.pipeline]
    jobs = [label if j.strip() in ("job", label) else j.strip() for j in args.jobs.split(",") if j.strip()]
    bad = set(jobs) - {"bare", label}
    if bad or not jobs:
        p.error(f"--jobs: bare and/or job ({label}), not {sorted(bad)}")
    rest, rpc = free_port(), free_port()
    while rpc == rest:
        rpc = free_port()
    with kafka_for_bench(args.bootstrap) as kafka, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.pipeline == "features":  # features_bench's Flink backlog: 5k users, 1k items
            base, n_in = features_bench.backlog(kafka, "hour", 3600.0, args.impressions, 5_000, 1_000)
        else:
            base, n_in = backlog(kafka, "hour", args.impressions, 0)
        runs: list[dict] = []
        cluster = _cluster(work / "flink", 1, rest, rpc, args.taskmanager_memory)
        try:
            for parallelism in (1, 2):
                # the same cluster, grown to two TaskManagers (`start` adds the missing one)
                cluster = _cluster(work / "flink", parallelism, rest, rpc, args.taskmanager_memory)
                st = cluster.start()
                print(f"cluster: {st['taskmanagers']} TaskManager(s), {st['slots_total']} slots "
                      f"(pids {st['taskmanager_pids']})", flush=True)
                for rep in range(args.repeat):
                    for job in jobs:
                        runs.append(run_job(cluster, kafka, base, work, args, n_in, job == "bare",
                                            parallelism, rep))
        finally:
            cluster.stop()
        rate = {(job, n): round(statistics.median(r["events_per_s"] for r in runs
                                                  if (r["job"], r["parallelism"]) == (job, n)))
                for job in jobs for n in (1, 2)}
        scaling = {job: round(rate[job, 2] / rate[job, 1], 3) for job in ("bare", label) if job in jobs}
        result: dict = {"pipeline": args.pipeline, "mode": args.mode, "bundle_size": args.bundle,
                        "settings": args.settings,
                        "impressions": args.impressions, "span": "hour",
                        "taskmanager_memory": args.taskmanager_memory,
                        "cluster": "local session cluster (PyFlink's distribution): parallelism p on "
                                   "p TaskManagers (JVMs) with 1 slot each",
                        "repeat": args.repeat, "throughput": runs,
                        "events_per_s": {f"{job}_p{n}": v for (job, n), v in rate.items()},
                        "timing": "first input read (earliest output: a start marker written out) "
                                  "-> last output written, broker append times",
                        "p2_over_p1": scaling}
        if len(jobs) == 2:
            result[f"{label}_over_bare"] = {f"p{n}": round(rate[label, n] / rate["bare", n], 3)
                                            for n in (1, 2)}
        for job, ratio in scaling.items():
            print(f"{job}: {rate[job, 1]:,} events/s at parallelism 1 (1 TaskManager), {rate[job, 2]:,} "
                  f"at parallelism 2 (2 TaskManagers): p2/p1 = {ratio:.2f}")
        name = f"{label}_cluster" + ("" if args.mode == "thread" else f"_{args.mode}") \
            + ("" if args.bundle == 1000 else f"_b{args.bundle}") + (f"_{args.tag}" if args.tag else "")
        print("wrote", write_result(name, result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
