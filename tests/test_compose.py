"""docker-compose.yml cannot run on the CI machine (no Docker engine), so its wiring is
checked here: every service builds from a Dockerfile that exists or names an image, every
dependency names a service, every streamtrain command is a real subcommand whose --set
keys and STREAMTRAIN_* variables name real settings."""

import dataclasses
import importlib
import re

import pytest
import yaml

from streamtrain.cli import SUBCOMMANDS
from streamtrain.config import ENV_PREFIX
from streamtrain.paths import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# config sections -> their dataclasses
SECTIONS = {
    "kafka": ("streamtrain.kafka_io", "KafkaConfig"),
    "topics": ("streamtrain.kafka_io", "TopicsConfig"),
    "generator": ("traffic.generator", "GeneratorConfig"),
    "flink": ("streaming.flink_env", "FlinkConfig"),
    "serve": ("sync.config", "ReplicaConfig"),
    "sync": ("sync.config", "PublisherConfig"),
}


def _fields(section: str) -> set[str]:
    module, name = SECTIONS[section]
    return {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}


def test_compose_has_every_component():
    assert {"kafka", "jobmanager", "taskmanager", "job-submitter", "generator", "trainer",
            "serving"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_service_builds_from_existing_dockerfile_or_image(name):
    svc = SERVICES[name]
    assert "image" in svc or "build" in svc
    if "build" in svc:
        assert (REPO_ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    for dep in svc.get("depends_on", {}):
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items()
                                        if "app.Dockerfile" in str(s.get("build", ""))))
def test_compose_app_commands_are_real_subcommands_and_settings(name):
    svc = SERVICES[name]
    cmd = svc["command"]
    assert cmd[0] in SUBCOMMANDS
    for i, arg in enumerate(cmd):
        if arg == "--set":
            section, field = cmd[i + 1].split("=")[0].split(".")
            assert field in _fields(section), cmd[i + 1]
    for var in svc.get("environment", {}):
        m = re.fullmatch(rf"{ENV_PREFIX}([A-Z]+)__([A-Z_]+)", var)
        assert m and m.group(2).lower() in _fields(m.group(1).lower()), var


def test_compose_job_submitter_script_and_job_files_exist():
    script = REPO_ROOT / SERVICES["job-submitter"]["command"][1]
    assert script.is_file()
    for job in re.findall(r"PY=(\S+\.py)", script.read_text()):
        assert (REPO_ROOT / job).is_file(), job
