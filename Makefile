# The two commands of the README:  `make demo`  and  `make test`.
# Both install what they need on a fresh machine: a virtualenv with the Python packages
# (pyproject.toml) and the JVM jars (infra/pom.xml, through Maven).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed infra/jars/.fetched

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

infra/jars/.fetched: infra/pom.xml
	mvn -q -B -f infra/pom.xml package
	touch $@

demo: setup
	$(VENV)/bin/streamtrain demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/streamtrain bench $(BENCH)

clean:
	-$(VENV)/bin/streamtrain kafka stop
	rm -rf .streamtrain infra/jars infra/target
