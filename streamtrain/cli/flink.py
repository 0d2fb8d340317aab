"""A Flink session cluster from PyFlink's bundled distribution, and job submission to it.

    streamtrain flink start|stop|status       JobManager + TaskManager(s) on this machine
    streamtrain flink jobmanager|taskmanager  one of them in the foreground (a container's command)
    streamtrain flink jobs                    the cluster's jobs (name, id, state)
    streamtrain flink stop-job join --savepoint-dir D   stop a job with a savepoint (prints its path)
    streamtrain submit features|join [--savepoint PATH] [--config F] [--set k=v ...]

The wheel of ``apache-flink`` carries a whole Flink (``pyflink/bin/jobmanager.sh``,
``taskmanager.sh``, ``flink``, ``pyflink/lib``), so the cluster runs the same Flink and the
same Python as the jobs: no version to keep in step. ``[flink_cluster]`` says where its files
live (``dir``: ``conf/config.yaml``, ``log/``, pids, ``checkpoints/``, ``savepoints/``), its
ports and sizes; ``start`` writes the conf, starts what is not running yet (so after a
TaskManager died, ``start`` brings up a new one and the jobs recover from their checkpoints)
and waits until the REST API answers with ``taskmanagers`` registered TaskManagers (each its
own JVM: in thread mode the Python operators of one TaskManager share one interpreter and its
GIL, so Python jobs scale on one machine with more TaskManagers, not with more slots).

``submit`` runs ``flink run -d -py <job module> -pyexec <python> -j <connector jar>
[-s <savepoint>] -- --no-jar <job flags>``; the job gets the same ``--config`` / ``--set``
(its own sections, e.g. ``joiner_job.checkpoint_dir``). A cluster elsewhere: ``--set
flink_cluster.host=jm-host --set flink_cluster.rest_port=8081`` (its TaskManagers need this
package and its Python; docs/deploy.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streaming.flink_env import prometheus_settings, valid_port_spec
from streamtrain import flags
from streamtrain.config import check
from streamtrain.paths import JARS_DIR, STATE_DIR

# submit name -> (job module, Flink job name: streaming.job_skeleton names jobs streamtrain-<label>)
JOBS = {"features": ("streaming.features.job", "streamtrain-features"),
        "join": ("streaming.joiner.job", "streamtrain-joiner"),
        "passthrough": ("streaming.passthrough_job", "streamtrain-passthrough")}
ROLES = {"jobmanager": "jobmanager.sh", "taskmanager": "taskmanager.sh"}
LIVE = ("RUNNING", "CREATED", "RESTARTING", "INITIALIZING", "RECONCILING")  # job states


class FlinkClusterError(RuntimeError):
    """The cluster cannot be started, reached or told something."""


@dataclass(frozen=True)
class FlinkClusterConfig:
    """``[flink_cluster]``: a session cluster run from PyFlink's distribution.

    dir: conf, logs, pids, default checkpoint and savepoint dirs ("" = .streamtrain/flink).
    host / rest_port / rpc_port: where the JobManager is (REST API and RPC); bind_host: the
        address its servers listen on (0.0.0.0 in a container on a bridge network).
    taskmanager_host: how the JobManager reaches the TaskManager (its container name there).
    slots, jobmanager_memory, taskmanager_memory: the usual Flink sizes.
    python: the interpreter of the jobs' Python workers and of the submitting client.
    settings: more Flink settings, ``key=value`` each (``heartbeat.timeout=10000``).
    metrics_port: Flink's Prometheus reporter on the JobManager and the TaskManager(s) (the
        jobs' metrics are the TaskManagers'): "0" = off; a range such as "9260-9261" (each
        process takes the first free port, the JobManager starts first) or a port; with
        ``taskmanagers`` > 1 it must hold a port for each process (1 + taskmanagers).
    taskmanagers: how many TaskManagers ``start`` runs on this machine, each its own JVM
        with ``slots`` slots and ``taskmanager_memory`` (so taskmanagers x slots slots in
        all). In thread mode (``flink.execution_mode``) the Python operators of all jobs in
        one TaskManager share one CPython interpreter and its GIL: to run a Python job at
        parallelism N on one machine, take ``taskmanagers=N, slots=1``. Their other ports
        (RPC, data) are picked free by Flink; pids in ``<dir>/taskmanager.pid`` (one a line),
        logs ``log/flink-*-taskexecutor-<i>-*.log`` and ``log/taskmanager[-<i>].out``.
    """

    dir: str = ""
    host: str = "localhost"
    bind_host: str = "localhost"
    taskmanager_host: str = "localhost"
    rest_port: int = 8081
    rpc_port: int = 6123
    slots: int = 4
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "2048m"
    python: str = ""
    settings: tuple[str, ...] = ()
    start_timeout_s: float = 120.0
    metrics_port: str = "0"
    taskmanagers: int = 1

    def __post_init__(self) -> None:
        for name in ("rest_port", "rpc_port"):
            port = getattr(self, name)
            check(1 <= port <= 65535, f"flink_cluster.{name}", port, "a TCP port 1..65535")
        check(self.rest_port != self.rpc_port, "flink_cluster.rpc_port", self.rpc_port,
              "a port other than flink_cluster.rest_port")
        check(self.slots >= 1, "flink_cluster.slots", self.slots, ">= 1")
        for s in self.settings:
            check("=" in s, "flink_cluster.settings", s, "key=value entries")
        check(self.start_timeout_s > 0, "flink_cluster.start_timeout_s", self.start_timeout_s, "> 0")
        check(valid_port_spec(self.metrics_port), "flink_cluster.metrics_port", self.metrics_port,
              '"0" (off), a port, a range "9260-9261" or a list (ports 1..65535)')
        check(self.taskmanagers >= 1, "flink_cluster.taskmanagers", self.taskmanagers, ">= 1")
        if self.taskmanagers > 1 and self.metrics_port != "0":
            check(_port_count(self.metrics_port) >= 1 + self.taskmanagers, "flink_cluster.metrics_port",
                  self.metrics_port, f"a port for the JobManager and each of the {self.taskmanagers} "
                  f"TaskManagers (e.g. a range of {1 + self.taskmanagers} ports), or \"0\"")

    @property
    def home(self) -> Path:
        return Path(self.dir) if self.dir else STATE_DIR / "flink"

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable

    @property
    def address(self) -> str:
        return f"{self.host}:{self.rest_port}"


def _port_count(spec: str) -> int:
    """How many ports a valid reporter port setting names.

    >>> [_port_count(s) for s in ("9260", "9260-9262", "9260-9262,9270", "9260-9261,9261")]
    [1, 3, 4, 2]
    """
    ports: set[int] = set()
    for part in str(spec).split(","):
        lo, _, hi = part.strip().partition("-")
        ports.update(range(int(lo), int(hi or lo) + 1))
    return len(ports)


def flink_home() -> Path:
    """PyFlink's bundled distribution (bin/, lib/, opt/, conf/)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        raise FlinkClusterError("pyflink is not installed: pip install 'apache-flink==2.2.*'")
    return Path(spec.origin).parent


def _bundled_java_opts() -> str:
    """env.java.opts.all of the bundled config.yaml (the --add-opens Java 17 needs)."""
    text = (flink_home() / "conf" / "config.yaml").read_text()
    m = re.search(r"^\s+all:\s*(--add-\S.*)$", text, re.M)
    return m.group(1).strip() if m else ""


class FlinkCluster:
    """One JobManager and ``config.taskmanagers`` TaskManagers whose files live under
    ``config.home``."""

    def __init__(self, config: FlinkClusterConfig):
        self.config = config
        self.home = config.home.resolve()
        self.conf_dir = self.home / "conf"
        self.log_dir = self.home / "log"

    # --- files and environment -------------------------------------------------------------
    def flink_settings(self) -> dict[str, str]:
        c = self.config
        settings = {
            "env.java.opts.all": _bundled_java_opts(),
            "jobmanager.rpc.address": c.host, "jobmanager.rpc.port": str(c.rpc_port),
            "jobmanager.bind-host": c.bind_host, "taskmanager.bind-host": c.bind_host,
            "taskmanager.host": c.taskmanager_host,
            "rest.address": c.host, "rest.port": str(c.rest_port), "rest.bind-address": c.bind_host,
            "taskmanager.numberOfTaskSlots": str(c.slots),
            "jobmanager.memory.process.size": c.jobmanager_memory,
            "taskmanager.memory.process.size": c.taskmanager_memory,
            "parallelism.default": "1",
            "python.executable": c.interpreter, "python.client.executable": c.interpreter,
            "execution.checkpointing.dir": (self.home / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.home / "savepoints").as_uri(),
            # pemja (thread mode) loads a native library once per JVM: from the cluster's
            # classpath (lib/), not from each job's classloader, or the second job fails
            "classloader.parent-first-patterns.additional": "pemja.",
            # loaded as a plugin from FLINK_PLUGINS_DIR (the wheel's plugins/metrics-prometheus)
            **prometheus_settings(c.metrics_port),
        }
        for s in c.settings:
            key, _, value = s.partition("=")
            settings[key.strip()] = value.strip()
        return settings

    def write_conf(self) -> Path:
        """``conf/config.yaml`` (flat keys, values as JSON strings: valid YAML) + log4j files."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        lines = ["# written by `streamtrain flink` ([flink_cluster]); edits are overwritten"]
        lines += [f"{k}: {json.dumps(v)}" for k, v in self.flink_settings().items()]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        for src in (flink_home() / "conf").glob("log4j*.properties"):
            (self.conf_dir / src.name).write_text(src.read_text())
        self.write_lib()
        return self.conf_dir / "config.yaml"

    def write_lib(self) -> None:
        """``lib/``: the distribution's jars plus ``opt/flink-python`` (Flink's advice for a
        PyFlink session cluster: Python operators of several jobs share one pemja), links."""
        lib = self.home / "lib"
        lib.mkdir(parents=True, exist_ok=True)
        wanted = {p.name: p for p in (flink_home() / "lib").glob("*.jar")}
        wanted.update({p.name: p for p in (flink_home() / "opt").glob("flink-python-*.jar")})
        for old in lib.glob("*.jar"):
            if old.name not in wanted or old.resolve() != wanted[old.name].resolve():
                old.unlink()
        for name, src in wanted.items():
            if not (lib / name).exists():
                try:
                    (lib / name).symlink_to(src)
                except FileExistsError:  # another process of this cluster made it meanwhile
                    pass

    def env(self) -> dict[str, str]:
        """The scripts' environment: this conf, these logs, the jobs' Python first on PATH
        (thread mode embeds the interpreter found there)."""
        env = dict(os.environ)
        bin_dir = str(Path(self.config.interpreter).parent)
        env.update(FLINK_HOME=str(flink_home()), FLINK_CONF_DIR=str(self.conf_dir),
                   FLINK_LOG_DIR=str(self.log_dir), FLINK_PID_DIR=str(self.home),
                   FLINK_LIB_DIR=str(self.home / "lib"),
                   FLINK_PLUGINS_DIR=str(flink_home() / "plugins"),  # metrics reporters
                   PYFLINK_CLIENT_EXECUTABLE=self.config.interpreter,
                   PATH=bin_dir + os.pathsep + env.get("PATH", ""))
        return env

    # --- processes ---------------------------------------------------------------------------
    def pid_file(self, role: str) -> Path:
        """``<dir>/<role>.pid``: the role's pids, one a line (several TaskManagers)."""
        return self.home / f"{role}.pid"

    def pids(self, role: str) -> list[int]:
        """The role's running JVMs, in the order they were started (pids of the pid file
        whose command line is still a Flink one)."""
        try:
            listed = [int(line) for line in self.pid_file(role).read_text().split()]
        except (FileNotFoundError, ValueError):
            return []
        return [pid for pid in listed if _flink_process(pid)]

    def pid(self, role: str) -> int | None:
        """The role's (first) JVM, if it runs."""
        pids = self.pids(role)
        return pids[0] if pids else None

    def command(self, role: str) -> list[str]:
        return ["bash", str(flink_home() / "bin" / ROLES[role]), "start-foreground"]

    def spawn(self, role: str) -> int:
        """Start the role in the background (its own session, output in log/<role>.out, or
        log/taskmanager-<i>.out for the i-th running TaskManager, i >= 1); its pid joins the
        running ones in the pid file."""
        self.write_conf()
        running = self.pids(role)
        out_name = f"{role}-{len(running)}.out" if running else f"{role}.out"
        with open(self.log_dir / out_name, "ab") as out:
            proc = subprocess.Popen(self.command(role), env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        # start-foreground execs the JVM: same pid
        self.pid_file(role).write_text("".join(f"{p}\n" for p in (*running, proc.pid)))
        return proc.pid

    def start(self) -> dict[str, Any]:
        """Start what is not running, wait for the REST API and for ``taskmanagers``
        registered TaskManagers (newly registered ones for those this call started: the
        JobManager may still list a dead one)."""
        if self.pid("jobmanager") is None:
            jm = self.spawn("jobmanager")
            self.wait(lambda: self.rest("/overview") is not None, "the REST API", "jobmanager", [jm])
        n = self.config.taskmanagers
        missing = max(n - len(self.pids("taskmanager")), 0)
        before = self.taskmanager_ids() if missing else set()
        started = [self.spawn("taskmanager") for _ in range(missing)]

        def registered() -> bool:
            ids = self.taskmanager_ids()
            return len(ids - before) >= missing and len(ids) >= n
        self.wait(registered, "a registered TaskManager" if n == 1 else f"{n} registered TaskManagers",
                  "taskmanager", started)
        return self.status()

    def taskmanager_ids(self) -> set[str]:
        return {tm["id"] for tm in (self.rest("/taskmanagers") or {}).get("taskmanagers", [])}

    def wait(self, cond, what: str, role: str, pids: list[int] | None = None) -> None:
        """Until ``cond()``; fails when one of ``pids`` (default: the role's) exits first."""
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            if cond():
                return
            dead = [p for p in pids if not _flink_process(p)] if pids else \
                ([] if self.pid(role) is not None else [None])
            if dead:
                raise FlinkClusterError(f"the {role} exited before {what}; see "
                                        f"{self.log_dir}/{role}*.out and {self.log_dir}/*.log")
            time.sleep(0.5)
        raise FlinkClusterError(f"no {what} after {self.config.start_timeout_s:.0f}s; "
                                f"see {self.log_dir}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the TaskManagers (all at once) then the JobManager (SIGKILL after
        ``timeout_s``)."""
        stopped = False
        for role in ("taskmanager", "jobmanager"):
            pids = self.pids(role)
            if pids:
                stopped = True
                _terminate_all(pids, timeout_s)
            self.pid_file(role).unlink(missing_ok=True)
        return stopped

    # --- REST and CLI ------------------------------------------------------------------------
    def rest(self, path: str, timeout_s: float = 2.0) -> Any:
        """GET a REST resource; None when the API does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.config.address}{path}", timeout=timeout_s) as r:
                return json.load(r)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def status(self) -> dict[str, Any]:
        overview = self.rest("/overview") or {}
        return {"rest": f"http://{self.config.address}", "dir": str(self.home),
                "jobmanager_pid": self.pid("jobmanager"), "taskmanager_pid": self.pid("taskmanager"),
                "taskmanager_pids": self.pids("taskmanager"),
                "taskmanagers": overview.get("taskmanagers", 0),
                "slots_total": overview.get("slots-total", 0),
                "slots_available": overview.get("slots-available", 0), "jobs": self.jobs()}

    def jobs(self) -> list[dict[str, str]]:
        listed = (self.rest("/jobs/overview") or {}).get("jobs", [])
        return [{"name": j["name"], "id": j["jid"], "state": j["state"]} for j in listed]

    def job_id(self, name_or_id: str) -> str:
        name = JOBS[name_or_id][1] if name_or_id in JOBS else name_or_id
        found = [j["id"] for j in self.jobs() if name in (j["name"], j["id"]) and j["state"] in LIVE]
        if len(found) != 1:
            raise FlinkClusterError(f"{len(found)} live jobs named {name!r} at {self.config.address} "
                                    f"(need exactly one); jobs: {self.jobs()}")
        return found[0]

    def flink(self, *args: str, timeout_s: float = 300.0) -> str:
        """Run the bundled ``flink`` CLI against this cluster; its output (raises on failure)."""
        self.write_conf()  # the client's conf (rest.address/port, python), also on a submitting host
        cmd = ["bash", str(flink_home() / "bin" / "flink"), *args]
        res = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout_s)
        if res.returncode != 0:
            raise FlinkClusterError(f"`flink {args[0]}` failed (rc={res.returncode}):\n"
                                    f"{res.stdout[-4000:]}{res.stderr[-4000:]}")
        return res.stdout + res.stderr

    def stop_job(self, name_or_id: str, savepoint_dir: str | None) -> str:
        """Stop a job with a savepoint (``flink stop --savepointPath``); the savepoint's path."""
        jid = self.job_id(name_or_id)
        target = Path(savepoint_dir).resolve().as_uri() if savepoint_dir else \
            (self.home / "savepoints").as_uri()
        out = self.flink("stop", "-m", self.config.address, "--savepointPath", target, jid)
        m = re.search(r"Savepoint completed\. Path: (\S+)", out)
        if m is None:
            raise FlinkClusterError(f"no savepoint path in the output of `flink stop`:\n{out[-2000:]}")
        return m.group(1)

    def submit(self, job: str, job_args: list[str], savepoint: str | None = None) -> str:
        """``flink run -d -py`` the job; its Flink job id."""
        spec = importlib.util.find_spec(JOBS[job][0])
        assert spec is not None and spec.origin is not None, JOBS[job][0]
        jars = sorted((JARS_DIR / "flink").glob("flink-sql-connector-kafka-*.jar"))
        if not jars:
            raise FlinkClusterError(f"no flink-sql-connector-kafka jar in {JARS_DIR / 'flink'}: "
                                    "run `streamtrain jars`")
        args = ["run", "-m", self.config.address, "-d", "-py", spec.origin,
                "-pyexec", self.config.interpreter, "-pyclientexec", self.config.interpreter,
                "-j", str(jars[-1])]
        if savepoint:
            args += ["-s", savepoint]
        out = self.flink(*args, "--", "--no-jar", *job_args)
        m = re.search(r"JobID ([0-9a-f]{32})", out)
        if m is None:
            raise FlinkClusterError(f"no job id in the output of `flink run`:\n{out[-3000:]}")
        return m.group(1)


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _flink_process(pid: int) -> bool:
    """Whether ``pid`` runs (not a zombie) and is still a Flink process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # empty while the launcher execs the JVM; another program once the pid is reused
    return _running(pid) and (not cmdline or b"flink" in cmdline)


def _terminate_all(pids: list[int], timeout_s: float) -> None:
    """SIGTERM every pid, wait for all of them (``timeout_s`` in all), SIGKILL the rest."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:  # reap it if it is our child (a zombie otherwise keeps /proc/<pid>)
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    left.remove(pid)
                    continue
            except ChildProcessError:
                pass
            if not _running(pid):
                left.remove(pid)
        if left:
            time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- command line ----------------------------------------------------------------------------
def _cluster(args: argparse.Namespace) -> FlinkCluster:
    return FlinkCluster(flags.load(args, FlinkClusterConfig, "flink_cluster"))


def main(argv: list[str]) -> int:
    """``streamtrain flink start|stop|status|jobmanager|taskmanager|jobs|stop-job``."""
    p = flags.parser("flink", "a Flink session cluster from PyFlink's bundled distribution")
    p.add_argument("action", choices=["start", "stop", "status", "jobmanager", "taskmanager",
                                      "jobs", "stop-job"])
    p.add_argument("job", nargs="?", help="stop-job: features | join | passthrough | a job id")
    p.add_argument("--savepoint-dir", default=None,
                   help="stop-job: where the savepoint goes (default <dir>/savepoints)")
    args = p.parse_args(argv)
    cluster = _cluster(args)
    try:
        if args.action == "start":
            status = cluster.start()
            print(f"flink running: {status['rest']} (taskmanagers={status['taskmanagers']} "
                  f"slots={status['slots_total']}; files in {status['dir']})")
        elif args.action == "stop":
            print("flink stopped" if cluster.stop() else "flink was not running")
        elif args.action == "status":
            status = cluster.status()
            print(json.dumps(status, indent=2))
            return 0 if status["taskmanagers"] else 1  # up: the REST API lists a TaskManager
        elif args.action in ROLES:  # foreground: a container's main process
            cluster.write_conf()
            os.execvpe("bash", cluster.command(args.action), cluster.env())
        elif args.action == "jobs":
            for job in cluster.jobs():
                print(f"{job['id']}  {job['state']:<12} {job['name']}")
        else:
            if not args.job:
                p.error("stop-job needs a job: features | join | passthrough | a job id")
            print(cluster.stop_job(args.job, args.savepoint_dir))
    except FlinkClusterError as exc:
        print(f"streamtrain flink {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def submit_main(argv: list[str]) -> int:
    """``streamtrain submit features|join|passthrough [--savepoint PATH] [job flags]``."""
    p = flags.parser("submit", "submit a streamtrain job to the Flink cluster with `flink run -py`")
    p.add_argument("job", choices=sorted(JOBS))
    p.add_argument("--savepoint", default=None, help="resume from this savepoint (flink run -s)")
    p.add_argument("--skip-running", action="store_true",
                   help="do nothing when the job already runs there (a submitter that restarts)")
    args, rest = p.parse_known_args(argv)  # the rest goes to the job (e.g. --restore latest)
    cluster = _cluster(args)
    job_args = (["--config", args.config] if args.config else []) + \
        [a for s in args.overrides for a in ("--set", s)] + rest
    try:
        live = [j for j in cluster.jobs() if j["name"] == JOBS[args.job][1] and j["state"] in LIVE]
        if args.skip_running and live:
            print(f"{JOBS[args.job][1]} already running: job id {live[0]['id']}")
            return 0
        jid = cluster.submit(args.job, job_args, args.savepoint)
    except FlinkClusterError as exc:
        print(f"streamtrain submit {args.job}: {exc}", file=sys.stderr)
        return 1
    print(f"{JOBS[args.job][1]} submitted: job id {jid} ({cluster.config.address})")
    return 0
