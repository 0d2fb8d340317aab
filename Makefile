# The two commands of the README:  `make demo`  and  `make test`.
# Both install what they need on a fresh machine: a virtualenv with the Python packages
# (pyproject.toml) and the JVM jars (infra/pom.xml, through Maven).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean test-compose flink-test

setup: $(VENV)/.installed infra/jars/.fetched

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

infra/jars/.fetched: infra/pom.xml $(VENV)/.installed
	mvn -q -B -f infra/pom.xml package
	$(PY) -c "from streaming.jvm_ops import ops_jar; ops_jar()"  # jvm/flink-ops (javac; rebuilt on change)
	touch $@

demo: setup
	$(VENV)/bin/streamtrain demo

# lint + import order, types, then the suite (doctests of the library included)
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/streamtrain bench $(BENCH)

clean:
	-$(VENV)/bin/streamtrain kafka stop
	rm -rf .streamtrain infra/jars infra/target

# docker-compose.yml proven by a real run (host networking; scripts/test_compose.py says
# how): a Docker daemon started if none runs, a local base image, build, up, checks, down -v
test-compose: setup
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null \
	  && (docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null) \
	  || (apt-get update -q && apt-get install -y -q docker.io docker-compose debootstrap)
	$(PY) scripts/test_compose.py

# the jobs on a real Flink session cluster (savepoint resubmit, TaskManager loss)
flink-test: setup
	$(PY) -m pytest tests/infra/test_flink_cluster.py $(PYTEST_ARGS)
