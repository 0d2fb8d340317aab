"""docker-compose.yml's wiring, checked without a Docker engine (the real run is `make
test-compose`, scripts/test_compose.py): one image for every service, each command a real
subcommand whose --set keys and STREAMTRAIN_* variables name real settings, every service
restarts and runs under an init, state in named volumes, the submitter submits both jobs,
and the host-network file puts every service and build on the host's network."""

import dataclasses
import importlib
import re

import pytest
import yaml

from streamtrain.cli import SUBCOMMANDS
from streamtrain.config import ENV_PREFIX, SECTIONS
from streamtrain.paths import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
HOSTNET = yaml.safe_load((REPO_ROOT / "docker-compose.hostnet.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = REPO_ROOT / "infra" / "docker" / "Dockerfile"


def _fields(section: str) -> set[str]:
    module, _, name = SECTIONS[section].rpartition(".")
    return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}


def _streamtrain_calls(svc: dict) -> list[list[str]]:
    """The streamtrain invocations of a service: its command (entrypoint streamtrain) or the
    `streamtrain ...` calls inside a `bash -c` script."""
    cmd = svc.get("command", [])
    if svc.get("entrypoint") == ["bash", "-c"]:
        script = " ".join(cmd)
        return [part.split() for part in re.findall(r"streamtrain ([^&|;>]+)", script)]
    return [cmd]


def test_compose_has_every_component():
    assert {"kafka", "topics", "jobmanager", "taskmanager", "job-submitter", "generator",
            "trainer", "serving"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_service_uses_the_one_image_restarts_and_runs_under_init(name):
    svc = SERVICES[name]
    assert svc["image"] == "streamtrain:local"
    assert (REPO_ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]) == DOCKERFILE
    assert "BASE_IMAGE" in svc["build"]["args"]
    assert svc["init"] is True
    assert svc["restart"] in ("on-failure", "unless-stopped", "always")
    for dep in svc.get("depends_on", {}):
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"
    for vol in svc.get("volumes", []):
        assert vol.split(":")[0] in COMPOSE["volumes"], vol


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_commands_are_real_subcommands_and_settings(name):
    svc = SERVICES[name]
    calls = _streamtrain_calls(svc)
    assert calls, name
    for call in calls:
        assert call[0] in SUBCOMMANDS, call
        for i, arg in enumerate(call):
            if arg == "--set":
                section, field = call[i + 1].split("=")[0].split(".")
                assert field in _fields(section), call[i + 1]
    for f in (COMPOSE, HOSTNET):
        for var in f["services"].get(name, {}).get("environment", {}) or {}:
            if var.startswith(ENV_PREFIX):
                section, _, field = var.removeprefix(ENV_PREFIX).partition("__")
                assert section.lower() in SECTIONS and field.lower() in _fields(section.lower()), var


def test_compose_submitter_waits_for_the_cluster_and_submits_both_jobs():
    sub = SERVICES["job-submitter"]
    assert sub["depends_on"]["jobmanager"]["condition"] == "service_healthy"
    jobs = [c[1] for c in _streamtrain_calls(sub) if c[0] == "submit"]
    assert jobs == ["features", "join"]
    assert "healthcheck" in SERVICES["jobmanager"]
    assert SERVICES["serving"]["depends_on"]["trainer"]["condition"] == "service_healthy"


def test_compose_hostnet_puts_every_service_and_build_on_the_host_network():
    assert set(HOSTNET["services"]) == set(SERVICES)
    for name, svc in HOSTNET["services"].items():
        assert svc["network_mode"] == "host", name
        assert svc["build"]["network"] == "host", name


def test_dockerfile_takes_a_base_image_and_dockerignore_keeps_envs_out():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and "FROM ${BASE_IMAGE}" in text
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".streamtrain"} <= set(ignored)
