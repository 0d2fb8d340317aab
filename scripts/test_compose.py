"""`make test-compose`: the whole system from docker-compose.yml, proven by a real run.

On these machines (no bridge network may be made, no registry is reachable, every address
127.0.0.1) it runs with docker-compose.hostnet.yml. In order:

1. a Docker daemon: the running one, else one started here with exactly
   ``dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false
   --ip-masq=false --storage-driver=overlay2`` (stopped again at the end);
2. the base image: BASE_IMAGE if the daemon has it, else a local one made with
   ``debootstrap --variant=minbase bookworm`` + ``docker import`` (this host's extra CAs and
   pip config go in, for a proxy that re-signs TLS);
3. ``docker build --network host`` of infra/docker/Dockerfile, then ``compose up -d`` (v2
   when there, else v1) on free ports;
4. from outside the containers: the submitter put both jobs on the cluster; samples flow;
   the trainer publishes deltas; the replica answers /predict with advancing versions; dead
   letters carry reasons; ``compose stop trainer`` + ``start trainer``: the version goes on
   from where it was (no reset);
5. ``compose down -v``: no container of the project is left.

Prints one line per check and a closing ``N passed, N failed``; exit code 1 on a failure.
    .venv/bin/python scripts/test_compose.py [--keep]   (--keep: leave it running to look at)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from schemas import DeadLetter, codec_for  # noqa: E402
from streamtrain.kafka_io import KafkaConfig  # noqa: E402
from streamtrain.local_kafka import free_port  # noqa: E402

DOCKERD = ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
           "--ip-masq=false", "--storage-driver=overlay2"]
BASE = os.environ.get("BASE_IMAGE", "streamtrain-base:bookworm")
IMAGE = "streamtrain:local"
PROJECT = "streamtrain-test"
FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.hostnet.yml"]
T0 = time.monotonic()
results: list[tuple[str, bool, str]] = []


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f}s] {msg}", flush=True)


def sh(*cmd: str, check: bool = True, capture: bool = True, timeout: float = 1800,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=REPO, capture_output=capture, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if check and res.returncode != 0:
        out = (res.stdout or "")[-3000:] + (res.stderr or "")[-3000:] if capture else ""
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (rc={res.returncode}): {out}")
    return res


def record(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, ok, detail))
    log(f"{'PASS' if ok else 'FAIL'} {name} {detail}")
    return ok


def wait_for(what: str, cond, timeout_s: float, every_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as exc:  # a service not up yet: keep polling until the deadline
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    raise TimeoutError(f"no {what} after {timeout_s:.0f}s (last: {last!r})")


# --- the daemon and the images ---------------------------------------------------------------
def daemon_up() -> bool:
    return sh("docker", "info", check=False).returncode == 0


def start_daemon(work: Path) -> subprocess.Popen | None:
    if daemon_up():
        log("using the running Docker daemon")
        return None
    log("starting dockerd: " + " ".join(DOCKERD))
    out = open(work / "dockerd.log", "wb")
    proc = subprocess.Popen(DOCKERD, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for("Docker daemon", lambda: proc.poll() is None and daemon_up(), 60, 0.5)
    return proc


def stop_daemon(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log("dockerd stopped")


def ensure_base_image(work: Path) -> None:
    if sh("docker", "image", "inspect", BASE, check=False).returncode == 0:
        log(f"base image {BASE} present")
        return
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    root = work / "rootfs"
    log(f"making base image {BASE}: debootstrap bookworm from {mirror}")
    sh("debootstrap", "--variant=minbase", "bookworm", str(root), mirror, timeout=900)
    cas = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    (root / "usr/local/share/ca-certificates").mkdir(parents=True, exist_ok=True)
    for ca in cas:  # a TLS-intercepting proxy's CA: the image's apt/pip must trust it too
        shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
    if Path("/etc/pip.conf").is_file():
        shutil.copy("/etc/pip.conf", root / "etc/pip.conf")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", BASE], stdin=tar.stdout, check=True,
                   capture_output=True)
    tar.wait()
    shutil.rmtree(root, ignore_errors=True)


def compose_cmd() -> list[str]:
    if sh("docker", "compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` (v2) nor `docker-compose` (v1) is installed")


# --- checks from outside -----------------------------------------------------------------------
def topic_records(kafka: KafkaConfig, topic: str, limit: int = 5000) -> list:
    from kafka import TopicPartition

    from streamtrain.kafka_io import make_consumer

    consumer = make_consumer(kafka, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(out) < limit and \
                any(consumer.position(tp) < end[tp] for tp in tps):
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


def model_layout() -> tuple[list[int], int]:
    """The model's slots and dense width as docker-compose.yml sets them for the trainer."""
    import yaml

    env = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["trainer"]["environment"]
    return [int(s) for s in env["STREAMTRAIN_MODEL__SLOTS"].split(",")], int(env["STREAMTRAIN_MODEL__DENSE_DIM"])


def predict(port: int) -> dict:
    slots, dense_dim = model_layout()
    inst = {"slots": slots, "ids": list(range(1, len(slots) + 1)), "dense": [0.0] * dense_dim}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST",
                                 data=json.dumps({"instances": [inst]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def run_checks(compose: list[str], env: dict[str, str], ports: dict[str, int]) -> None:
    kafka = KafkaConfig(bootstrap=f"127.0.0.1:{ports['ST_KAFKA_PORT']}")
    serve = ports["ST_SERVE_PORT"]

    def submitter_done():
        cid = sh(*compose, "ps", "-q", "job-submitter", env=env).stdout.strip()
        state = json.loads(sh("docker", "inspect", cid).stdout)[0]["State"] if cid else {}
        return state.get("Status") == "exited" and state.get("ExitCode") == 0
    wait_for("job submitter exiting 0", submitter_done, 420, 3)
    rest = f"http://127.0.0.1:{ports['ST_FLINK_PORT']}/jobs/overview"
    jobs = {"streamtrain-features", "streamtrain-joiner"}

    def running() -> set[str]:
        with urllib.request.urlopen(rest, timeout=5) as r:
            return {j["name"] for j in json.load(r)["jobs"] if j["state"] == "RUNNING"} & jobs
    got = wait_for("both jobs RUNNING", lambda: running() == jobs and jobs, 120)
    record("both jobs run on the cluster", got == jobs, str(sorted(got)))
    n = len(wait_for("samples", lambda: topic_records(kafka, "samples", 50), 300, 5))
    record("samples flow", n > 0, f"{n}+ samples")
    n = len(wait_for("model deltas", lambda: topic_records(kafka, "model-deltas", 5), 240, 5))
    record("the trainer publishes", n > 0, f"{n}+ records on model-deltas")
    first = wait_for("a /predict answer", lambda: predict(serve), 300, 3)
    log(f"/predict -> {json.dumps(first)[:300]}")
    later = wait_for("a newer version", lambda: (lambda a: a if a["version"] > first["version"] else None)(
        predict(serve)), 180, 3)
    record("the replica answers /predict with advancing versions",
           later["version"] > first["version"], f"{first['version']} -> {later['version']}")
    dead = [codec_for(DeadLetter).decode(r.value) for r in topic_records(kafka, "dead-letter", 500)]
    reasons = sorted({d.reason for d in dead})
    record("dead letters carry reasons", bool(dead) and all(d.reason for d in dead),
           f"{len(dead)} dead letters, reasons {reasons[:3]}")
    rejected = [d.reason for d in dead if d.reason.startswith("invalid sample")]
    record("the trainer takes the joiner's samples (none dead-lettered as invalid)", not rejected,
           f"{len(rejected)} rejected, e.g. {rejected[:1]}")
    before = predict(serve)["version"]
    sh(*compose, "stop", "trainer", env=env, timeout=180)
    stopped = predict(serve)["version"]
    sh(*compose, "start", "trainer", env=env, timeout=180)
    after = wait_for("a version after the restart", lambda: (
        lambda a: a if a["version"] > stopped else None)(predict(serve)), 300, 3)
    record("the trainer restarts and the version goes on", after["version"] > stopped >= before,
           f"{before} -> stopped at {stopped} -> {after['version']}")
    ps = sh(*compose, "ps", env=env).stdout
    print(ps, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="leave the services and the daemon running")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="st-compose-"))
    daemon = start_daemon(work)
    compose: list[str] = []
    env: dict[str, str] = {}
    try:
        ensure_base_image(work)
        log(f"building {IMAGE} from {BASE}")
        sh("docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}",
           "-f", "infra/docker/Dockerfile", "-t", IMAGE, ".", env={"DOCKER_BUILDKIT": "0"},
           timeout=2400)
        compose = compose_cmd() + ["-p", PROJECT, *FILES]
        ports = {k: free_port() for k in ("ST_KAFKA_PORT", "ST_KAFKA_CONTROLLER_PORT", "ST_FLINK_PORT",
                                          "ST_FLINK_RPC_PORT", "ST_SERVE_PORT")}
        env = {**{k: str(v) for k, v in ports.items()}, "ST_JOIN_WINDOW_MS": "15000",
               "ST_SYNC_INTERVAL_S": "5", "BASE_IMAGE": BASE}
        log(f"compose up ({' '.join(compose[:1])}) on ports {ports}")
        try:
            sh(*compose, "up", "-d", "--no-build", env=env, timeout=900)
            run_checks(compose, env, ports)
        except Exception as exc:
            record("the run", False, repr(exc)[:2000])
            print(sh(*compose, "ps", env=env, check=False).stdout, flush=True)
            print(sh(*compose, "logs", "--tail=40", env=env, check=False).stdout[-12000:], flush=True)
    finally:
        if compose and not args.keep:
            sh(*compose, "down", "-v", "--remove-orphans", env=env, check=False, timeout=300)
            left = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                      check=False).stdout.split()
            record("compose down -v leaves no container", not left, f"{len(left)} left")
        if not args.keep:
            stop_daemon(daemon)
        shutil.rmtree(work, ignore_errors=True)
    failed = sum(1 for _, ok, _ in results if not ok)
    log(f"wall time {time.monotonic() - T0:.0f}s")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
