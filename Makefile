# Two commands for a new user (see README):  make demo   |   make test
# Both create a local virtualenv (.venv) from requirements*.txt on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-all test-multidevice install install-test clean study-reduced

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

# The main job: the embedded default experiment, end to end, on the CPU (no downloads).
demo: $(VENV)/.runtime
	$(PY) -m experiments.train $(DEMO_ARGS)

# Fast suite (what CI runs): everything not marked `slow`, including one end-to-end smoke test.
test: $(VENV)/.test
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Everything, including slow end-to-end and benchmark-sized tests.
test-all: $(VENV)/.test
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# The reduced NGRPO replication study (≤ 30 min on 2 cores), checked against its committed results.
study-reduced: $(VENV)/.runtime
	$(PY) -m experiments.study --study=experiments/studies/ngrpo_replication.py:reduced \
	  --workdir=runs/replication_reduced --compare_to=docs/replication/reduced
